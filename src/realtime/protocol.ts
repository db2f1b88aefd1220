/**
 * The AWS AppSync real-time WebSocket protocol (subprotocol `graphql-ws`, the legacy Apollo name),
 * as the gateway speaks it. Message-type constants, the message union, one `validateMessage` used
 * at the edge for everything that comes in, and serialisers for everything that goes out.
 * `PROTOCOL.md` beside this file says in prose what the gateway promises on the wire.
 */

/** The WebSocket subprotocol AppSync real-time clients ask for. */
export const APPSYNC_SUBPROTOCOL = 'graphql-ws';
/** Prefix of the subprotocol that carries the auth header, base64url-encoded: `header-<base64url JSON>`. */
export const HEADER_SUBPROTOCOL_PREFIX = 'header-';

/** AppSync's limits, applied by the gateway as AppSync applies them. */
export const LIMITS = {
  /** Subscriptions on one connection. */
  maxSubscriptionsPerConnection: 100,
  /** Bytes in one message, either way. */
  maxMessageBytes: 240 * 1024,
} as const;

export const MessageType = {
  ConnectionInit: 'connection_init',
  ConnectionAck: 'connection_ack',
  ConnectionError: 'connection_error',
  KeepAlive: 'ka',
  Start: 'start',
  StartAck: 'start_ack',
  Data: 'data',
  Stop: 'stop',
  Complete: 'complete',
  Error: 'error',
} as const;

/** Error types the gateway sends, AppSync's own names where AppSync has one. */
export const ErrorType = {
  Unauthorized: 'UnauthorizedException',
  UnsupportedOperation: 'UnsupportedOperation',
  DuplicatedOperation: 'DuplicatedOperationError',
  MaxSubscriptionsReached: 'MaxSubscriptionsReachedError',
  MessageTooLarge: 'MessageTooLargeError',
  MalformedMessage: 'MalformedMessageError',
  Validation: 'ValidationError',
  Internal: 'InternalFailure',
} as const;

/** The `authorization` object of AppSync: API key and host, or SigV4 headers, or a bearer token. */
export type AuthorizationHeaders = Record<string, string>;

export interface ConnectionInitMessage {
  type: typeof MessageType.ConnectionInit;
  payload?: Record<string, unknown>;
}

export interface StartMessage {
  type: typeof MessageType.Start;
  id: string;
  payload: {
    /** A JSON string: `{ "query": ..., "variables": ..., "operationName": ... }`. */
    data: string;
    extensions?: { authorization?: AuthorizationHeaders };
  };
}

export interface StopMessage {
  type: typeof MessageType.Stop;
  id: string;
}

/** A message a client may send. */
export type ClientMessage = ConnectionInitMessage | StartMessage | StopMessage;

/** The GraphQL request inside a `start` message's `payload.data`. */
export interface SubscriptionRequest {
  query: string;
  variables: Record<string, unknown>;
  operationName: string | undefined;
}

/** One error in an `error` or `connection_error` payload. */
export interface ProtocolError {
  errorType: string;
  message: string;
  errorCode?: number;
}

/** Why an incoming message was refused; `id` is set when the message had a usable one. */
export class ProtocolViolation extends Error {
  constructor(
    readonly errorType: string,
    message: string,
    readonly id?: string,
  ) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Validates a raw incoming frame and returns the message. Throws `ProtocolViolation` naming what
 * was wrong and what is accepted: a frame over `maxBytes` (AppSync's 240 KB by default), not JSON, not an object, an unknown `type`,
 * a `start` or `stop` without a string `id`, a `start` without `payload.data`.
 */
export function validateMessage(raw: string | Buffer, isBinary = false, maxBytes: number = LIMITS.maxMessageBytes): ClientMessage {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw, 'utf8') : raw.length;
  if (size > maxBytes) {
    throw new ProtocolViolation(
      ErrorType.MessageTooLarge,
      `Message is ${size} bytes; the limit is ${maxBytes} bytes${maxBytes === LIMITS.maxMessageBytes ? ' (240 KB, as AppSync)' : ' (LONGRUN_MAX_MESSAGE_BYTES)'}.`,
    );
  }
  if (isBinary) {
    throw new ProtocolViolation(ErrorType.MalformedMessage, 'Binary frames are not accepted; send JSON text frames.');
  }
  let message: unknown;
  try {
    message = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch {
    throw new ProtocolViolation(
      ErrorType.MalformedMessage,
      'Message is not valid JSON; send a JSON object such as {"type":"connection_init"}.',
    );
  }
  if (!isRecord(message)) {
    throw new ProtocolViolation(ErrorType.MalformedMessage, 'Message must be a JSON object with a "type".');
  }
  const id = typeof message.id === 'string' && message.id.length > 0 ? message.id : undefined;
  switch (message.type) {
    case MessageType.ConnectionInit:
      return { type: MessageType.ConnectionInit, ...(isRecord(message.payload) ? { payload: message.payload } : {}) };
    case MessageType.Start: {
      if (id === undefined) {
        throw new ProtocolViolation(ErrorType.MalformedMessage, 'A "start" message needs a non-empty string "id".');
      }
      const payload = message.payload;
      if (!isRecord(payload) || typeof payload.data !== 'string') {
        throw new ProtocolViolation(
          ErrorType.MalformedMessage,
          'A "start" message needs "payload.data", a JSON string holding {"query", "variables"}.',
          id,
        );
      }
      const extensions = isRecord(payload.extensions) ? payload.extensions : undefined;
      const authorization = isRecord(extensions?.authorization) ? stringRecord(extensions.authorization) : undefined;
      return {
        type: MessageType.Start,
        id,
        payload: { data: payload.data, ...(authorization ? { extensions: { authorization } } : {}) },
      };
    }
    case MessageType.Stop:
      if (id === undefined) {
        throw new ProtocolViolation(ErrorType.MalformedMessage, 'A "stop" message needs the "id" of a started subscription.');
      }
      return { type: MessageType.Stop, id };
    default:
      throw new ProtocolViolation(
        ErrorType.UnsupportedOperation,
        `Unknown message type ${JSON.stringify(message.type ?? null)}; accepted: connection_init, start, stop.`,
        id,
      );
  }
}

/** Parses `payload.data` of a `start` message. Throws `ProtocolViolation` when it is not a GraphQL request. */
export function parseSubscriptionRequest(data: string, id: string): SubscriptionRequest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new ProtocolViolation(ErrorType.MalformedMessage, '"payload.data" is not valid JSON; it must be a JSON string of {"query", "variables"}.', id);
  }
  if (!isRecord(parsed) || typeof parsed.query !== 'string') {
    throw new ProtocolViolation(ErrorType.MalformedMessage, '"payload.data" must hold a "query" string.', id);
  }
  if (parsed.variables !== undefined && parsed.variables !== null && !isRecord(parsed.variables)) {
    throw new ProtocolViolation(ErrorType.MalformedMessage, '"variables" must be a JSON object.', id);
  }
  return {
    query: parsed.query,
    variables: isRecord(parsed.variables) ? parsed.variables : {},
    operationName: typeof parsed.operationName === 'string' ? parsed.operationName : undefined,
  };
}

/**
 * Reads the auth header a client passes when it connects: the `header` query parameter (base64
 * JSON, as Amplify sends it) or a `header-<base64url>` subprotocol. Returns undefined when neither
 * is present; throws `ProtocolViolation` when one is present but unreadable.
 */
export function readConnectionHeaders(url: URL, subprotocols: readonly string[]): AuthorizationHeaders | undefined {
  const fromProtocol = subprotocols.find((protocol) => protocol.startsWith(HEADER_SUBPROTOCOL_PREFIX));
  const encoded = fromProtocol?.slice(HEADER_SUBPROTOCOL_PREFIX.length) ?? url.searchParams.get('header') ?? undefined;
  if (encoded === undefined || encoded === '') return undefined;
  try {
    const decoded: unknown = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
    if (isRecord(decoded)) return stringRecord(decoded);
  } catch {
    // reported below
  }
  throw new ProtocolViolation(
    ErrorType.Unauthorized,
    'The connection header is not base64-encoded JSON; send {"host": ..., "x-api-key": ...} base64-encoded in the "header" query parameter.',
  );
}

/** Serialises `connection_ack`. */
export const connectionAck = (connectionTimeoutMs: number): string =>
  JSON.stringify({ type: MessageType.ConnectionAck, payload: { connectionTimeoutMs } });

/** The keep-alive message. */
export const keepAlive = JSON.stringify({ type: MessageType.KeepAlive });

/** Serialises `connection_error`. */
export const connectionError = (errors: ProtocolError[]): string =>
  JSON.stringify({ type: MessageType.ConnectionError, payload: { errors } });

/** Serialises `start_ack`. */
export const startAck = (id: string): string => JSON.stringify({ type: MessageType.StartAck, id });

/** Serialises `complete`, the answer to `stop`. */
export const complete = (id: string): string => JSON.stringify({ type: MessageType.Complete, id });

/** Serialises `error`, with the subscription id when there is one. */
export const error = (errors: ProtocolError[], id?: string): string =>
  JSON.stringify(id === undefined ? { type: MessageType.Error, payload: { errors } } : { type: MessageType.Error, id, payload: { errors } });

/**
 * Serialises `data` from the JSON of the GraphQL result's `data` object, computed once per event
 * and shared by every subscriber with the same selection: only the id differs between them.
 */
export const dataMessage = (id: string, dataJson: string): string =>
  `{"type":"data","id":${JSON.stringify(id)},"payload":{"data":${dataJson}}}`;

function stringRecord(record: Record<string, unknown>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(record)) {
    if (typeof value === 'string') result[key] = value;
  }
  return result;
}
