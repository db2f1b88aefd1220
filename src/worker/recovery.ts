/**
 * Closes turns that were running when the process stopped (a crash, `kill -9`, a lost Lambda) or
 * when the thread running them died: each gets an ERROR event after its last stored event, so
 * clients waiting on it see an end.
 */
import { makeEvent } from '../domain.js';
import type { Logger } from '../log.js';
import type { Publisher } from '../publisher/types.js';
import type { RunningTurn, Store } from '../store/types.js';

interface RecoveryOptions {
  clock: () => number;
  logger: Logger;
  publisher?: Publisher;
}

/** Ends every RUNNING turn in the store with ERROR `Interrupted`; returns how many it closed. */
export async function closeInterruptedTurns(store: Store, options: RecoveryOptions): Promise<number> {
  const running = await store.listRunningTurns();
  for (const turn of running) {
    await interruptTurn(store, turn, 'The turn was interrupted by a restart of the server.', options);
    options.logger.warn('turn-interrupted-by-restart', { conversationId: turn.conversationId, turn: turn.turn, seq: turn.lastSeq + 1 });
  }
  return running.length;
}

/**
 * Ends the given turns, where still RUNNING, with ERROR `Interrupted` (the turns of a turn thread
 * that died), as a restart would, so their clients see an end.
 */
export async function closeLostTurns(
  store: Store,
  lost: ReadonlyArray<{ conversationId: string; turn: number }>,
  options: RecoveryOptions,
): Promise<void> {
  const wanted = new Set(lost.map((turn) => `${turn.conversationId}\u0000${turn.turn}`));
  for (const turn of await store.listRunningTurns()) {
    if (!wanted.has(`${turn.conversationId}\u0000${turn.turn}`)) continue;
    await interruptTurn(store, turn, 'The turn was interrupted because the thread running it failed.', options);
    options.logger.warn('turn-interrupted-by-thread-failure', { conversationId: turn.conversationId, turn: turn.turn });
  }
}

/**
 * Ends one RUNNING turn with ERROR `Interrupted` (`why` opens the message), keeping the text it
 * stored as the assistant's message, and publishes that event.
 */
export async function interruptTurn(store: Store, turn: RunningTurn, why: string, options: RecoveryOptions): Promise<void> {
  const event = makeEvent({
    conversationId: turn.conversationId,
    turn: turn.turn,
    seq: turn.lastSeq + 1,
    type: 'ERROR',
    errorCode: 'Interrupted',
    error: `${why} The text so far is stored; start the turn again to continue.`,
    createdAt: options.clock(),
  });
  const assistantText = (await store.listEvents(turn.conversationId, 0))
    .filter((stored) => stored.turn === turn.turn && stored.type === 'CHUNK')
    .map((stored) => stored.chunk ?? '')
    .join('');
  await store.endTurn({ event, assistantText });
  await options.publisher?.publish([event]);
}
