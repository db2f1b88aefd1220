/**
 * The worker: runs one turn of a conversation. provider → coalescer → store → publisher.
 *
 * The local invoker and the Lambda handler are thin wrappers around `runInvocation`; every
 * behaviour of a turn (coalescing, numbering, time-outs, cancellation, error mapping) lives here.
 * Each event is stored before it is published, so anything a client has received is stored.
 */
import { randomUUID } from 'node:crypto';
import { makeEvent, type ConversationEvent, type InvocationEvent, type Message, type TurnStatus, type Usage } from '../domain.js';
import { asLongrunError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { ModelProvider, StreamPart } from '../providers/types.js';
import type { Publisher } from '../publisher/types.js';
import type { Store } from '../store/types.js';
import { Coalescer } from './coalescer.js';

/** Why a turn was stopped before the model finished. */
export type AbortReason = 'cancel' | 'shutdown' | 'timeout' | 'stall' | 'store';

/** Tunables of the worker; see `defaultWorkerOptions`. */
export interface WorkerOptions {
  /** Gather deltas for this long after the first (LONGRUN_FLUSH_MS); 0 sends every delta. */
  flushMs: number;
  /** Flush as soon as this many bytes wait. */
  flushBytes: number;
  /** A turn running longer ends with ERROR `TurnTimeout` (LONGRUN_TURN_TIMEOUT_MS). */
  turnTimeoutMs: number;
  /** A provider silent for longer ends the turn with ERROR `StallTimeout` (LONGRUN_STALL_TIMEOUT_MS). */
  stallTimeoutMs: number;
  /** Poll `store.isCancelRequested` this often; 0 disables polling (the local invoker aborts directly). */
  cancelPollMs: number;
  /** Attempts at storing the terminal event, 250 ms apart and doubling, before the turn is left for restart recovery. */
  endTurnAttempts: number;
}

export const defaultWorkerOptions: WorkerOptions = {
  flushMs: 50,
  flushBytes: 4096,
  turnTimeoutMs: 15 * 60 * 1000,
  stallTimeoutMs: 120_000,
  cancelPollMs: 0,
  endTurnAttempts: 5,
};

/** What `runInvocation` needs, passed in so that the gateway and the Lambda share it. */
export interface WorkerDependencies {
  provider: ModelProvider;
  store: Store;
  publisher: Publisher;
  /** Milliseconds since the epoch; `Date.now` by default. */
  clock?: () => number;
  logger?: Logger;
  options?: Partial<WorkerOptions>;
  /** Aborted by the invoker to cancel the turn or to shut down; its `reason` is an `AbortReason`. */
  signal?: AbortSignal;
  /** Called for each part the provider yields (metrics). */
  onPart?: (part: StreamPart, elapsedMs: number) => void;
}

/** How a turn ended. */
export interface TurnOutcome {
  status: Exclude<TurnStatus, 'RUNNING'>;
  /** The text the model produced in this turn, as stored. */
  text: string;
  /** The terminal event. */
  event: ConversationEvent;
}

/** Runs one turn to its end. Never rejects for model or store failures: those end the turn with ERROR. */
export async function runInvocation(invocation: InvocationEvent, deps: WorkerDependencies): Promise<TurnOutcome> {
  const options = { ...defaultWorkerOptions, ...deps.options };
  const clock = deps.clock ?? Date.now;
  const logger = (deps.logger ?? silentLogger).child({
    conversationId: invocation.conversationId,
    turn: invocation.turn,
  });
  const { conversationId, turn } = invocation;
  const startedAt = clock();

  const context = await deps.store.turnContext(conversationId, turn);
  let seq = context.lastSeq;
  const textParts: string[] = [];

  const modelAbort = new AbortController();
  const abort = (reason: AbortReason): void => {
    if (!modelAbort.signal.aborted) modelAbort.abort(reason);
  };
  const onExternalAbort = (): void => abort(toAbortReason(deps.signal?.reason));
  if (deps.signal?.aborted) onExternalAbort();
  deps.signal?.addEventListener('abort', onExternalAbort, { once: true });

  const turnTimer = setTimeout(() => abort('timeout'), Math.max(0, options.turnTimeoutMs - (clock() - startedAt)));
  const cancelPoll =
    options.cancelPollMs > 0
      ? setInterval(() => {
          deps.store.isCancelRequested(conversationId, turn).then(
            (requested) => requested && abort('cancel'),
            (error: unknown) => logger.warn('cancel-poll-failed', { error }),
          );
        }, options.cancelPollMs)
      : undefined;

  const coalescer = new Coalescer({
    flushMs: options.flushMs,
    flushBytes: options.flushBytes,
    flush: async (text) => {
      const event = makeEvent({ conversationId, turn, seq: seq + 1, type: 'CHUNK', chunk: text, createdAt: clock() });
      try {
        await deps.store.appendEvents([event]);
      } catch (error) {
        abort('store');
        throw error;
      }
      seq = event.seq;
      textParts.push(text);
      await publishSafely(deps.publisher, [event], logger);
    },
  });

  let finish: Extract<StreamPart, { type: 'finish' }> | undefined;
  let failure: Extract<StreamPart, { type: 'error' }> | undefined;
  let unexpected: { id: string; error: unknown } | undefined;

  try {
    if (!modelAbort.signal.aborted) {
      const stream = deps.provider.stream({
        modelId: invocation.modelId,
        system: invocation.system,
        messages: buildMessages(context.history, invocation.prompt),
        maxTokens: invocation.maxTokens,
        temperature: invocation.temperature,
        topP: invocation.topP,
        signal: modelAbort.signal,
      });
      await consumeStream(stream, options.stallTimeoutMs, modelAbort.signal, () => abort('stall'), (part) => {
        deps.onPart?.(part, clock() - startedAt);
        if (part.type === 'text-delta') {
          coalescer.push(part.delta);
          return false;
        }
        if (part.type === 'finish') finish = part;
        else failure = part;
        return true;
      });
    }
  } catch (error) {
    if (!modelAbort.signal.aborted) {
      unexpected = { id: randomUUID(), error };
      logger.error('provider-threw', { errorId: unexpected.id, error });
    }
  } finally {
    clearTimeout(turnTimer);
    if (cancelPoll !== undefined) clearInterval(cancelPoll);
    deps.signal?.removeEventListener('abort', onExternalAbort);
  }

  let storeFailure: unknown;
  try {
    await coalescer.drain();
  } catch (error) {
    storeFailure = error;
  } finally {
    coalescer.dispose();
  }

  const terminal = terminalFields({
    reason: modelAbort.signal.aborted ? toAbortReason(modelAbort.signal.reason) : undefined,
    storeFailure,
    finish,
    failure,
    unexpected,
    options,
  });
  const event = makeEvent({ conversationId, turn, seq: seq + 1, createdAt: clock(), ...terminal });
  const text = textParts.join('');
  // The terminal event is stored, then published. When the store refuses it (a lock held, a full
  // disk), subscribers are told all the same, and the store gets it as soon as it takes writes
  // again, within a bounded number of attempts.
  const stored = await storeEnd(deps.store, event, text);
  await publishSafely(deps.publisher, [event], logger);
  if (stored !== true) await endTurnWithRetries(deps.store, event, text, options.endTurnAttempts, logger, stored.error);
  logger.info('turn-ended', {
    type: event.type,
    errorCode: event.errorCode,
    seq: event.seq,
    durationMs: clock() - startedAt,
    outputBytes: Buffer.byteLength(text, 'utf8'),
  });
  return { status: event.type === 'CHUNK' ? 'ERROR' : event.type, text, event };
}

type TerminalFields = Pick<ConversationEvent, 'type'> & Partial<ConversationEvent>;

function terminalFields(input: {
  reason: AbortReason | undefined;
  storeFailure: unknown;
  finish: Extract<StreamPart, { type: 'finish' }> | undefined;
  failure: Extract<StreamPart, { type: 'error' }> | undefined;
  unexpected: { id: string; error: unknown } | undefined;
  options: WorkerOptions;
}): TerminalFields {
  const { reason, storeFailure, finish, failure, unexpected, options } = input;
  if (storeFailure !== undefined || reason === 'store') {
    const cause = asLongrunError(storeFailure)?.message ?? String((storeFailure as Error | undefined)?.message ?? storeFailure);
    return {
      type: 'ERROR',
      errorCode: 'StoreError',
      error: `The turn stopped because its events could not be stored: ${cause}. The text stored so far is kept; try again once the store is writable.`,
    };
  }
  switch (reason) {
    case 'cancel':
      return { type: 'CANCELLED' };
    case 'shutdown':
      return {
        type: 'ERROR',
        errorCode: 'Interrupted',
        error: 'The turn was interrupted because the server shut down. The text so far is stored; start the turn again to continue.',
      };
    case 'timeout':
      return {
        type: 'ERROR',
        errorCode: 'TurnTimeout',
        error: `The turn ran longer than ${options.turnTimeoutMs} ms (LONGRUN_TURN_TIMEOUT_MS) and was stopped.`,
      };
    case 'stall':
      return {
        type: 'ERROR',
        errorCode: 'StallTimeout',
        error: `The model sent nothing for ${options.stallTimeoutMs} ms (LONGRUN_STALL_TIMEOUT_MS), so the turn was stopped.`,
      };
    case undefined:
      break;
  }
  if (finish) {
    return {
      type: 'COMPLETE',
      stopReason: finish.stopReason,
      usage: finish.usage ?? null,
      latencyMs: finish.latencyMs ?? null,
    };
  }
  if (failure) {
    return { type: 'ERROR', errorCode: failure.code, error: failure.message };
  }
  if (unexpected) {
    return { type: 'ERROR', errorCode: 'InternalError', error: `internal error (id ${unexpected.id})` };
  }
  return {
    type: 'ERROR',
    errorCode: 'IncompleteStream',
    error: 'The model stream ended without saying it had finished; the answer may be cut short.',
  };
}

/** One attempt at storing the end of the turn: true, or the store's error. */
async function storeEnd(store: Store, event: ConversationEvent, assistantText: string): Promise<true | { error: unknown }> {
  try {
    await store.endTurn({ event, assistantText });
    return true;
  } catch (error) {
    return { error };
  }
}

/** Attempts 2 … `attempts` at storing the end of the turn, 250 ms apart and doubling, after the first failed with `error`. */
async function endTurnWithRetries(
  store: Store,
  event: ConversationEvent,
  assistantText: string,
  attempts: number,
  logger: Logger,
  error: unknown,
): Promise<void> {
  let last = error;
  for (let attempt = 2; attempt <= attempts; attempt += 1) {
    logger.warn('end-turn-retry', { error: last, attempt: attempt - 1 });
    await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** (attempt - 2)));
    const result = await storeEnd(store, event, assistantText);
    if (result === true) return;
    last = result.error;
  }
  // The store still refuses (disk full, database gone): the turn stays RUNNING in the store and
  // the next start of the gateway closes it.
  logger.error('end-turn-failed', { error: last, type: event.type, attempts });
}

/** The history as the model sees it: earlier turns that produced an answer, then the new prompt. */
function buildMessages(history: Message[], prompt: string): Array<Pick<Message, 'role' | 'content'>> {
  const answered = new Set(history.filter((m) => m.role === 'assistant' && m.content.length > 0).map((m) => m.turn));
  const messages: Array<Pick<Message, 'role' | 'content'>> = [];
  for (const message of history) {
    // A turn that produced no answer is left out, so user and assistant messages alternate, as
    // Bedrock's Converse API requires.
    if (answered.has(message.turn)) messages.push({ role: message.role, content: message.content });
  }
  messages.push({ role: 'user', content: prompt });
  return messages;
}

async function publishSafely(publisher: Publisher, events: ConversationEvent[], logger: Logger): Promise<void> {
  try {
    await publisher.publish(events);
  } catch (error) {
    // The events are stored; subscribers recover them with conversationEvents(afterSeq).
    logger.warn('publish-failed', { error, seq: events[0]?.seq });
  }
}

function toAbortReason(reason: unknown): AbortReason {
  return reason === 'cancel' || reason === 'shutdown' || reason === 'timeout' || reason === 'stall' || reason === 'store'
    ? reason
    : 'cancel';
}

/**
 * Reads the stream, handing each part to `onPart`, until `onPart` returns true (it wants no more
 * parts), the stream ends, nothing arrives for `stallMs` (then it calls `onStall`, which aborts the
 * model), or `signal` aborts, even if the provider does not. Resolves then; rejects when the
 * provider throws (or `onPart` does). Parts that arrive after it stopped are ignored. At the end it
 * ends the provider's iterator without waiting for a hung provider.
 *
 * Built for thousands of parts a second: it drives the provider's iterator itself, so a part costs
 * the provider's `next()` and one reaction on its promise (no wrapper promise or generator of its
 * own); one timer serves the whole stream (re-armed only when it fires early); and a stall or an
 * abort settles it directly, so nothing accumulates on a long-lived promise over a long turn.
 */
function consumeStream(
  stream: AsyncIterable<StreamPart>,
  stallMs: number,
  signal: AbortSignal,
  onStall: () => void,
  onPart: (part: StreamPart) => boolean,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const iterator = stream[Symbol.asyncIterator]();
    let ended = false;
    let lastProgress = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const end = (how: 'done' | 'stalled' | { error: unknown }): void => {
      if (ended) return;
      ended = true;
      if (how === 'stalled') {
        try {
          onStall();
        } catch (error) {
          how = { error };
        }
      }
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      try {
        // Ends the provider's generator (and so its HTTP stream) without waiting for a hung provider.
        void iterator.return?.()?.catch(() => undefined);
      } catch (error) {
        if (typeof how !== 'object') how = { error };
      }
      if (typeof how === 'object') reject(how.error);
      else resolve();
    };
    const onAbort = (): void => end('done');
    const watch = (): void => {
      const idle = performance.now() - lastProgress;
      if (idle >= stallMs) end('stalled');
      else timer = setTimeout(watch, stallMs - idle);
    };
    const onError = (error: unknown): void => end({ error });
    const onResult = (result: IteratorResult<StreamPart>): void => {
      if (ended) return;
      let wantsMore: boolean;
      try {
        if (result.done) {
          wantsMore = false;
        } else {
          lastProgress = performance.now();
          wantsMore = !onPart(result.value);
        }
      } catch (error) {
        end({ error });
        return;
      }
      if (!wantsMore) end('done');
      // `onPart` may have ended the stream already (an abort it caused).
      else if (!ended) pull();
    };
    const pull = (): void => {
      try {
        iterator.next().then(onResult, onError);
      } catch (error) {
        end({ error });
      }
    };
    if (signal.aborted) {
      end('done');
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(watch, stallMs);
    pull();
  });
}

export type { Usage };
