/**
 * The store interface: conversations, messages and events. SQLite (local) and DynamoDB (AWS)
 * implement it and pass the same suite (`test/store/store.suite.ts`).
 *
 * Writes are idempotent by design: an event is keyed by (conversationId, seq) and a second write
 * of the same seq fails instead of duplicating, so a retried write never doubles a chunk.
 */
import type { Conversation, ConversationEvent, InvocationEvent, Message, TurnStatus } from '../domain.js';

/** What `beginTurn` needs: the turn's prompt and parameters, and who starts it. */
export interface BeginTurnInput {
  conversationId: string;
  prompt: string;
  modelId?: string | undefined;
  /** The principal starting the turn; a new conversation belongs to it. */
  owner?: string | null | undefined;
  now: number;
}

/** What the worker needs to run a turn. */
export interface TurnContext {
  /** Messages of earlier turns, oldest first (the current prompt is not included). */
  history: Message[];
  /** The seq of the last stored event; the turn's first event is lastSeq + 1. */
  lastSeq: number;
}

/** A turn that was running when the process stopped. */
export interface RunningTurn {
  conversationId: string;
  turn: number;
  lastSeq: number;
}

export interface Store {
  /**
   * Reserves the next turn of a conversation, creating the conversation if needed, and stores the
   * user's message. Throws `ConflictError` when a turn is running, `UnauthorizedError` when the
   * conversation belongs to another owner.
   */
  beginTurn(input: BeginTurnInput): Promise<InvocationEvent['turn']>;
  /** History and last seq for the worker. */
  turnContext(conversationId: string, turn: number): Promise<TurnContext>;
  /**
   * Stores events of a running turn, all or none. Throws `StoreError` on a duplicate seq or a
   * failed write.
   */
  appendEvents(events: ConversationEvent[]): Promise<void>;
  /**
   * Ends a turn atomically: stores its terminal event, the assistant's message (when not empty) and
   * the turn's status. Throws `StoreError` when the write fails; then nothing of it is stored.
   */
  endTurn(input: { event: ConversationEvent; assistantText: string }): Promise<void>;
  /** The conversation with its turns and messages, or null. */
  getConversation(conversationId: string): Promise<Conversation | null>;
  /** Events with seq > afterSeq, oldest first, at most `limit` (default: all). */
  listEvents(conversationId: string, afterSeq: number, limit?: number): Promise<ConversationEvent[]>;
  /** Marks the running turn for cancellation (read by workers that poll); false when none runs. */
  requestCancel(conversationId: string): Promise<boolean>;
  /** True when cancellation was requested for this turn. */
  isCancelRequested(conversationId: string, turn: number): Promise<boolean>;
  /** Turns whose status is RUNNING: after a restart, turns that were interrupted. */
  listRunningTurns(): Promise<RunningTurn[]>;
  /** Deletes a conversation with its messages and events; false when it did not exist. */
  deleteConversation(conversationId: string): Promise<boolean>;
  /**
   * Deletes conversations with no running turn that were last updated before `updatedBefore`
   * (ms since the epoch); resolves with how many. A store whose database expires items itself
   * (DynamoDB TTL) may leave this to it and resolve with 0.
   */
  pruneConversations(updatedBefore: number): Promise<number>;
  close(): Promise<void>;
}

export type { TurnStatus };
