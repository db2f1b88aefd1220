/**
 * longrun: long-running LLM invocations streamed to clients in real time.
 *
 * The server-side API: the gateway, the worker and the parts it is built from. The client SDK is
 * exported separately as `longrun/client`.
 */
export { loadConfig, ConfigError, type Config, type ProviderConfig } from './config.js';
export * from './domain.js';
export * from './errors.js';
export { createGateway, type Gateway, type GatewayEndpoints, type GatewayOverrides } from './gateway/index.js';
export { createLocalInvoker } from './invoker/local.js';
export type { Invoker } from './invoker/types.js';
export { createLogger, type Logger } from './log.js';
export { createProvider } from './providers/index.js';
export { createSimulatedProvider } from './providers/simulated.js';
export type { ModelProvider, ModelRequest, StreamPart } from './providers/types.js';
export type { Publisher } from './publisher/types.js';
export { createSqliteStore } from './store/sqlite.js';
export type { Store } from './store/types.js';
export { runInvocation, defaultWorkerOptions, type WorkerDependencies, type WorkerOptions, type TurnOutcome } from './worker/run-invocation.js';
