/**
 * The invoker: Event-mode dispatch of turns. `dispatch` returns at once, as AppSync's Lambda
 * invocation with `invocationType: 'Event'` does; the turn runs in the background.
 */
import type { InvocationEvent } from '../domain.js';

export interface Invoker {
  /** Queues the turn and returns at once. */
  dispatch(event: InvocationEvent): void;
  /** Aborts the conversation's running or queued turn; false when it has none here. */
  cancel(conversationId: string): boolean;
  /** Turns running now. */
  readonly running: number;
  /** Turns waiting for a slot. */
  readonly queued: number;
  /** Stops taking turns, aborts every running and queued turn as `shutdown`, and waits for them to end. */
  stop(): Promise<void>;
}
