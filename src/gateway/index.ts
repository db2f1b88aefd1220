/**
 * The gateway: one Node process, wire-compatible with AppSync, that runs the whole long-running
 * invocation pattern locally: HTTP GraphQL, the AppSync real-time protocol, graphql-ws, the
 * Event-mode invoker, the worker, SQLite and the configured model provider.
 *
 * `createGateway(config)` returns `{ start(), stop() }`; entry points only parse arguments and call it.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config.js';
import { createLocalInvoker } from '../invoker/local.js';
import type { Invoker } from '../invoker/types.js';
import { createLogger, type Logger } from '../log.js';
import { createMetrics } from '../metrics.js';
import { createProvider } from '../providers/index.js';
import type { ModelProvider } from '../providers/types.js';
import { createInProcessPublisher } from '../publisher/in-process.js';
import type { Publisher } from '../publisher/types.js';
import { createAppSyncRealtimeServer } from '../realtime/server.js';
import { createSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/types.js';
import { closeInterruptedTurns, closeLostTurns } from '../worker/recovery.js';
import { runInvocation } from '../worker/run-invocation.js';
import { startTurnThreads } from '../worker/threads.js';
import { createConversationAccess } from './access.js';
import { createApiKeyRing, createAuthenticator, createOidcVerifier, resolveApiKey, type ApiKeySource, type IamVerifier } from './auth.js';
import { createHttpHandler, type RouteHandler } from './http.js';
import { Hub } from './hub.js';
import { createTurnLimiter } from './limits.js';
import { attachResolvers, type GatewayServices } from './operations.js';
import { loadSchema } from './schema.js';
import { createSigV4Verifier } from './sigv4.js';
import { createWebRoute } from './static.js';
import { attachWebSockets, GRAPHQL_PATH, REALTIME_PATH } from './websocket.js';

/** Parts a caller (a test, an embedding application) may supply instead of the configured ones. */
export interface GatewayOverrides {
  provider?: ModelProvider;
  store?: Store;
  logger?: Logger;
  /** Milliseconds since the epoch for events and limits; a clock given here runs turns on the gateway's thread. */
  clock?: () => number;
  /** Stamp events with `performance.timeOrigin + performance.now()` (µs precision) instead of `Date.now`, in turn threads too. */
  preciseClock?: boolean;
  /** Verifies SigV4 requests (AWS_IAM); by default built from `config.workerCredentials`. */
  verifyIam?: IamVerifier;
  /** Extra HTTP routes, tried after the built-in ones. */
  routes?: RouteHandler[];
}

/** Where a started gateway listens. */
export interface GatewayEndpoints {
  /** `http(s)://host:port/graphql` */
  graphqlUrl: string;
  /** `ws(s)://host:port/graphql/realtime` */
  realtimeUrl: string;
  /** `ws(s)://host:port/graphql`, the graphql-ws endpoint. */
  graphqlWsUrl: string;
  port: number;
}

export interface Gateway {
  /** Opens the store, closes turns a crash left running, and listens. Rejects when the port is taken. */
  start(): Promise<GatewayEndpoints>;
  /** Stops taking work, ends running turns as interrupted, closes every socket and the store. */
  stop(): Promise<void>;
  /** The API key clients use, and whether it was generated. Set once `start` resolved. */
  readonly apiKey: ApiKeySource;
  readonly endpoints: GatewayEndpoints;
  /** Internals for metrics and tests. */
  readonly services: GatewayServices;
}

/** Creates the gateway. Nothing is opened until `start`. */
export function createGateway(config: Config, overrides: GatewayOverrides = {}): Gateway {
  const logger = overrides.logger ?? createLogger(config.logLevel);
  const clock = overrides.clock ?? (overrides.preciseClock ? () => performance.timeOrigin + performance.now() : Date.now);
  let apiKey: ApiKeySource | undefined;
  let endpoints: GatewayEndpoints | undefined;
  let services: GatewayServices | undefined;
  let ready = false;
  let shutdown: (() => Promise<void>) | undefined;

  return {
    get apiKey() {
      if (!apiKey) throw new Error('The gateway has not started.');
      return apiKey;
    },
    get endpoints() {
      if (!endpoints) throw new Error('The gateway has not started.');
      return endpoints;
    },
    get services() {
      if (!services) throw new Error('The gateway has not started.');
      return services;
    },

    async start() {
      const loaded = loadSchema(undefined, config.auth.mode === 'oidc' ? ['OPENID_CONNECT'] : ['API_KEY']);
      attachResolvers(loaded);
      const store = overrides.store ?? createSqliteStore({ path: config.databasePath });
      apiKey = resolveApiKey(config.apiKey, config.databasePath);
      // Turns run on threads of their own unless the caller supplies parts that cannot cross to a
      // thread, or the database lives in this thread's memory.
      const threaded =
        config.turnThreads > 0 && config.databasePath !== ':memory:' && !overrides.provider && !overrides.store && !overrides.clock;
      const provider = threaded ? undefined : (overrides.provider ?? (await createProvider(config.provider)));
      const hub = new Hub();
      const metrics = createMetrics({ clock });
      const publisher: Publisher = metrics.publisher(createInProcessPublisher(hub));
      const workerOptions = {
        flushMs: config.flushMs,
        flushBytes: config.flushBytes,
        turnTimeoutMs: config.turnTimeoutMs,
        stallTimeoutMs: config.stallTimeoutMs,
      };
      const limits = createTurnLimiter({ ...config.limits, clock });
      const closed = await closeInterruptedTurns(store, { clock, logger, publisher });
      if (closed > 0) logger.warn('interrupted-turns-closed', { count: closed });
      const threads = threaded
        ? await startTurnThreads({
            count: config.turnThreads,
            setup: {
              databasePath: config.databasePath,
              provider: config.provider,
              workerOptions,
              logLevel: config.logLevel,
              preciseClock: overrides.preciseClock ?? false,
            },
            publisher,
            recordParts: (tokens, firstTokenMs) => metrics.recordParts(tokens, firstTokenMs),
            logger,
            onLost: (events) => closeLostTurns(store, events, { clock, logger, publisher }),
          })
        : undefined;
      const invoker: Invoker = createLocalInvoker({
        maxConcurrent: config.maxConcurrentTurns,
        logger,
        run: (event, signal) =>
          (threads
            ? threads.run(event, signal)
            : runInvocation(event, { provider: provider!, store, publisher, clock, logger, signal, options: workerOptions, onPart: metrics.observeTurn() })
          ).finally(() => limits.release(event.conversationId)),
      });
      services = {
        store,
        invoker,
        hub,
        logger,
        clock,
        maxPromptBytes: config.maxPromptBytes,
        access: createConversationAccess({ store, enforceOwners: config.auth.mode === 'oidc' }),
        limits,
        logPrompts: config.logPrompts,
      };

      const authenticator = createAuthenticator({
        mode: config.auth.mode,
        apiKeys: createApiKeyRing({
          fixed: config.auth.mode === 'apikey' ? [{ key: apiKey.key }] : [],
          file: config.auth.mode === 'apikey' ? config.auth.keysFile : undefined,
          clock,
          onError: (message) => logger.error('api-keys-file-unreadable', { message }),
        }),
        verifyToken: config.auth.mode === 'oidc' ? createOidcVerifier(config.auth) : undefined,
        verifyIam: overrides.verifyIam ?? iamVerifierFor(config, clock),
      });
      const pruner = startRetention(store, config.retentionDays, clock, logger);
      const handler = createHttpHandler({
        loaded,
        services,
        authenticator,
        maxBodyBytes: config.maxBodyBytes,
        isReady: () => ready,
        routes: [metrics.route, createWebRoute({ apiKey, graphqlPath: GRAPHQL_PATH }), ...(overrides.routes ?? [])],
      });
      const server: Server = config.tls
        ? createHttpsServer({ cert: readFileSync(config.tls.certPath), key: readFileSync(config.tls.keyPath) }, handler)
        : createHttpServer(handler);
      const realtime = createAppSyncRealtimeServer({
        loaded,
        services,
        authenticator,
        connectionTimeoutMs: config.connectionTimeoutMs,
        maxBufferedBytes: config.limits.bufferedBytes,
        maxMessageBytes: config.limits.messageBytes,
      });
      const sockets = attachWebSockets({
        server,
        realtime,
        loaded,
        services,
        authenticator,
        keepAliveMs: config.keepAliveMs,
        maxConnectionsPerAddress: config.limits.connectionsPerAddress,
        idleTimeoutMs: config.limits.idleTimeoutMs,
      });
      metrics.collectFrom({ invoker, hub, sockets });

      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const { port } = server.address() as AddressInfo;
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      const secure = config.tls !== undefined;
      endpoints = {
        graphqlUrl: `${secure ? 'https' : 'http'}://${host}:${port}${GRAPHQL_PATH}`,
        realtimeUrl: `${secure ? 'wss' : 'ws'}://${host}:${port}${REALTIME_PATH}`,
        graphqlWsUrl: `${secure ? 'wss' : 'ws'}://${host}:${port}${GRAPHQL_PATH}`,
        port,
      };
      ready = true;
      logger.info('gateway-started', { graphqlUrl: endpoints.graphqlUrl, realtimeUrl: endpoints.realtimeUrl, provider: config.provider.name, turnThreads: threads ? config.turnThreads : 0 });

      shutdown = async () => {
        ready = false;
        clearInterval(pruner);
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Running turns end as interrupted while their subscribers are still connected, so
        // clients see the ERROR event before the sockets close.
        await invoker.stop();
        await threads?.close();
        await sockets.close();
        server.closeAllConnections();
        await serverClosed;
        await store.close();
        await provider?.close?.();
        logger.info('gateway-stopped');
      };
      return endpoints;
    },

    async stop() {
      const current = shutdown;
      shutdown = undefined;
      await current?.();
    },
  };
}

/**
 * Deletes conversations not updated for `days` days (LONGRUN_RETENTION_DAYS; 0 keeps everything),
 * at start and then hourly. Returns the timer.
 */
function startRetention(store: Store, days: number, clock: () => number, logger: Logger): ReturnType<typeof setInterval> | undefined {
  if (days <= 0) return undefined;
  const prune = (): void => {
    store.pruneConversations(clock() - days * 24 * 60 * 60 * 1000).then(
      (count) => count > 0 && logger.info('conversations-pruned', { count, retentionDays: days }),
      (error: unknown) => logger.error('prune-failed', { error }),
    );
  };
  prune();
  const timer = setInterval(prune, 60 * 60 * 1000);
  timer.unref();
  return timer;
}

function iamVerifierFor(config: Config, clock: () => number): IamVerifier | undefined {
  return config.workerCredentials ? createSigV4Verifier([config.workerCredentials], clock) : undefined;
}
