/**
 * A turn thread: runs `runInvocation` for the turns the gateway hands it, with its own model
 * provider and its own connection to the SQLite database, as the Lambda runs them beside AppSync.
 * The gateway's thread is left to serve sockets; this one sends it only what it must fan out.
 *
 * Everything this thread sends (events to publish, metric counts, log lines, ended turns) is
 * gathered and posted as one message per turn of this thread's event loop, so the gateway's
 * thread pays one message per batch, not one per event. Order is kept: a turn's `ended` follows
 * its last events.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ConversationEvent } from '../domain.js';
import type { LogFields, Logger, LogLevel } from '../log.js';
import { createProvider } from '../providers/index.js';
import type { ModelProvider, StreamPart } from '../providers/types.js';
import type { Publisher } from '../publisher/types.js';
import { createSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/types.js';
import { runInvocation } from './run-invocation.js';
import type { FromThread, ToThread, TurnThreadSetup } from './threads.js';

const port = parentPort!;
const setup = workerData as TurnThreadSetup;
const clock = setup.preciseClock ? () => performance.timeOrigin + performance.now() : Date.now;

let outbox: FromThread[] = [];
let tokens = 0;
let firstTokenMs: number[] = [];
let scheduled = false;

const flushOutbox = (): void => {
  scheduled = false;
  if (tokens > 0 || firstTokenMs.length > 0) outbox.unshift({ type: 'parts', tokens, firstTokenMs });
  tokens = 0;
  firstTokenMs = [];
  const batch = outbox;
  outbox = [];
  if (batch.length > 0) port.postMessage(batch);
};

const send = (message: FromThread): void => {
  outbox.push(message);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushOutbox);
  }
};

/** Log lines go to the gateway's logger, so the process has one log whatever runs where. */
const levels: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
const threadLogger = (base: LogFields): Logger => {
  const emit =
    (level: Exclude<LogLevel, 'silent'>) =>
    (event: string, fields?: LogFields): void => {
      if (levels[level] >= levels[setup.logLevel]) send({ type: 'log', level, event, fields: { ...base, ...fields } });
    };
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    child: (fields) => threadLogger({ ...base, ...fields }),
  };
};
const logger = threadLogger({});

/** Hands events to the gateway's publisher. Resolves at once: the gateway fans them out in order. */
const publisher: Publisher = {
  async publish(events: ConversationEvent[]) {
    send({ type: 'publish', events });
  },
};

const observeTurn = (): ((part: StreamPart, elapsedMs: number) => void) => {
  let first = true;
  return (part, elapsedMs) => {
    if (part.type !== 'text-delta') return;
    tokens += 1;
    if (first) {
      first = false;
      firstTokenMs.push(elapsedMs);
    }
  };
};

const running = new Map<number, AbortController>();
let services: { store: Store; provider: ModelProvider } | undefined;
let waiting: ToThread[] = [];

const handle = (message: ToThread): void => {
  if (!services) {
    waiting.push(message);
    return;
  }
  const { store, provider } = services;
  switch (message.type) {
    case 'run': {
      const controller = new AbortController();
      if (message.aborted !== undefined) controller.abort(message.aborted);
      running.set(message.id, controller);
      runInvocation(message.event, {
        provider,
        store,
        publisher,
        clock,
        logger,
        signal: controller.signal,
        options: setup.workerOptions,
        onPart: observeTurn(),
      }).then(
        () => send({ type: 'ended', id: message.id }),
        (error: unknown) => send({ type: 'ended', id: message.id, error: String((error as Error)?.stack ?? error) }),
      ).finally(() => running.delete(message.id));
      break;
    }
    case 'abort': {
      const controller = running.get(message.id);
      if (controller && !controller.signal.aborted) controller.abort(message.reason);
      break;
    }
    case 'close': {
      void close();
      break;
    }
  }
};

async function close(): Promise<void> {
  // The gateway stops its invoker (which ends every turn) before it closes the threads.
  await services?.store.close();
  await services?.provider.close?.();
  flushOutbox();
  port.postMessage([{ type: 'closed' }] satisfies FromThread[]);
  port.close();
}

port.on('message', handle);

try {
  // Its events go straight to the events table: the gateway's store moves only the events it
  // appended itself to its incoming file.
  const store = createSqliteStore({ path: setup.databasePath, incoming: false });
  const provider = await createProvider(setup.provider);
  services = { store, provider };
  port.postMessage([{ type: 'ready' }] satisfies FromThread[]);
  for (const message of waiting) handle(message);
  waiting = [];
} catch (error) {
  port.postMessage([{ type: 'failed', message: (error as Error)?.message ?? String(error) }] satisfies FromThread[]);
  port.close();
}
