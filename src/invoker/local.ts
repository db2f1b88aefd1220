/**
 * The local Event-mode invoker: runs turns in this process on a bounded pool
 * (LONGRUN_MAX_CONCURRENT_TURNS). Turns beyond the bound wait in order of arrival.
 */
import type { InvocationEvent } from '../domain.js';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { AbortReason } from '../worker/run-invocation.js';
import type { Invoker } from './types.js';

/** Runs one turn; `signal` aborts it with an `AbortReason`. Must not reject (errors are logged). */
export type TurnRunner = (event: InvocationEvent, signal: AbortSignal) => Promise<unknown>;

interface Job {
  event: InvocationEvent;
  controller: AbortController;
}

/** Creates the local invoker. */
export function createLocalInvoker(options: { run: TurnRunner; maxConcurrent: number; logger?: Logger }): Invoker {
  const logger = options.logger ?? silentLogger;
  const queue: Job[] = [];
  const active = new Map<string, Job>();
  const settled = new Set<Promise<unknown>>();
  let stopping = false;

  const start = (job: Job): void => {
    active.set(job.event.conversationId, job);
    const done = options
      .run(job.event, job.controller.signal)
      .catch((error: unknown) => logger.error('turn-failed', { conversationId: job.event.conversationId, error }))
      .finally(() => {
        if (active.get(job.event.conversationId) === job) active.delete(job.event.conversationId);
        settled.delete(done);
        pump();
      });
    settled.add(done);
  };

  const pump = (): void => {
    while (!stopping && active.size < options.maxConcurrent && queue.length > 0) start(queue.shift()!);
  };

  const abort = (job: Job, reason: AbortReason): void => {
    if (!job.controller.signal.aborted) job.controller.abort(reason);
  };

  return {
    dispatch(event) {
      if (stopping) throw new Error('The invoker is stopping and takes no new turns.');
      queue.push({ event, controller: new AbortController() });
      pump();
    },
    cancel(conversationId) {
      const running = active.get(conversationId);
      if (running) {
        abort(running, 'cancel');
        return true;
      }
      const index = queue.findIndex((job) => job.event.conversationId === conversationId);
      if (index < 0) return false;
      // A queued turn is run at once with its signal already aborted, so the worker writes its
      // CANCELLED event now rather than when a slot frees up.
      const [job] = queue.splice(index, 1);
      abort(job!, 'cancel');
      start(job!);
      return true;
    },
    get running() {
      return active.size;
    },
    get queued() {
      return queue.length;
    },
    async stop() {
      stopping = true;
      for (const job of queue.splice(0)) {
        abort(job, 'shutdown');
        start(job);
      }
      for (const job of active.values()) abort(job, 'shutdown');
      while (settled.size > 0) await Promise.allSettled([...settled]);
    },
  };
}
