/**
 * One error base class for longrun. `code` is stable and is what clients see as AppSync's
 * `errorType`; `message` is written for the person who reads it; `cause` keeps the original error.
 */
export class LongrunError extends Error {
  /** Stable, machine-readable code, e.g. `ConflictException`. */
  readonly code: string;
  /** Suggested wait before retrying, in milliseconds, where a retry can help. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LongrunError';
    this.code = code;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** A turn is already running in this conversation. */
export class ConflictError extends LongrunError {
  constructor(conversationId: string) {
    super(
      'ConflictException',
      `Conversation ${conversationId} already has a turn running; wait for its COMPLETE, ERROR or CANCELLED event, or cancel it, before starting another.`,
    );
  }
}

/** The named conversation does not exist (or the caller may not learn that it does). */
export class NotFoundError extends LongrunError {
  constructor(conversationId: string) {
    super('NotFoundException', `Conversation ${conversationId} was not found.`);
  }
}

/** The request's input is invalid: the message names the field and what is accepted. */
export class BadRequestError extends LongrunError {
  constructor(message: string) {
    super('BadRequestException', message);
  }
}

/** The caller is not allowed to do this. */
export class UnauthorizedError extends LongrunError {
  constructor(message = 'You are not authorized to make this call.') {
    super('UnauthorizedException', message);
  }
}

/** The store could not write or read. */
export class StoreError extends LongrunError {
  constructor(message: string, cause?: unknown) {
    super('StoreError', message, { cause });
  }
}

/** Narrows an unknown thrown value to a LongrunError, or undefined. */
export function asLongrunError(error: unknown): LongrunError | undefined {
  return error instanceof LongrunError ? error : undefined;
}
