/**
 * The worker Lambda: a thin wrapper around `runInvocation`, as the local invoker is. AppSync's
 * `startConversation` resolver reserves the turn in DynamoDB and invokes this function with
 * `invocationType: 'Event'`; the turn then runs here against Bedrock, stores its events in
 * DynamoDB and publishes them through AppSync's `@aws_iam` mutations.
 *
 * The payload (see `parseInvocation`) is the `InvocationEvent` itself:
 *
 * ```json
 * { "conversationId": "…", "turn": 2, "prompt": "…", "system": "…", "modelId": "…",
 *   "maxTokens": 1024, "temperature": 0.5, "topP": 0.9 }
 * ```
 *
 * or, equally, AppSync's argument shape with the reserved turn beside it:
 * `{ "arguments": { "input": { "prompt": "…", … } }, "conversationId": "…", "turn": 2 }`.
 *
 * The deleteConversation resolver also invokes it, synchronously, with
 * `{ "operation": "deleteConversation", "conversationId": "…" }` (see `parseDeletion`).
 *
 * The environment is read once per container, on the first invocation (see `readLambdaEnvironment`).
 */
import { BadRequestError, LongrunError } from '../errors.js';
import type { InvocationEvent } from '../domain.js';
import { createLogger, type Logger, type LogLevel } from '../log.js';
import { createBedrockProvider, DEFAULT_BEDROCK_MODEL_ID } from '../providers/bedrock.js';
import type { ModelProvider } from '../providers/types.js';
import { createAppSyncPublisher } from '../publisher/appsync.js';
import type { Publisher } from '../publisher/types.js';
import { createDynamoDbStore } from '../store/dynamodb.js';
import type { Store } from '../store/types.js';
import { runInvocation, type WorkerOptions } from '../worker/run-invocation.js';

/** The Lambda's settings, from its environment. */
/** The Lambda's LONGRUN_FLUSH_MS when unset: fewer AppSync requests than the gateway's 50 ms. */
export const LAMBDA_DEFAULT_FLUSH_MS = 250;

export interface LambdaEnvironment {
  /** LONGRUN_CONVERSATIONS_TABLE */
  conversationsTable: string;
  /** LONGRUN_EVENTS_TABLE */
  eventsTable: string;
  /** LONGRUN_GRAPHQL_URL: the API's `https://…/graphql` endpoint. */
  graphqlUrl: string;
  /** AWS_REGION, set by Lambda. */
  region: string;
  /** LONGRUN_MODEL_ID (default `DEFAULT_BEDROCK_MODEL_ID`). */
  modelId: string;
  /** LONGRUN_RETENTION_DAYS: items expire this many days after their last write (default 7). */
  retentionDays: number;
  /** LONGRUN_FLUSH_MS, LONGRUN_FLUSH_BYTES, LONGRUN_STALL_TIMEOUT_MS, LONGRUN_TURN_TIMEOUT_MS, LONGRUN_CANCEL_POLL_MS. */
  worker: Partial<WorkerOptions> & { cancelPollMs: number };
  /** LONGRUN_LOG_LEVEL (default info). */
  logLevel: LogLevel;
}

/** Thrown when the Lambda's environment is incomplete or wrong; names each variable. */
export class LambdaConfigError extends LongrunError {
  constructor(message: string) {
    super('ConfigError', message);
  }
}

/** Reads and checks the Lambda's environment. Throws `LambdaConfigError` listing every problem. */
export function readLambdaEnvironment(environment: Record<string, string | undefined> = process.env): LambdaEnvironment {
  const problems: string[] = [];
  const required = (name: string): string => {
    const value = environment[name]?.trim();
    if (!value) problems.push(`${name} is required`);
    return value ?? '';
  };
  const whole = (name: string, fallback: number | undefined, min: number, max: number): number | undefined => {
    const raw = environment[name]?.trim();
    if (raw === undefined || raw === '') return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name} must be a whole number from ${min} to ${max}; got "${raw}"`);
      return fallback;
    }
    return value;
  };
  const graphqlUrl = required('LONGRUN_GRAPHQL_URL');
  if (graphqlUrl && !/^https?:\/\/\S+$/.test(graphqlUrl)) problems.push(`LONGRUN_GRAPHQL_URL must be an https:// URL; got "${graphqlUrl}"`);
  const levels: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];
  const logLevel = (environment.LONGRUN_LOG_LEVEL?.trim() || 'info') as LogLevel;
  if (!levels.includes(logLevel)) problems.push(`LONGRUN_LOG_LEVEL must be one of ${levels.join(', ')}; got "${logLevel}"`);
  const result: LambdaEnvironment = {
    conversationsTable: required('LONGRUN_CONVERSATIONS_TABLE'),
    eventsTable: required('LONGRUN_EVENTS_TABLE'),
    graphqlUrl,
    region: required('AWS_REGION'),
    modelId: environment.LONGRUN_MODEL_ID?.trim() || DEFAULT_BEDROCK_MODEL_ID,
    retentionDays: whole('LONGRUN_RETENTION_DAYS', 7, 1, 3650)!,
    worker: {
      // AppSync bills each publish request and each message, so the Lambda sends a chunk at most
      // every 250 ms by default (four a second still reads as live), where the gateway sends 50 ms.
      flushMs: whole('LONGRUN_FLUSH_MS', LAMBDA_DEFAULT_FLUSH_MS, 0, 60_000),
      flushBytes: whole('LONGRUN_FLUSH_BYTES', undefined, 1, 200_000),
      stallTimeoutMs: whole('LONGRUN_STALL_TIMEOUT_MS', undefined, 1, 15 * 60_000),
      turnTimeoutMs: whole('LONGRUN_TURN_TIMEOUT_MS', undefined, 1, 15 * 60_000),
      cancelPollMs: whole('LONGRUN_CANCEL_POLL_MS', 1000, 100, 60_000)!,
    },
    logLevel,
  };
  if (problems.length > 0) throw new LambdaConfigError(`Invalid Lambda configuration:\n${problems.map((line) => `  - ${line}`).join('\n')}`);
  // Unset tunables keep the worker's defaults.
  for (const key of Object.keys(result.worker) as Array<keyof WorkerOptions>) {
    if (result.worker[key] === undefined) delete result.worker[key];
  }
  return result;
}

/** What the handler runs a turn with. */
export interface LambdaDependencies {
  store: Store;
  publisher: Publisher;
  provider: ModelProvider;
  logger?: Logger;
  /** Worker options; `cancelPollMs` defaults to 1000 (the Lambda learns of cancellation by polling). */
  options?: Partial<WorkerOptions>;
  clock?: () => number;
}

/** Builds the real dependencies from the environment: DynamoDB store, AppSync publisher, Bedrock. */
export function dependenciesFromEnvironment(environment: LambdaEnvironment): LambdaDependencies {
  const logger = createLogger(environment.logLevel);
  return {
    store: createDynamoDbStore({
      tables: { conversations: environment.conversationsTable, events: environment.eventsTable },
      ttlDays: environment.retentionDays,
    }),
    publisher: createAppSyncPublisher({ url: environment.graphqlUrl, region: environment.region, logger }),
    provider: createBedrockProvider({ modelId: environment.modelId }),
    logger,
    options: environment.worker,
  };
}

/** The minimal part of Lambda's context object the handler reads. */
export interface LambdaContext {
  getRemainingTimeInMillis?: () => number;
  awsRequestId?: string;
}

/** What a turn's invocation returns (ignored by Event invocations; useful to tests and manual invokes). */
export interface TurnResult {
  conversationId: string;
  turn: number;
  status: 'COMPLETE' | 'ERROR' | 'CANCELLED';
  /** The seq of the turn's terminal event. */
  seq: number;
}

/** What a `deleteConversation` invocation returns to the resolver that made it. */
export interface DeleteResult {
  conversationId: string;
  /** False when the conversation did not exist. */
  deleted: boolean;
}

export type HandlerResult = TurnResult | DeleteResult;

/** Time kept back from the Lambda's deadline to store and publish the terminal event. */
const DEADLINE_MARGIN_MS = 20_000;

/**
 * Creates the handler. `dependencies` is an object or a factory called once, on the first
 * invocation. Rejects with `BadRequestError` for a payload that is not an invocation.
 */
export function createHandler(
  dependencies: LambdaDependencies | (() => LambdaDependencies | Promise<LambdaDependencies>),
): (payload: unknown, context?: LambdaContext) => Promise<HandlerResult> {
  let ready: Promise<LambdaDependencies> | undefined;
  return async (payload, context) => {
    ready ??= Promise.resolve(typeof dependencies === 'function' ? dependencies() : dependencies);
    const deps = await ready;
    const logger = (deps.logger ?? createLogger('info')).child({ requestId: context?.awsRequestId });
    const deletion = parseDeletion(payload);
    if (deletion !== undefined) {
      // Deleting takes many writes (every event and message), more than a resolver can make.
      const deleted = await deps.store.deleteConversation(deletion.conversationId);
      logger.info('conversation-deleted', { conversationId: deletion.conversationId, deleted });
      return { conversationId: deletion.conversationId, deleted };
    }
    let invocation: InvocationEvent;
    try {
      invocation = parseInvocation(payload);
    } catch (error) {
      logger.error('invalid-invocation', { error });
      throw error;
    }
    const options: Partial<WorkerOptions> = { cancelPollMs: 1000, ...deps.options };
    const remaining = context?.getRemainingTimeInMillis?.();
    if (remaining !== undefined) {
      // End the turn ourselves before Lambda stops the process, so it never stays RUNNING.
      const available = Math.max(1000, remaining - DEADLINE_MARGIN_MS);
      options.turnTimeoutMs = Math.min(options.turnTimeoutMs ?? available, available);
    }
    const outcome = await runInvocation(invocation, {
      provider: deps.provider,
      store: deps.store,
      publisher: deps.publisher,
      clock: deps.clock,
      logger,
      options,
    });
    return { conversationId: invocation.conversationId, turn: invocation.turn, status: outcome.status, seq: outcome.event.seq };
  };
}

/**
 * Reads a deletion request, `{ "operation": "deleteConversation", "conversationId": "…" }` (the
 * deleteConversation resolver's RequestResponse invocation); undefined for any other payload.
 */
export function parseDeletion(payload: unknown): { conversationId: string } | undefined {
  if (!isRecord(payload) || payload.operation !== 'deleteConversation') return undefined;
  if (typeof payload.conversationId !== 'string' || payload.conversationId.length === 0) {
    throw new BadRequestError('A deleteConversation payload needs "conversationId" (a non-empty string).');
  }
  return { conversationId: payload.conversationId };
}

/**
 * Reads the invocation from the payload: an `InvocationEvent`, or `{ arguments: { input }, conversationId, turn }`.
 * Throws `BadRequestError` naming the first bad field.
 */
export function parseInvocation(payload: unknown): InvocationEvent {
  if (!isRecord(payload)) throw new BadRequestError('The invocation payload must be a JSON object.');
  const input = isRecord(payload.arguments) && isRecord(payload.arguments.input) ? payload.arguments.input : {};
  const source: Record<string, unknown> = { ...input, ...withoutKey(payload, 'arguments') };
  const text = (name: string, optional: boolean): string | undefined => {
    const value = source[name];
    if (value === undefined || value === null) {
      if (optional) return undefined;
      throw new BadRequestError(`The invocation payload needs "${name}" (a string).`);
    }
    if (typeof value !== 'string' || (!optional && value.length === 0)) throw new BadRequestError(`"${name}" must be a non-empty string.`);
    return value;
  };
  const number = (name: string, integer: boolean): number | undefined => {
    const value = source[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      throw new BadRequestError(`"${name}" must be ${integer ? 'a whole number' : 'a number'}.`);
    }
    return value;
  };
  const turn = number('turn', true);
  if (turn === undefined || turn < 1) throw new BadRequestError('The invocation payload needs "turn" (the reserved turn, a whole number from 1).');
  return {
    conversationId: text('conversationId', false)!,
    turn,
    prompt: text('prompt', false)!,
    system: text('system', true),
    modelId: text('modelId', true),
    maxTokens: number('maxTokens', true),
    temperature: number('temperature', false),
    topP: number('topP', false),
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function withoutKey(record: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy = { ...record };
  delete copy[key];
  return copy;
}

/** The Lambda entry point (`handler` in the bundle): dependencies from the environment, built once. */
export const handler = createHandler(() => dependenciesFromEnvironment(readLambdaEnvironment()));
