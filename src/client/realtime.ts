/**
 * The client side of the AWS AppSync real-time protocol (subprotocol `graphql-ws`, the legacy
 * Apollo name), so the same code talks to the local gateway and to a deployed AppSync API.
 *
 * One `RealtimeConnection` carries every subscription of a client over one WebSocket, as AppSync
 * clients do (AppSync bills connection minutes). It opens the socket when the first subscription
 * arrives and closes it when the last one leaves. When the socket drops, or stays silent for
 * `connectionTimeoutMs` (the keep-alive watchdog), it reconnects with jittered exponential backoff
 * and starts every subscription again; each subscription hears `onAck` again and backfills what
 * it missed. It never imports a transport: the WebSocket constructor is passed in.
 *
 * Wire, in order: open `wss://…/graphql?header=<base64 {host, x-api-key}>&payload=e30=` with
 * subprotocol `graphql-ws`; send `connection_init`; receive `connection_ack {connectionTimeoutMs}`
 * and then `ka` regularly; send `start {id, payload: {data: JSON string, extensions.authorization}}`;
 * receive `start_ack`, then `data` per event; send `stop`, receive `complete`.
 */
import { ClientErrorCode, codeForErrorType, LongrunClientError } from './errors.js';

// The DOM's and the `ws` package's event types differ; the SDK reads only `data`, `code`,
// `reason` and `message` from them, so handlers take `any` here and nothing more is assumed.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type SocketHandler = ((event: any) => void) | null;

/** What the SDK needs of a WebSocket: the browser's `WebSocket` and the `ws` package both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: SocketHandler;
  onmessage: SocketHandler;
  onerror: SocketHandler;
  onclose: SocketHandler;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` from the `ws` package in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** How the SDK reconnects after a connection drops. */
export interface ReconnectOptions {
  /** Give up, with `ConnectionLost`, when no connection succeeded for this long after a drop (default 30 000 ms). */
  maxElapsedMs?: number;
  /** Upper bound of the first wait before reconnecting (default 200 ms); each later wait doubles it. */
  initialDelayMs?: number;
  /** Largest upper bound of a wait (default 5 000 ms). */
  maxDelayMs?: number;
}

/** The reconnect settings with every default applied. */
export type ReconnectPolicy = Required<ReconnectOptions>;

/** The defaults of `ReconnectOptions`. */
export const DEFAULT_RECONNECT: ReconnectPolicy = { maxElapsedMs: 30_000, initialDelayMs: 200, maxDelayMs: 5_000 };

/** AppSync's default `connectionTimeoutMs`, used when `connection_ack` does not carry one. */
const DEFAULT_CONNECTION_TIMEOUT_MS = 300_000;
const OPEN = 1;

/**
 * The real-time URL of a GraphQL endpoint, derived as AppSync clients derive it:
 * `https://xxx.appsync-api.<region>.amazonaws.com/graphql` becomes
 * `wss://xxx.appsync-realtime-api.<region>.amazonaws.com/graphql`; any other host (a custom
 * domain, the local gateway) gets `/graphql/realtime` on the same host. `http` becomes `ws` and
 * `https` becomes `wss`. Throws `InvalidOptions` for a URL that does not parse or is not http(s)/ws(s).
 */
export function realtimeUrlFor(graphqlUrl: string): string {
  const url = parseUrl(graphqlUrl);
  const scheme = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
  const appsync = /^([^.]+)\.appsync-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(url.hostname);
  if (appsync) {
    return `${scheme}//${appsync[1]}.appsync-realtime-api.${appsync[2]}.amazonaws.com${appsync[3] ?? ''}/graphql`;
  }
  return `${scheme}//${url.host}/graphql/realtime`;
}

/** Parses an endpoint URL; throws `InvalidOptions` naming what is accepted. */
export function parseUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch (error) {
    throw new LongrunClientError(ClientErrorCode.InvalidOptions, `${JSON.stringify(value)} is not a URL; pass the GraphQL endpoint, e.g. http://127.0.0.1:4000/graphql.`, { cause: error });
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol)) {
    throw new LongrunClientError(ClientErrorCode.InvalidOptions, `${value} is not an http(s) URL; pass the GraphQL endpoint, e.g. http://127.0.0.1:4000/graphql.`);
  }
  return url;
}

/** The `header` query parameter: base64 of `{"host", "x-api-key"}`, as AppSync reads it. */
export function encodeAuthorization(authorization: Record<string, string>): string {
  const bytes = new TextEncoder().encode(JSON.stringify(authorization));
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** What a subscription hears from the connection. */
export interface SubscriptionHandlers {
  /** `start_ack`: the server registered the subscription. Called again after every reconnection. */
  onAck(): void;
  /** One `data` message's `payload.data`. */
  onData(data: unknown): void;
  /** The subscription ended for good: refused by the server, or the connection could not be kept. */
  onError(error: LongrunClientError): void;
}

/**
 * How the client's real-time connection is doing:
 * - `connecting`: opening a connection for the first stream (since the connection was last idle);
 * - `connected`: the server acknowledged the connection (`connection_ack`), at first or again;
 * - `reconnecting`: the connection dropped or went silent while streams were open; the SDK is
 *   trying again, and each stream will backfill what it missed;
 * - `idle`: no connection, as no stream is open (the last one ended, or every stream failed);
 * - `closed`: `close()` was called.
 */
export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'idle' | 'closed';

/** A change of the connection's status; `reason` says what failed, where something did. */
export interface ConnectionChange {
  status: ConnectionStatus;
  reason?: string;
}

/** Settings of a `RealtimeConnection`. */
export interface RealtimeOptions {
  realtimeUrl: string;
  /** The GraphQL endpoint's host, sent in the auth header (AppSync checks it). */
  host: string;
  apiKey: string;
  /** Resolves the WebSocket constructor (it may need a dynamic import). */
  webSocket: () => Promise<WebSocketConstructor>;
  reconnect: ReconnectPolicy;
  /** An attempt with no `connection_ack` after this long counts as failed. */
  connectTimeoutMs: number;
  /** Source of jitter; `Math.random` by default (tests pass a fixed one). */
  random?: () => number;
  /** Told of every change of status (consecutive repeats are left out). */
  onStatus?: (change: ConnectionChange) => void;
}

interface SubscriptionRecord {
  readonly query: string;
  readonly variables: Record<string, unknown>;
  readonly handlers: SubscriptionHandlers;
  /** The `id` of its `start` on the current socket; undefined while not started there. */
  operationId: string | undefined;
}

type ConnectionState = 'idle' | 'connecting' | 'open' | 'waiting' | 'closed';

/** One multiplexed AppSync real-time connection; see the module comment. */
export class RealtimeConnection {
  private state: ConnectionState = 'idle';
  private socket: WebSocketLike | undefined;
  private readonly subscriptions = new Set<SubscriptionRecord>();
  /** True once a `connection_ack` came since the connection last went idle. */
  private acknowledged = false;
  private attempt = 0;
  private lastFailure = '';
  private watchdogMs = DEFAULT_CONNECTION_TIMEOUT_MS;
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private deadline: ReturnType<typeof setTimeout> | undefined;
  /** Bumped by every connect and by going idle, so a connect that awaited a stale state gives up. */
  private generation = 0;
  /** The status last reported (`onStatus`). */
  private reported: ConnectionStatus = 'idle';

  constructor(private readonly options: RealtimeOptions) {}

  /**
   * Subscribes; the connection opens if it is not open. Returns the function that stops the
   * subscription (sending `stop`); the socket closes when no subscription is left. Throws
   * `ClientClosed` after `close()`.
   */
  subscribe(query: string, variables: Record<string, unknown>, handlers: SubscriptionHandlers): () => void {
    if (this.state === 'closed') throw new LongrunClientError(ClientErrorCode.ClientClosed, 'The client is closed; create another one.');
    const record: SubscriptionRecord = { query, variables, handlers, operationId: undefined };
    this.subscriptions.add(record);
    if (this.state === 'open') this.start(record);
    else if (this.state === 'idle') void this.connect();
    return () => this.unsubscribe(record);
  }

  /** Closes the socket and ends every subscription with `Aborted`. Idempotent. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.failAll(new LongrunClientError(ClientErrorCode.Aborted, 'The client was closed.'));
    this.report('closed');
  }

  private unsubscribe(record: SubscriptionRecord): void {
    if (!this.subscriptions.delete(record)) return;
    if (record.operationId !== undefined && this.socket?.readyState === OPEN) {
      this.send({ type: 'stop', id: record.operationId });
    }
    if (this.subscriptions.size === 0) this.goIdle();
  }

  private async connect(): Promise<void> {
    this.state = 'connecting';
    // While reconnecting, each attempt leaves the status at `reconnecting`.
    if (!this.acknowledged) this.report('connecting');
    this.retryTimer = undefined;
    const generation = ++this.generation;
    let Constructor: WebSocketConstructor;
    try {
      Constructor = await this.options.webSocket();
    } catch (error) {
      if (generation !== this.generation) return;
      this.failAll(error instanceof LongrunClientError ? error : new LongrunClientError(ClientErrorCode.InvalidOptions, String(error)));
      return;
    }
    if (generation !== this.generation || this.state !== 'connecting') return;
    const { realtimeUrl, host, apiKey } = this.options;
    const header = encodeURIComponent(encodeAuthorization({ host, 'x-api-key': apiKey }));
    let socket: WebSocketLike;
    try {
      socket = new Constructor(`${realtimeUrl}?header=${header}&payload=e30=`, ['graphql-ws']);
    } catch (error) {
      this.failAll(new LongrunClientError(ClientErrorCode.InvalidOptions, `Cannot open a WebSocket to ${realtimeUrl}: ${String(error)}`, { cause: error }));
      return;
    }
    this.socket = socket;
    this.connectTimer = setTimeout(
      () => this.dropped(socket, `no connection_ack within ${this.options.connectTimeoutMs} ms`),
      this.options.connectTimeoutMs,
    );
    socket.onopen = () => {
      if (socket === this.socket) this.send({ type: 'connection_init' });
    };
    socket.onmessage = (event: { data: unknown }) => this.received(socket, event.data);
    socket.onerror = (event: { message?: unknown; error?: unknown }) => {
      // Browsers say nothing about why; `ws` puts the reason (ECONNREFUSED, "Unexpected server
      // response: 401") in `message`.
      const reason = typeof event?.message === 'string' && event.message !== '' ? event.message : 'WebSocket error';
      if (/Unexpected server response: 40[13]\b/.test(reason)) {
        return this.refused(socket, `${realtimeUrl} refused the API key (${reason}).`);
      }
      this.dropped(socket, reason);
    };
    socket.onclose = (event: { code?: number; reason?: string }) =>
      this.dropped(socket, `connection closed (code ${event?.code ?? 'unknown'}${event?.reason ? `: ${event.reason}` : ''})`);
  }

  private received(socket: WebSocketLike, raw: unknown): void {
    if (socket !== this.socket) return;
    let message: { type?: unknown; id?: unknown; payload?: any };
    try {
      message = JSON.parse(typeof raw === 'string' ? raw : String(raw)) as typeof message;
    } catch {
      this.lastFailure = 'the server sent a frame that is not JSON';
      return;
    }
    if (this.state === 'open') this.armWatchdog();
    const record = typeof message.id === 'string' ? this.byOperationId(message.id) : undefined;
    switch (message.type) {
      case 'connection_ack': {
        clearTimeout(this.connectTimer);
        const timeout = Number(message.payload?.connectionTimeoutMs);
        this.watchdogMs = Number.isFinite(timeout) && timeout > 0 ? timeout : DEFAULT_CONNECTION_TIMEOUT_MS;
        this.state = 'open';
        this.acknowledged = true;
        this.attempt = 0;
        clearTimeout(this.deadline);
        this.deadline = undefined;
        this.armWatchdog();
        this.report('connected');
        for (const subscription of this.subscriptions) this.start(subscription);
        break;
      }
      case 'start_ack':
        record?.handlers.onAck();
        break;
      case 'data':
        record?.handlers.onData(message.payload?.data);
        break;
      case 'error': {
        if (!record) {
          this.lastFailure = describeErrors(message.payload);
          break;
        }
        this.subscriptions.delete(record);
        const first = firstError(message.payload);
        record.handlers.onError(new LongrunClientError(codeForErrorType(first.errorType), first.message));
        if (this.subscriptions.size === 0) this.goIdle();
        break;
      }
      case 'connection_error': {
        const first = firstError(message.payload);
        if (first.errorType === 'UnauthorizedException' || first.errorCode === 401) {
          this.refused(socket, `${this.options.realtimeUrl} refused the API key (${first.errorType}): ${first.message}`);
        } else {
          this.dropped(socket, `connection_error ${first.errorType}: ${first.message}`);
        }
        break;
      }
      default:
        // `ka` re-armed the watchdog above; `complete` answers our `stop`: nothing else to do.
        break;
    }
  }

  private start(record: SubscriptionRecord): void {
    record.operationId = newId();
    const { host, apiKey } = this.options;
    this.send({
      id: record.operationId,
      type: 'start',
      payload: {
        data: JSON.stringify({ query: record.query, variables: record.variables }),
        extensions: { authorization: { host, 'x-api-key': apiKey } },
      },
    });
  }

  /** The socket failed or went silent: reconnect, or fail everyone when it never worked. */
  private dropped(socket: WebSocketLike, reason: string): void {
    if (socket !== this.socket) return;
    this.discardSocket();
    this.lastFailure = reason;
    if (this.subscriptions.size === 0) {
      this.state = 'idle';
      this.report('idle', reason);
      return;
    }
    if (!this.acknowledged) {
      // The first connection is not retried: an unreachable URL should say so at once rather
      // than after the whole reconnect budget. Retrying protects streams that were running.
      this.failAll(
        new LongrunClientError(ClientErrorCode.ConnectionFailed, `Could not connect to ${this.options.realtimeUrl} (${reason}).`, {
          retryable: true,
        }),
      );
      return;
    }
    for (const subscription of this.subscriptions) subscription.operationId = undefined;
    if (this.deadline === undefined) {
      // The budget runs from the drop, across every attempt, until a connection_ack clears it.
      const budget = this.options.reconnect.maxElapsedMs;
      this.deadline = setTimeout(() => {
        this.failAll(
          new LongrunClientError(
            ClientErrorCode.ConnectionLost,
            `Lost the connection to ${this.options.realtimeUrl} and could not reconnect within ${budget} ms (last failure: ${this.lastFailure}).`,
            { retryable: true },
          ),
        );
      }, budget);
    }
    this.state = 'waiting';
    this.report('reconnecting', reason);
    this.retryTimer = setTimeout(() => void this.connect(), this.backoff());
  }

  /** The API key was refused: retrying cannot help, so every subscription fails now. */
  private refused(socket: WebSocketLike, message: string): void {
    if (socket !== this.socket) return;
    this.failAll(new LongrunClientError(ClientErrorCode.Unauthorized, message, { status: 401 }));
  }

  /**
   * A random wait between half the bound and the bound, which doubles per attempt up to
   * `maxDelayMs`: the jitter spreads a crowd of clients that lost their connections together.
   */
  private backoff(): number {
    const { initialDelayMs, maxDelayMs } = this.options.reconnect;
    const bound = Math.min(maxDelayMs, initialDelayMs * 2 ** this.attempt);
    this.attempt += 1;
    const random = this.options.random ?? Math.random;
    return Math.round(bound / 2 + (random() * bound) / 2);
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    const socket = this.socket;
    if (!socket) return;
    this.watchdog = setTimeout(() => this.dropped(socket, `no keep-alive for ${this.watchdogMs} ms`), this.watchdogMs);
  }

  private failAll(error: LongrunClientError): void {
    const subscriptions = [...this.subscriptions];
    this.subscriptions.clear();
    this.goIdle(error.code === ClientErrorCode.Aborted ? undefined : error.message);
    for (const subscription of subscriptions) subscription.handlers.onError(error);
  }

  /** Tells `onStatus` of a change of status (it must not throw: `createClient` isolates its listeners). */
  private report(status: ConnectionStatus, reason?: string): void {
    if (status === this.reported) return;
    this.reported = status;
    this.options.onStatus?.(reason === undefined ? { status } : { status, reason });
  }

  private goIdle(reason?: string): void {
    this.generation += 1;
    this.discardSocket(true);
    clearTimeout(this.retryTimer);
    clearTimeout(this.deadline);
    this.retryTimer = undefined;
    this.deadline = undefined;
    this.acknowledged = false;
    this.attempt = 0;
    if (this.state !== 'closed') {
      this.state = 'idle';
      this.report('idle', reason);
    }
  }

  /** Forgets the current socket; `graceful` closes a healthy one with 1000 rather than cutting it. */
  private discardSocket(graceful = false): void {
    clearTimeout(this.watchdog);
    clearTimeout(this.connectTimer);
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    // `ws` throws an 'error' event nobody listens to; a socket written off may still emit one.
    socket.onerror = () => undefined;
    // A close handshake with a peer that went silent would wait for it (30 s in `ws`), so a
    // failed `ws` socket is terminated. Browsers only have close().
    const terminate = (socket as { terminate?: () => void }).terminate;
    try {
      if ((graceful && socket.readyState === OPEN) || typeof terminate !== 'function') socket.close(1000, 'closed by client');
      else terminate.call(socket);
    } catch {
      // closing a socket that never opened may throw; it is gone either way
    }
  }

  private send(message: unknown): void {
    if (this.socket?.readyState === OPEN) this.socket.send(JSON.stringify(message));
  }

  private byOperationId(id: string): SubscriptionRecord | undefined {
    for (const subscription of this.subscriptions) if (subscription.operationId === id) return subscription;
    return undefined;
  }
}

function firstError(payload: unknown): { errorType: string; message: string; errorCode: number | undefined } {
  const errors = (payload as { errors?: Array<{ errorType?: unknown; message?: unknown; errorCode?: unknown }> } | undefined)?.errors;
  const first = Array.isArray(errors) ? errors[0] : undefined;
  return {
    errorType: typeof first?.errorType === 'string' ? first.errorType : 'UnknownError',
    message: typeof first?.message === 'string' ? first.message : 'The server refused the operation without saying why.',
    errorCode: typeof first?.errorCode === 'number' ? first.errorCode : undefined,
  };
}

function describeErrors(payload: unknown): string {
  const first = firstError(payload);
  return `${first.errorType}: ${first.message}`;
}

/** A random UUID; `crypto.randomUUID` needs a secure context in browsers, `getRandomValues` does not. */
export function newId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
