/**
 * The one error the client SDK throws. Its `code` is stable and safe to branch on; its `message`
 * is written for the person who reads it; `cause` keeps the original error where there was one.
 */
import { LongrunError } from '../errors.js';

/**
 * The codes the SDK itself gives. A GraphQL error from the server keeps the server's `errorType`
 * as its code instead (`ConflictException`, `BadRequestException`, `NotFoundException`, ...),
 * except `UnauthorizedException`, which becomes `Unauthorized` wherever it comes from.
 */
export const ClientErrorCode = {
  /** The API key was refused (HTTP 401/403, `connection_error` UnauthorizedException). Never retried. */
  Unauthorized: 'Unauthorized',
  /** The server could not be reached for the first connection, or an HTTP request could not be sent. */
  ConnectionFailed: 'ConnectionFailed',
  /** The connection dropped mid-stream and could not be re-established within `reconnect.maxElapsedMs`. */
  ConnectionLost: 'ConnectionLost',
  /** A request got no answer within `requestTimeoutMs`, or no `connection_ack` came within `connectTimeoutMs`. */
  Timeout: 'Timeout',
  /** The caller stopped the stream: its `signal` aborted, it called `close()`, or it left a `for await` loop. */
  Aborted: 'Aborted',
  /** `client.close()` was called; the client takes no more work. */
  ClientClosed: 'ClientClosed',
  /** The server answered something the protocol does not allow (not JSON, an HTTP error without a GraphQL body). */
  ProtocolError: 'ProtocolError',
  /** An option passed to `createClient` cannot work (a URL that does not parse, no WebSocket implementation). */
  InvalidOptions: 'InvalidOptions',
} as const;

/** Error raised by the client SDK; `code` is one of `ClientErrorCode` or a server `errorType`. */
export class LongrunClientError extends LongrunError {
  /** True when trying the same thing again later may succeed (network failures, time-outs, 5xx). */
  readonly retryable: boolean;
  /** The HTTP status, when the error came from an HTTP answer. */
  readonly status: number | undefined;

  constructor(code: string, message: string, options: { cause?: unknown; retryable?: boolean; status?: number } = {}) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LongrunClientError';
    this.retryable = options.retryable ?? false;
    this.status = options.status;
  }
}

/** The SDK's code for a server `errorType`: AppSync's `UnauthorizedException` becomes `Unauthorized`. */
export function codeForErrorType(errorType: string | null | undefined): string {
  if (errorType === undefined || errorType === null || errorType === '') return 'UnknownError';
  return errorType === 'UnauthorizedException' ? ClientErrorCode.Unauthorized : errorType;
}

/** The message of an unknown thrown value, on one line. */
export function describeError(error: unknown): string {
  const text = error instanceof Error ? error.message : typeof error === 'string' ? error : (JSON.stringify(error) ?? String(error));
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined;
  // fetch() in Node says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND) is in `cause`.
  const full = cause !== undefined && !text.includes(cause) ? `${text}: ${cause}` : text;
  return (full || 'unknown error').replace(/\s*\n\s*/g, ' ');
}
