/**
 * The AppSync real-time protocol server core. It never imports a transport: it takes a minimal
 * socket and returns the connection's handlers. The `ws` adapter (`gateway/websocket.ts`) owns the
 * upgrade, the keep-alive timer and close codes.
 *
 * Fan-out is the hot path: each published value is serialised once per distinct subscription
 * document (memoised across the subscribers of one publish), then framed per subscriber by
 * splicing in its id, instead of executing GraphQL once per subscriber.
 */
import {
  execute,
  getArgumentValues,
  getOperationAST,
  getVariableValues,
  type FieldNode,
  type GraphQLObjectType,
} from 'graphql';
import { LongrunError } from '../errors.js';
import { isRefusal, type Authenticator, type Principal } from '../gateway/auth.js';
import type { Topic } from '../gateway/hub.js';
import { checkConversationId, formatResult, notAuthorized, parseDocument, type GatewayServices } from '../gateway/operations.js';
import { compileProjection, type LoadedSchema } from '../gateway/schema.js';
import * as protocol from './protocol.js';
import { ErrorType, LIMITS, ProtocolViolation } from './protocol.js';

/** The transport as the core sees it. */
export interface RealtimeSocket {
  /** The subprotocol agreed at the upgrade. */
  readonly protocol: string;
  send(data: string): void;
  /** Closes the connection with a WebSocket close code and a reason. */
  close(code: number, reason: string): void;
  /** Bytes queued for sending and not yet written; used to drop subscribers that do not read. */
  readonly bufferedAmount: number;
}

/** What the upgrade request said. */
export interface ConnectionRequest {
  url: URL;
  subprotocols: readonly string[];
  remoteAddress: string | undefined;
}

/** The handlers of one open connection. */
export interface RealtimeConnection {
  /** Feeds one incoming frame. */
  message(data: string | Buffer, isBinary: boolean): void;
  /** Sends a keep-alive (`ka`); the adapter calls it on its timer. */
  keepAlive(): void;
  /** Releases the connection's subscriptions; the adapter calls it once the socket closed. */
  closed(): void;
  /** Subscriptions open on this connection. */
  readonly subscriptions: number;
  /** Since when (ms since the epoch) the connection has had no subscription; undefined while it has one. */
  readonly idleSince: number | undefined;
}

/** Close codes the core uses (4xxx: application codes). */
export const CloseCode = {
  Unauthorized: 4401,
  SlowConsumer: 4408,
  Idle: 4410,
} as const;

export interface RealtimeServerOptions {
  loaded: LoadedSchema;
  services: GatewayServices;
  authenticator: Authenticator;
  /** Announced in `connection_ack` as `connectionTimeoutMs`. */
  connectionTimeoutMs: number;
  /** A subscriber with more than this many bytes waiting to be sent is disconnected (default 8 MiB). */
  maxBufferedBytes?: number;
  /** Largest incoming message (default AppSync's 240 KB). */
  maxMessageBytes?: number;
}

interface Subscription {
  unsubscribe: () => void;
}

/** Creates the AppSync real-time server core. */
export function createAppSyncRealtimeServer(options: RealtimeServerOptions) {
  const { loaded, services, authenticator } = options;
  const subscriptionType = loaded.schema.getSubscriptionType() as GraphQLObjectType;
  const maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;
  const maxMessageBytes = options.maxMessageBytes ?? LIMITS.maxMessageBytes;
  const clock = services.clock;
  let connections = 0;
  // Subscribers send the same few documents: `parseDocument` parses and validates each once, and
  // the subscriptions share its result and one compiled serialiser instead of each keeping its
  // own syntax tree and closures (that was most of a subscription's memory).
  const projections = new WeakMap<FieldNode, ReturnType<typeof compileProjection> | null>();
  const compileOnce = (fieldNode: FieldNode): ReturnType<typeof compileProjection> => {
    let compiled = projections.get(fieldNode);
    if (compiled === undefined) {
      compiled = compileProjection(loaded.schema, subscriptionType, fieldNode) ?? null;
      projections.set(fieldNode, compiled);
    }
    return compiled ?? undefined;
  };

  return {
    /** Connections open now. */
    get connections() {
      return connections;
    },

    /** Called by the adapter when a socket opened. */
    opened(socket: RealtimeSocket, request: ConnectionRequest): RealtimeConnection {
      connections += 1;
      const subscriptions = new Map<string, Subscription>();
      let principal: Principal | undefined;
      let closed = false;
      let idleSince: number | undefined = clock();

      const send = (data: string): void => {
        if (closed) return;
        socket.send(data);
      };
      const fail = (errorType: string, message: string, id?: string): void =>
        send(protocol.error([{ errorType, message }], id));

      // Messages are handled one after another, after the connection's credential is checked, so a
      // start that arrives while a token is being verified waits for it instead of racing it.
      let pending: Promise<void> = (async () => {
        let refusal = 'You are not authorized to make this call.';
        try {
          const headers = protocol.readConnectionHeaders(request.url, request.subprotocols);
          const result = headers ? await authenticator.authenticateHeaders(headers) : undefined;
          if (result && !isRefusal(result)) principal = result;
          else if (result) refusal = result.error;
        } catch (error) {
          if (error instanceof ProtocolViolation) refusal = error.message;
        }
        if (principal === undefined) {
          // AppSync accepts the upgrade, then refuses the connection with connection_error.
          send(
            protocol.connectionError([
              {
                errorType: ErrorType.Unauthorized,
                message: `${refusal} Pass {"host": ..., "x-api-key": ...} (or "Authorization" with a token) base64-encoded in the "header" query parameter or a "header-<base64url>" subprotocol.`,
                errorCode: 401,
              },
            ]),
          );
          socket.close(CloseCode.Unauthorized, 'Unauthorized');
        }
      })();

      const start = async (message: protocol.StartMessage): Promise<void> => {
        const { id } = message;
        if (subscriptions.has(id)) {
          return fail(ErrorType.DuplicatedOperation, `Duplicate subscription id ${JSON.stringify(id)}; each start needs a new id.`, id);
        }
        if (subscriptions.size >= LIMITS.maxSubscriptionsPerConnection) {
          return fail(
            ErrorType.MaxSubscriptionsReached,
            `Max number of ${LIMITS.maxSubscriptionsPerConnection} subscriptions reached on this connection; stop one or open another connection.`,
            id,
          );
        }
        const request = protocol.parseSubscriptionRequest(message.payload.data, id);
        const authorization = message.payload.extensions?.authorization;
        let caller = principal!;
        if (authorization?.['x-api-key'] !== undefined || authorization?.authorization !== undefined || authorization?.Authorization !== undefined) {
          const result = await authenticator.authenticateHeaders({
            'x-api-key': authorization['x-api-key'],
            authorization: authorization.authorization ?? authorization.Authorization,
          });
          if (isRefusal(result)) {
            return fail(ErrorType.Unauthorized, `${result.error} (the credential in extensions.authorization)`, id);
          }
          caller = result;
        }
        const parsed = parseDocument(loaded, request.query);
        if ('errors' in parsed) {
          return send(protocol.error(parsed.errors.map((e) => ({ errorType: e.errorType ?? ErrorType.Validation, message: e.message })), id));
        }
        const operation = getOperationAST(parsed.document, request.operationName);
        if (!operation) {
          return fail(ErrorType.Validation, 'The query must hold exactly one operation, or name one with operationName.', id);
        }
        if (operation.operation !== 'subscription') {
          return fail(ErrorType.UnsupportedOperation, `${operation.operation} not supported through the realtime channel`, id);
        }
        const fieldNode = operation.selectionSet.selections[0] as FieldNode;
        const fieldName = fieldNode.name.value as Topic;
        const fieldDefinition = subscriptionType.getFields()[fieldName]!;
        if (!loaded.allowedModes('Subscription', fieldName).has(caller.mode)) {
          const refusal = notAuthorized(fieldName, 'Subscription');
          return fail(refusal.code, refusal.message, id);
        }
        const coerced = getVariableValues(loaded.schema, operation.variableDefinitions ?? [], request.variables);
        if (coerced.errors) {
          return send(protocol.error(coerced.errors.map((e) => ({ errorType: ErrorType.Validation, message: e.message })), id));
        }
        const args = getArgumentValues(fieldDefinition, fieldNode, coerced.coerced) as { conversationId: string };
        checkConversationId(args.conversationId);
        const accept = await services.access.gate(caller, args.conversationId);
        if (closed || subscriptions.has(id)) return;

        const compiled = compileOnce(fieldNode);
        const memoKey = compiled ? `${request.operationName ?? ''}\u0000${request.query}` : `${request.query}\u0000${JSON.stringify(request.variables)}\u0000${request.operationName ?? ''}`;
        const project =
          compiled ??
          ((value: unknown): string => {
            const result = execute({
              schema: loaded.schema,
              document: parsed.document,
              // The subscription field's resolver returns the published payload itself, as for graphql-ws.
              rootValue: value,
              variableValues: request.variables,
              operationName: request.operationName,
              contextValue: { principal: caller, services },
            });
            // No resolver on a subscription's selection is asynchronous, so execution is synchronous.
            return JSON.stringify(formatResult(result as Awaited<typeof result>, services.logger).data ?? null);
          });

        const unsubscribe = services.hub.subscribe(fieldName, args.conversationId, (value, memo) => {
          if (!accept()) return;
          let json = memo.get(memoKey);
          if (json === undefined) {
            json = project(value);
            memo.set(memoKey, json);
          }
          if (socket.bufferedAmount > maxBufferedBytes) {
            // A subscriber that does not read would grow the server's memory without bound; it
            // reconnects and resumes from its last seq instead.
            services.logger.warn('slow-subscriber-closed', { conversationId: args.conversationId, buffered: socket.bufferedAmount });
            socket.close(CloseCode.SlowConsumer, 'Send buffer full: resume from your last seq');
            return;
          }
          send(protocol.dataMessage(id, json));
        });
        subscriptions.set(id, { unsubscribe });
        idleSince = undefined;
        send(protocol.startAck(id));
      };

      const handle = async (data: string | Buffer, isBinary: boolean): Promise<void> => {
        if (closed || principal === undefined) return;
        let message: protocol.ClientMessage | undefined;
        try {
          message = protocol.validateMessage(data, isBinary, maxMessageBytes);
          switch (message.type) {
            case protocol.MessageType.ConnectionInit:
              send(protocol.connectionAck(options.connectionTimeoutMs));
              send(protocol.keepAlive);
              break;
            case protocol.MessageType.Start:
              await start(message);
              break;
            case protocol.MessageType.Stop: {
              const subscription = subscriptions.get(message.id);
              subscription?.unsubscribe();
              subscriptions.delete(message.id);
              if (subscriptions.size === 0) idleSince = clock();
              send(protocol.complete(message.id));
              break;
            }
          }
        } catch (error) {
          const id = message && 'id' in message ? message.id : undefined;
          if (error instanceof ProtocolViolation) {
            fail(error.errorType, error.message, error.id ?? id);
          } else if (error instanceof LongrunError) {
            fail(error.code, error.message, id);
          } else {
            const errorId = crypto.randomUUID();
            services.logger.error('realtime-message-failed', { errorId, error });
            fail(ErrorType.Internal, `internal error (id ${errorId})`, id);
          }
        }
      };

      return {
        get subscriptions() {
          return subscriptions.size;
        },
        get idleSince() {
          return idleSince;
        },
        message(data, isBinary) {
          pending = pending.then(() => handle(data, isBinary));
        },
        keepAlive() {
          if (principal !== undefined) send(protocol.keepAlive);
        },
        closed() {
          if (closed) return;
          closed = true;
          connections -= 1;
          for (const subscription of subscriptions.values()) subscription.unsubscribe();
          subscriptions.clear();
        },
      };
    },
  };
}

/** The AppSync real-time server core. */
export type AppSyncRealtimeServer = ReturnType<typeof createAppSyncRealtimeServer>;
