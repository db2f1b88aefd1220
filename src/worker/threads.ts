/**
 * Turn threads: the local gateway's way of running turns beside the thread that serves sockets,
 * as the Lambda runs them beside AppSync. Each thread (`thread-entry.ts`) has its own model
 * provider and SQLite connection and runs `runInvocation` unchanged; the gateway's thread keeps
 * HTTP, the realtime protocols and the fan-out, and receives each turn's stored events in batches
 * to publish. `startTurnThreads` gives a `TurnRunner`, so the local invoker keeps its queue,
 * cancel and shutdown as they are.
 *
 * Under load the gateway's one event loop is the limit: storing and coalescing every delta took
 * about half of it (docs/benchmarks.md). With turn threads that half runs on another core.
 */
import { Worker } from 'node:worker_threads';
import type { ProviderConfig } from '../config.js';
import type { ConversationEvent, InvocationEvent } from '../domain.js';
import type { TurnRunner } from '../invoker/local.js';
import type { LogFields, Logger, LogLevel } from '../log.js';
import type { Publisher } from '../publisher/types.js';
import type { AbortReason, WorkerOptions } from './run-invocation.js';

/** What a turn thread is started with (cloned into it, so plain data only). */
export interface TurnThreadSetup {
  /** The SQLite file; threads cannot share an in-memory database. */
  databasePath: string;
  provider: ProviderConfig;
  workerOptions: Partial<WorkerOptions>;
  logLevel: LogLevel;
  /** Stamp events with `performance.timeOrigin + performance.now()` (µs) instead of `Date.now`. */
  preciseClock: boolean;
}

/** Messages to a turn thread. */
export type ToThread =
  | { type: 'run'; id: number; event: InvocationEvent; aborted?: AbortReason }
  | { type: 'abort'; id: number; reason: AbortReason }
  | { type: 'close' };

/** Messages from a turn thread; each message is an array of these, in order. */
export type FromThread =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'publish'; events: ConversationEvent[] }
  | { type: 'parts'; tokens: number; firstTokenMs: number[] }
  | { type: 'log'; level: Exclude<LogLevel, 'silent'>; event: string; fields: LogFields }
  | { type: 'ended'; id: number; error?: string }
  | { type: 'closed' };

export interface TurnThreadsOptions {
  /** Threads to start (at least 1). */
  count: number;
  setup: TurnThreadSetup;
  /** Publishes the threads' events on this thread (the gateway's fan-out). */
  publisher: Publisher;
  /** Receives the threads' metric counts (see `GatewayMetrics.recordParts`). */
  recordParts?: (tokens: number, firstTokenMs: readonly number[]) => void;
  logger: Logger;
  /**
   * Called with the turns of a thread that died (an uncaught error in it) before they end: the
   * gateway closes them in the store so their clients see an end.
   */
  onLost: (turns: InvocationEvent[]) => Promise<void>;
}

export interface TurnThreads {
  /** Runs a turn on the thread with the fewest turns; resolves when it has ended. */
  run: TurnRunner;
  /** Turns running on the threads now. */
  readonly running: number;
  /** The live threads (diagnostics; tests end one to see its turns closed). */
  readonly workers: readonly Worker[];
  /** Ends the threads; call once no turn runs (after the invoker's `stop`). */
  close(): Promise<void>;
}

interface Turn {
  event: InvocationEvent;
  ended: () => void;
}

interface TurnThread {
  worker: Worker;
  turns: Map<number, Turn>;
  exited: Promise<void>;
  alive: boolean;
}

/** Starts `count` turn threads; resolves once each has opened its store and provider. */
export async function startTurnThreads(options: TurnThreadsOptions): Promise<TurnThreads> {
  const { logger } = options;
  let nextId = 0;
  let closing = false;
  let threads: TurnThread[] = [];
  let replacing: Promise<void> | undefined;

  const receive = (thread: TurnThread, batch: FromThread[]): void => {
    for (const message of batch) {
      switch (message.type) {
        case 'publish':
          options.publisher.publish(message.events).catch((error: unknown) => logger.warn('publish-failed', { error, seq: message.events[0]?.seq }));
          break;
        case 'parts':
          options.recordParts?.(message.tokens, message.firstTokenMs);
          break;
        case 'log':
          logger[message.level](message.event, message.fields);
          break;
        case 'ended': {
          const turn = thread.turns.get(message.id);
          thread.turns.delete(message.id);
          if (message.error !== undefined) logger.error('turn-failed', { conversationId: turn?.event.conversationId, error: message.error });
          turn?.ended();
          break;
        }
        default:
          break;
      }
    }
  };

  const lose = async (thread: TurnThread, error: unknown): Promise<void> => {
    if (!thread.alive) return;
    thread.alive = false;
    if (closing) return;
    const turns = [...thread.turns.values()];
    thread.turns.clear();
    logger.error('turn-thread-died', { error, turns: turns.length });
    try {
      await options.onLost(turns.map((turn) => turn.event));
    } catch (failure) {
      logger.error('turn-thread-recovery-failed', { error: failure });
    }
    for (const turn of turns) turn.ended();
  };

  const spawn = async (): Promise<TurnThread> => {
    const [entry, how] = threadEntry();
    const worker = new Worker(entry, { ...how, workerData: options.setup });
    const thread: TurnThread = {
      worker,
      turns: new Map(),
      alive: true,
      exited: new Promise((resolve) => worker.once('exit', () => resolve())),
    };
    let started = false;
    const startup = new Promise<void>((resolve, reject) => {
      worker.on('message', (batch: FromThread[]) => {
        if (started) return receive(thread, batch);
        const first = batch[0];
        if (first?.type === 'failed') reject(new Error(`A turn thread could not start: ${first.message}`));
        started = first?.type === 'ready';
        if (started) resolve();
      });
      worker.on('error', (error) => (started ? void lose(thread, error) : reject(error)));
      worker.on('exit', (code) => {
        const error = new Error(`The turn thread exited with code ${code}.`);
        if (started) void lose(thread, error);
        else reject(error);
      });
    });
    try {
      await startup;
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    return thread;
  };

  /** The live thread with the fewest turns; a dead one is replaced first. */
  const pick = async (): Promise<TurnThread> => {
    while (threads.some((thread) => !thread.alive)) {
      replacing ??= spawn()
        .then((fresh) => void (threads = [...threads.filter((thread) => thread.alive), fresh]))
        .finally(() => (replacing = undefined));
      await replacing;
    }
    return threads.reduce((best, thread) => (thread.turns.size < best.turns.size ? thread : best));
  };

  const started = await Promise.allSettled(Array.from({ length: Math.max(1, options.count) }, spawn));
  threads = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) {
    await Promise.all(threads.map((thread) => thread.worker.terminate()));
    throw failed.reason;
  }

  return {
    async run(event, signal) {
      let thread: TurnThread;
      try {
        thread = await pick();
      } catch (error) {
        logger.error('turn-thread-failed-to-start', { error });
        await options.onLost([event]).catch((failure: unknown) => logger.error('turn-thread-recovery-failed', { error: failure }));
        return;
      }
      const id = ++nextId;
      const post = (message: ToThread): void => thread.worker.postMessage(message);
      const onAbort = (): void => post({ type: 'abort', id, reason: signal.reason as AbortReason });
      await new Promise<void>((ended) => {
        thread.turns.set(id, { event, ended });
        // A turn aborted before it runs (cancelled while queued) starts aborted, as it would here.
        post({ type: 'run', id, event, ...(signal.aborted ? { aborted: signal.reason as AbortReason } : {}) });
        if (!signal.aborted) signal.addEventListener('abort', onAbort, { once: true });
      });
      signal.removeEventListener('abort', onAbort);
    },
    get running() {
      return threads.reduce((sum, thread) => sum + thread.turns.size, 0);
    },
    get workers() {
      return threads.filter((thread) => thread.alive).map((thread) => thread.worker);
    },
    async close() {
      closing = true;
      await Promise.all(
        threads.map(async (thread) => {
          if (thread.alive) thread.worker.postMessage({ type: 'close' } satisfies ToThread);
          await Promise.race([thread.exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
          await thread.worker.terminate();
        }),
      );
    },
  };
}

/**
 * The thread's entry: the compiled `thread-entry.js` beside this file, or, when this file runs
 * from its TypeScript source (tests, `tsx`), the `.ts` entry loaded through tsx.
 */
function threadEntry(): [string | URL, { eval?: boolean }] {
  if (!import.meta.url.endsWith('.ts')) return [new URL('./thread-entry.js', import.meta.url), {}];
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./thread-entry.ts', import.meta.url).href;
  return [`import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); })`, { eval: true }];
}
