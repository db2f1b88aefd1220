/**
 * The `ws` adapter: routes WebSocket upgrades by path to the AppSync real-time core
 * (`/graphql/realtime`, subprotocol `graphql-ws`) or to the graphql-ws server (`/graphql`,
 * subprotocol `graphql-transport-ws`), and owns keep-alive: one timer for all connections sends
 * AppSync's `ka` and pings every socket, terminating those that did not answer the last ping.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { execute, parse, subscribe, validate } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer, type WebSocket } from 'ws';
import { isRefusal, type Authenticator, type Principal } from './auth.js';
import type { GatewayServices, OperationContext } from './operations.js';
import type { LoadedSchema } from './schema.js';
import { APPSYNC_SUBPROTOCOL } from '../realtime/protocol.js';
import { CloseCode, type AppSyncRealtimeServer, type RealtimeConnection } from '../realtime/server.js';

/** Paths of the realtime endpoints. */
export const REALTIME_PATH = '/graphql/realtime';
export const GRAPHQL_PATH = '/graphql';

export interface WebSocketAdapterOptions {
  server: Server;
  realtime: AppSyncRealtimeServer;
  loaded: LoadedSchema;
  services: GatewayServices;
  authenticator: Authenticator;
  keepAliveMs: number;
  /** WebSocket connections one client address may hold; more are refused with HTTP 429. */
  maxConnectionsPerAddress: number;
  /** A realtime connection with no subscription for this long is closed (code 4410). */
  idleTimeoutMs: number;
  /** Largest frame `ws` reads; larger ones close the socket with 1009. AppSync's 240 KB limit is checked by the core, below this. */
  maxFrameBytes?: number;
}

/** Attaches both realtime endpoints to `server`; returns `close()`, which closes every socket. */
export function attachWebSockets(options: WebSocketAdapterOptions): { close(): Promise<void>; readonly sockets: number } {
  const maxPayload = options.maxFrameBytes ?? 1024 * 1024;
  const appsync = new WebSocketServer({
    noServer: true,
    maxPayload,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has(APPSYNC_SUBPROTOCOL) ? APPSYNC_SUBPROTOCOL : false),
  });
  const standard = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  const connections = new Map<WebSocket, RealtimeConnection | undefined>();
  const alive = new WeakSet<WebSocket>();
  const perAddress = new Map<string, number>();

  const dispose = useServer<Record<string, unknown>, { principal?: Principal }>(
    {
      schema: options.loaded.schema,
      // graphql-ws must run the same graphql-js instance that built the schema (when a bundler or
      // test runner loads graphql twice, its realm check would refuse the schema).
      parse,
      validate,
      execute,
      subscribe,
      context: (context): OperationContext => ({ principal: context.extra.principal!, services: options.services }),
      onConnect: async (context) => {
        const params = context.connectionParams ?? {};
        const headers = (typeof params.headers === 'object' && params.headers !== null ? params.headers : {}) as Record<string, unknown>;
        const pick = (...values: unknown[]): string | undefined => values.find((value) => typeof value === 'string') as string | undefined;
        const result = await options.authenticator.authenticateHeaders({
          'x-api-key': pick(params['x-api-key'], params.apiKey, headers['x-api-key']),
          authorization: pick(params.Authorization, params.authorization, headers.Authorization, headers.authorization),
        });
        if (isRefusal(result)) return false;
        context.extra.principal = result;
        return true;
      },
    },
    standard,
  );

  const track = (socket: WebSocket, connection: RealtimeConnection | undefined, address: string): void => {
    connections.set(socket, connection);
    perAddress.set(address, (perAddress.get(address) ?? 0) + 1);
    alive.add(socket);
    socket.on('pong', () => alive.add(socket));
    socket.on('close', () => {
      connections.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
      connection?.closed();
    });
    socket.on('error', () => socket.terminate());
  };

  appsync.on('connection', (socket: WebSocket, request: IncomingMessage) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const subprotocols = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter(Boolean);
    const connection = options.realtime.opened(
      {
        get protocol() {
          return socket.protocol;
        },
        get bufferedAmount() {
          return socket.bufferedAmount;
        },
        send: (data) => socket.send(data),
        close: (code, reason) => socket.close(code, reason),
      },
      { url, subprotocols, remoteAddress: request.socket.remoteAddress },
    );
    track(socket, connection, request.socket.remoteAddress ?? '');
    socket.on('message', (data, isBinary) => connection.message(toBuffer(data), isBinary));
  });
  standard.on('connection', (socket: WebSocket, request: IncomingMessage) => track(socket, undefined, request.socket.remoteAddress ?? ''));

  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    const target = path === REALTIME_PATH ? appsync : path === GRAPHQL_PATH ? standard : undefined;
    if (!target) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nWebSocket endpoints: /graphql/realtime (AppSync) and /graphql (graphql-ws)\n');
      return;
    }
    const address = request.socket.remoteAddress ?? '';
    const held = perAddress.get(address) ?? 0;
    if (held >= options.maxConnectionsPerAddress) {
      socket.end(
        `HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nRetry-After: 5\r\nConnection: close\r\n\r\nToo many WebSocket connections from ${address}: the limit is ${options.maxConnectionsPerAddress} (LONGRUN_MAX_CONNECTIONS_PER_ADDRESS). Close one, or use more subscriptions per connection.\n`,
      );
      return;
    }
    target.handleUpgrade(request, socket, head, (ws) => target.emit('connection', ws, request));
  };
  options.server.on('upgrade', onUpgrade);

  const timer = setInterval(() => {
    const now = options.services.clock();
    for (const [socket, connection] of connections) {
      if (!alive.has(socket)) {
        socket.terminate();
        continue;
      }
      alive.delete(socket);
      socket.ping();
      const idleSince = connection?.idleSince;
      if (idleSince !== undefined && now - idleSince >= options.idleTimeoutMs) {
        socket.close(CloseCode.Idle, `No subscription for ${options.idleTimeoutMs} ms (LONGRUN_IDLE_TIMEOUT_MS)`);
        continue;
      }
      connection?.keepAlive();
    }
  }, options.keepAliveMs);
  timer.unref();

  return {
    get sockets() {
      return connections.size;
    },
    async close() {
      clearInterval(timer);
      options.server.off('upgrade', onUpgrade);
      for (const socket of connections.keys()) socket.close(1001, 'Server shutting down');
      await dispose.dispose();
      await Promise.all([new Promise((resolve) => appsync.close(resolve)), new Promise((resolve) => standard.close(resolve))]);
      for (const socket of connections.keys()) socket.terminate();
    },
  };
}

function toBuffer(data: Buffer | ArrayBuffer | Buffer[]): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
