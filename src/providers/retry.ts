/**
 * What the HTTP providers (Bedrock, OpenAI-compatible) share: retrying a model call until its first
 * token, ending an iteration as soon as its signal aborts, and finding the network error code
 * buried in an SDK error's `cause` chain.
 */
import type { ErrorPart, StreamPart } from './types.js';

/** How a provider retries a failed call before the first token. */
export interface RetryPolicy {
  /** Retries after the first attempt: a turn makes at most `maxRetries + 1` requests. */
  maxRetries: number;
  /** The first backoff in milliseconds; each further retry doubles it, up to `maxDelayMs`. */
  retryBaseMs: number;
  /** The longest single backoff in milliseconds. */
  maxDelayMs: number;
}

/** 3 retries, waiting about 0.5 s, 1 s and 2 s: under 4 s in all before the failure is reported. */
export const defaultRetryPolicy: RetryPolicy = { maxRetries: 3, retryBaseMs: 500, maxDelayMs: 8000 };

/**
 * Yields the parts of `attempt()`. When an attempt ends with a retryable `error` part before it
 * produced any text, waits (exponential backoff with jitter) and calls `attempt()` again, at most
 * `policy.maxRetries` times. Once text has been yielded nothing is retried: the text already went
 * to the client and cannot be taken back, and a second answer would not continue the first.
 *
 * The final failure is yielded with the number of attempts added to its message. Ends without a
 * part when `signal` aborts, including during a backoff. Empty text deltas are dropped.
 */
export async function* retryBeforeFirstToken(
  attempt: () => AsyncIterable<StreamPart>,
  policy: RetryPolicy,
  signal: AbortSignal,
): AsyncGenerator<StreamPart> {
  for (let attemptNumber = 1; ; attemptNumber += 1) {
    if (signal.aborted) return;
    let producedText = false;
    let retryable: ErrorPart | undefined;
    for await (const part of attempt()) {
      if (signal.aborted) return;
      if (part.type === 'text-delta') {
        if (part.delta.length === 0) continue;
        producedText = true;
        yield part;
        continue;
      }
      if (part.type === 'error' && part.isRetryable && !producedText) {
        retryable = part;
        break;
      }
      yield part;
      return;
    }
    if (retryable === undefined) return;
    if (attemptNumber > policy.maxRetries) {
      yield attemptNumber > 1
        ? { ...retryable, message: `${retryable.message} (Tried ${attemptNumber} times.)` }
        : retryable;
      return;
    }
    await sleep(backoffMs(attemptNumber, policy), signal);
  }
}

/** The wait before retry number `retry` (1-based): exponential, capped, with "equal jitter". */
export function backoffMs(retry: number, policy: Pick<RetryPolicy, 'retryBaseMs' | 'maxDelayMs'>): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.retryBaseMs * 2 ** (retry - 1));
  // Jitter keeps many turns throttled at the same moment from retrying in lock-step.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * Yields the items of `iterable` until it ends or `signal` aborts, whichever comes first. On abort
 * it returns at once even if the source is blocked waiting for bytes, and asks the source to
 * return without waiting for it (a vendor stream whose socket is being torn down may take a while
 * to notice).
 */
export async function* untilAborted<T>(iterable: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  if (signal.aborted) return;
  const iterator = iterable[Symbol.asyncIterator]();
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  let exhausted = false;
  try {
    while (true) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next === 'aborted') return;
      if (next.done === true) {
        exhausted = true;
        return;
      }
      yield next.value;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (!exhausted) void Promise.resolve(iterator.return?.()).catch(() => undefined);
  }
}

/** Resolves after `ms` milliseconds, or at once when `signal` aborts. Never rejects. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * The innermost Node.js / undici network error code (`ECONNREFUSED`, `ECONNRESET`, `ENOTFOUND`,
 * `UND_ERR_SOCKET`, `ERR_HTTP2_STREAM_CANCEL`, ...) on `error` or its `cause` chain. SDKs wrap
 * these ("fetch failed", "The pending stream has been canceled"), and the innermost code names the
 * root cause: an HTTP/2 stream cancelled because the connection was refused is a refusal.
 */
export function networkErrorCode(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  let found: string | undefined;
  let current: unknown = error;
  while (typeof current === 'object' && current !== null && !seen.has(current)) {
    seen.add(current);
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+|ERR_HTTP2_[A-Z_]+|ERR_STREAM_PREMATURE_CLOSE)$/.test(code)) {
      found = code;
    }
    // `AggregateError` (happy-eyeballs tried IPv4 and IPv6) carries the codes in `errors`.
    const errors = (current as { errors?: unknown }).errors;
    if (Array.isArray(errors) && errors.length > 0) {
      const inner = networkErrorCode(errors[0]);
      if (inner !== undefined) return inner;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return found;
}

/** How a network failure is reported: a stable code and whether trying again can help. */
export interface NetworkFailure {
  /** `ConnectionRefused`, `Unreachable`, `HostNotFound`, `ConnectionReset` or `Timeout`. */
  code: 'ConnectionRefused' | 'Unreachable' | 'HostNotFound' | 'ConnectionReset' | 'Timeout';
  isRetryable: boolean;
  /** The Node.js code it came from, e.g. `ECONNRESET`. */
  nodeCode: string;
}

/** Classifies a Node.js network error code; undefined when it is not one. */
export function classifyNetworkError(nodeCode: string | undefined): NetworkFailure | undefined {
  if (nodeCode === undefined) return undefined;
  switch (nodeCode) {
    case 'ECONNREFUSED':
      // A local server that is (re)starting refuses connections for a moment, so retrying helps.
      return { code: 'ConnectionRefused', isRetryable: true, nodeCode };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return { code: 'Unreachable', isRetryable: true, nodeCode };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { code: 'HostNotFound', isRetryable: nodeCode === 'EAI_AGAIN', nodeCode };
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return { code: 'Timeout', isRetryable: true, nodeCode };
    default:
      return { code: 'ConnectionReset', isRetryable: true, nodeCode };
  }
}

/** The message of an unknown thrown value, for putting in brackets after ours. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

/**
 * The abort controller of one attempt at a vendor request: aborted when the request's signal
 * aborts, and by `release()` however the attempt ends (the consumer stops reading, a retry, an
 * error), so that its HTTP stream is closed rather than left to drain.
 */
export function attemptController(requestSignal: AbortSignal): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const forward = (): void => controller.abort(requestSignal.reason);
  requestSignal.addEventListener('abort', forward, { once: true });
  return {
    signal: controller.signal,
    release() {
      requestSignal.removeEventListener('abort', forward);
      controller.abort();
    },
  };
}
