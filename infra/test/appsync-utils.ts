/**
 * A stand-in for `@aws-appsync/utils` (which exists only inside AppSync's APPSYNC_JS runtime), for
 * running the resolvers in tests: the parts of `util` and `runtime` they use, behaving as AWS
 * documents them. `util.error` and `runtime.earlyReturn` stop the handler by throwing.
 */
import { randomUUID } from 'node:crypto';

/** What `util.error` throws: AppSync turns it into the field's error. */
export class ResolverError extends Error {
  constructor(
    message: string,
    readonly errorType: string | undefined,
  ) {
    super(message);
    this.name = 'ResolverError';
  }
}

/** What `runtime.earlyReturn` throws: the handler's result, skipping the data source. */
export class EarlyReturn {
  constructor(readonly value: unknown) {}
}

/** Errors added with `util.appendError` during the current field. */
export const appendedErrors: Array<{ message: string; errorType: string | undefined }> = [];

/** The clock `util.time` reads; tests may replace it. */
export const clock = { now: () => Date.now() };

type AttributeValue =
  | { S: string }
  | { N: string }
  | { BOOL: boolean }
  | { NULL: true }
  | { L: AttributeValue[] }
  | { M: Record<string, AttributeValue> };

function toDynamoDB(value: unknown): AttributeValue {
  if (value === null || value === undefined) return { NULL: true };
  if (typeof value === 'string') return { S: value };
  if (typeof value === 'number') return { N: String(value) };
  if (typeof value === 'boolean') return { BOOL: value };
  if (Array.isArray(value)) return { L: value.map(toDynamoDB) };
  if (typeof value === 'object') return { M: toMapValues(value as Record<string, unknown>) };
  throw new Error(`util.dynamodb cannot convert ${typeof value}`);
}

function toMapValues(values: Record<string, unknown>): Record<string, AttributeValue> {
  return Object.fromEntries(Object.entries(values).map(([key, value]) => [key, toDynamoDB(value)]));
}

export const util = {
  error(message: string, errorType?: string): never {
    throw new ResolverError(message, errorType);
  },
  appendError(message: string, errorType?: string): void {
    appendedErrors.push({ message, errorType });
  },
  autoId: (): string => randomUUID(),
  // AppSync's util.matches is Java's String.matches: the whole string must match.
  matches: (pattern: string, value: string): boolean => new RegExp(`^(?:${pattern})$`, 'u').test(value),
  base64Encode: (text: string): string => Buffer.from(text, 'utf8').toString('base64'),
  time: {
    nowEpochMilliSeconds: (): number => clock.now(),
    nowEpochSeconds: (): number => Math.floor(clock.now() / 1000),
  },
  dynamodb: { toDynamoDB, toMapValues },
};

export const runtime = {
  earlyReturn(value?: unknown): never {
    throw new EarlyReturn(value);
  },
};
