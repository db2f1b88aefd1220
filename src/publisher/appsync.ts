/**
 * The AppSync publisher: the worker Lambda delivers events to subscribers by calling the API's
 * `@aws_iam` mutations over HTTPS, signed with SigV4 (service `appsync`).
 *
 * One `publish(events)` call is one HTTP request: one GraphQL document whose aliased mutations
 * are `e<i>: publishEvent(...)` for each event and, for each CHUNK, `c<i>: sendChunk(...)` for the
 * pattern's `onReceiveChunk` subscribers. AppSync runs a document's mutations in order. A call
 * whose body would pass `maxBatchBytes` is split into several requests, sent in order.
 *
 * AppSync delivers to a subscriber only the fields the mutation selected, so every field of
 * `ConversationEvent` is selected.
 *
 * Transient failures (network errors, 429, 5xx, GraphQL errors of a throttling or internal kind)
 * are retried with capped, jittered exponential backoff, from the first mutation that did not
 * succeed; a retry may deliver an event twice, which `seq` lets clients ignore.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import type { ConversationEvent } from '../domain.js';
import { LongrunError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Publisher } from './types.js';

/** Options of the AppSync publisher. */
export interface AppSyncPublisherOptions {
  /** The API's GraphQL endpoint, `https://<id>.appsync-api.<region>.amazonaws.com/graphql`. */
  url: string;
  /** The region the signature is scoped to. */
  region: string;
  /**
   * Credentials or a provider of them. Default: the AWS SDK's default chain
   * (`@aws-sdk/credential-provider-node`), or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
   * AWS_SESSION_TOKEN when that package is not installed.
   */
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Retries after the first attempt of a request (default 4). */
  maxRetries?: number;
  /** First backoff in milliseconds; doubles per retry, with jitter, up to 5 s (default 100). */
  retryBaseMs?: number;
  /** Split a call into several requests above this body size in bytes (default 200,000). */
  maxBatchBytes?: number;
  /** Abort a request that takes longer (default 10,000 ms). */
  requestTimeoutMs?: number;
  logger?: Logger;
}

/** What a publish request carries: a GraphQL mutation document and its variables. */
export interface PublishDocument {
  query: string;
  variables: Record<string, unknown>;
  /** The aliases in document order, each with the index of its operation. */
  aliases: string[];
}

/** One mutation of a publish request. */
export type PublishOperation =
  | { kind: 'event'; alias: string; event: ConversationEvent }
  | { kind: 'chunk'; alias: string; conversationId: string; chunk: string };

/** The selection set of `publishEvent`: every field of `ConversationEvent`. */
export const CONVERSATION_EVENT_SELECTION =
  'conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt';

/** The mutations that deliver `events`: `e<i>` publishEvent for each, `c<i>` sendChunk for each CHUNK. */
export function publishOperations(events: readonly ConversationEvent[]): PublishOperation[] {
  const operations: PublishOperation[] = [];
  events.forEach((event, index) => {
    operations.push({ kind: 'event', alias: `e${index}`, event });
    if (event.type === 'CHUNK' && event.chunk !== null) {
      operations.push({ kind: 'chunk', alias: `c${index}`, conversationId: event.conversationId, chunk: event.chunk });
    }
  });
  return operations;
}

/**
 * Builds the GraphQL document for events (or for operations already built), for example:
 *
 * ```graphql
 * mutation Publish($e0: ConversationEventInput!, $c0ConversationId: ID!, $c0Chunk: String!) {
 *   e0: publishEvent(event: $e0) { conversationId turn seq ... }
 *   c0: sendChunk(conversationId: $c0ConversationId, chunk: $c0Chunk) { conversationId chunk }
 * }
 * ```
 */
export function buildPublishDocument(input: readonly ConversationEvent[] | readonly PublishOperation[]): PublishDocument {
  const operations = isOperations(input) ? input : publishOperations(input);
  const declarations: string[] = [];
  const fields: string[] = [];
  const variables: Record<string, unknown> = {};
  for (const operation of operations) {
    const parts = operationParts(operation);
    declarations.push(parts.declaration);
    fields.push(parts.field);
    Object.assign(variables, parts.variables);
  }
  return {
    query: `mutation Publish(${declarations.join(', ')}) {\n${fields.join('\n')}\n}`,
    variables,
    aliases: operations.map((operation) => operation.alias),
  };
}

function isOperations(input: readonly ConversationEvent[] | readonly PublishOperation[]): input is readonly PublishOperation[] {
  return input.length > 0 && 'kind' in input[0]!;
}

function operationParts(operation: PublishOperation): { declaration: string; field: string; variables: Record<string, unknown> } {
  const { alias } = operation;
  if (operation.kind === 'event') {
    const { event } = operation;
    return {
      declaration: `$${alias}: ConversationEventInput!`,
      field: `  ${alias}: publishEvent(event: $${alias}) { ${CONVERSATION_EVENT_SELECTION} }`,
      variables: {
        [alias]: {
          conversationId: event.conversationId,
          turn: event.turn,
          seq: event.seq,
          type: event.type,
          chunk: event.chunk,
          error: event.error,
          errorCode: event.errorCode,
          stopReason: event.stopReason,
          usage: event.usage === null ? null : { inputTokens: event.usage.inputTokens, outputTokens: event.usage.outputTokens },
          latencyMs: event.latencyMs,
          createdAt: event.createdAt,
        },
      },
    };
  }
  return {
    declaration: `$${alias}ConversationId: ID!, $${alias}Chunk: String!`,
    field: `  ${alias}: sendChunk(conversationId: $${alias}ConversationId, chunk: $${alias}Chunk) { conversationId chunk }`,
    variables: { [`${alias}ConversationId`]: operation.conversationId, [`${alias}Chunk`]: operation.chunk },
  };
}

/** Bytes an operation adds to a request body (its declaration, field and variables, JSON-encoded). */
function operationBytes(operation: PublishOperation): number {
  const parts = operationParts(operation);
  return (
    Buffer.byteLength(JSON.stringify(`${parts.declaration}, ${parts.field}\n`), 'utf8') +
    Buffer.byteLength(JSON.stringify(parts.variables), 'utf8')
  );
}

/** Splits operations into groups whose request bodies stay under `maxBytes` (a single larger operation goes alone). */
export function splitOperations(operations: readonly PublishOperation[], maxBytes: number): PublishOperation[][] {
  const baseBytes = Buffer.byteLength(JSON.stringify(buildPublishDocument([])), 'utf8');
  const groups: PublishOperation[][] = [];
  let current: PublishOperation[] = [];
  let bytes = baseBytes;
  for (const operation of operations) {
    const size = operationBytes(operation);
    if (current.length > 0 && bytes + size > maxBytes) {
      groups.push(current);
      current = [];
      bytes = baseBytes;
    }
    current.push(operation);
    bytes += size;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

/** Publishing failed for good: after the retries, or at once for an error a retry cannot fix. */
export class PublishError extends LongrunError {
  /** HTTP status of the last response, when there was one. */
  readonly status: number | undefined;
  constructor(message: string, options: { status?: number; cause?: unknown } = {}) {
    super('PublishError', message, { cause: options.cause });
    this.name = 'PublishError';
    this.status = options.status;
  }
}

interface GraphQLError {
  message?: string;
  errorType?: string;
  path?: Array<string | number>;
}

type Attempt =
  | { outcome: 'done' }
  | { outcome: 'retry'; from: number; reason: string; retryAfterMs?: number }
  | { outcome: 'fail'; error: PublishError };

const TRANSIENT_ERROR_TYPE = /throttl|limitexceeded|toomanyrequests|serviceunavailable|internalfailure|internalerror|timeout/i;

/** Creates the AppSync publisher. `publish` rejects with `PublishError`. */
export function createAppSyncPublisher(options: AppSyncPublisherOptions): Publisher {
  const url = new URL(options.url);
  const fetchImplementation = options.fetch ?? fetch;
  const maxRetries = options.maxRetries ?? 4;
  const retryBaseMs = options.retryBaseMs ?? 100;
  const maxBatchBytes = options.maxBatchBytes ?? 200_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const logger = options.logger ?? silentLogger;
  const signer = new SignatureV4({
    credentials: options.credentials ?? defaultCredentials(),
    region: options.region,
    service: 'appsync',
    sha256: Sha256,
  });
  // Calls are delivered in the order they were made, even when a caller does not wait.
  let queue: Promise<unknown> = Promise.resolve();

  const attempt = async (operations: readonly PublishOperation[]): Promise<Attempt> => {
    const document = buildPublishDocument(operations);
    const body = JSON.stringify({ query: document.query, variables: document.variables });
    const signed = await signer.sign({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { host: url.host, 'content-type': 'application/json' },
      body,
    });
    const headers = { ...signed.headers };
    // fetch sets Host itself, to the same value.
    delete headers.host;
    let response: Response;
    let text: string;
    try {
      response = await fetchImplementation(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(requestTimeoutMs),
      });
      text = await response.text();
    } catch (error) {
      return { outcome: 'retry', from: 0, reason: `network error: ${(error as Error).message}` };
    }
    const errors = parseErrors(text);
    const firstMessage = errors[0]?.message ?? text.slice(0, 300);
    if (response.status === 429 || response.status >= 500) {
      return { outcome: 'retry', from: 0, reason: `HTTP ${response.status}`, retryAfterMs: retryAfter(response) };
    }
    if (response.status === 401 || response.status === 403) {
      return {
        outcome: 'fail',
        error: new PublishError(
          `AppSync refused the worker's signed request (HTTP ${response.status}: ${firstMessage}). Check that the worker's role may call appsync:GraphQL on the publish mutations (publishEvent, sendChunk) and that its clock is right.`,
          { status: response.status },
        ),
      };
    }
    if (response.status < 200 || response.status >= 300) {
      return {
        outcome: 'fail',
        error: new PublishError(`AppSync rejected the publish request (HTTP ${response.status}): ${firstMessage}`, { status: response.status }),
      };
    }
    if (errors.length === 0) return { outcome: 'done' };
    const permanent = errors.filter((error) => !TRANSIENT_ERROR_TYPE.test(error.errorType ?? ''));
    if (permanent.length > 0) {
      const described = permanent.map((error) => `${error.errorType ?? 'Error'}${error.path ? ` at ${error.path.join('.')}` : ''}: ${error.message ?? ''}`);
      return { outcome: 'fail', error: new PublishError(`AppSync rejected events: ${described.join('; ')}`, { status: response.status }) };
    }
    // Mutations before the first failed one were delivered; resend from there, in order.
    const failed = errors.map((error) => (typeof error.path?.[0] === 'string' ? document.aliases.indexOf(error.path[0]) : 0));
    const from = Math.max(0, Math.min(...failed.map((index) => (index < 0 ? 0 : index))));
    return { outcome: 'retry', from, reason: `${errors[0]?.errorType}: ${firstMessage}` };
  };

  const deliver = async (group: readonly PublishOperation[]): Promise<void> => {
    let remaining = group;
    for (let retry = 0; ; retry += 1) {
      const result = await attempt(remaining);
      if (result.outcome === 'done') return;
      if (result.outcome === 'fail') throw result.error;
      if (retry >= maxRetries) {
        throw new PublishError(`Publishing to AppSync failed after ${maxRetries + 1} attempts; last: ${result.reason}.`);
      }
      remaining = remaining.slice(result.from);
      const backoff = Math.min(5_000, retryBaseMs * 2 ** retry);
      const delay = Math.max(result.retryAfterMs ?? 0, backoff / 2 + Math.random() * (backoff / 2));
      logger.warn('publish-retry', { reason: result.reason, retry: retry + 1, delayMs: Math.round(delay), operations: remaining.length });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  };

  return {
    publish(events) {
      if (events.length === 0) return Promise.resolve();
      const run = async (): Promise<void> => {
        for (const group of splitOperations(publishOperations(events), maxBatchBytes)) await deliver(group);
      };
      const result = queue.then(run, run);
      queue = result.catch(() => undefined);
      return result;
    },
    async close() {
      await queue;
    },
  };
}

function parseErrors(text: string): GraphQLError[] {
  try {
    const parsed = JSON.parse(text) as { errors?: unknown };
    return Array.isArray(parsed.errors) ? (parsed.errors as GraphQLError[]) : [];
  } catch {
    return [];
  }
}

function retryAfter(response: Response): number | undefined {
  const value = response.headers.get('retry-after');
  if (value === null) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? Math.min(seconds * 1000, 10_000) : undefined;
}

/** The SDK's default chain when installed, else the standard environment variables. */
function defaultCredentials(): AwsCredentialIdentityProvider {
  let provider: Promise<AwsCredentialIdentityProvider> | undefined;
  return async () => {
    provider ??= import('@aws-sdk/credential-provider-node').then(
      (module) => module.defaultProvider(),
      () => fromEnvironment,
    );
    return (await provider)();
  };
}

async function fromEnvironment(): Promise<AwsCredentialIdentity> {
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new PublishError('No AWS credentials for signing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass credentials.');
  }
  return { accessKeyId, secretAccessKey, sessionToken: process.env.AWS_SESSION_TOKEN || undefined };
}
