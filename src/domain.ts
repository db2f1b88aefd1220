/**
 * The domain of longrun: conversations, turns, messages and the numbered events that a turn
 * produces. Every layer (worker, store, publisher, gateway, client) speaks these types.
 */

/** The kinds of event a turn produces: any number of CHUNKs, then exactly one terminal event. */
export type EventType = 'CHUNK' | 'COMPLETE' | 'ERROR' | 'CANCELLED';

/** The status of a turn, and of a conversation (the status of its last turn). */
export type TurnStatus = 'RUNNING' | 'COMPLETE' | 'ERROR' | 'CANCELLED';

/** Tokens the model read and wrote in one turn. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
}

/**
 * One numbered event of a conversation. `seq` starts at 1 and grows by exactly 1 per event,
 * across turns, so a client that knows the last `seq` it saw can resume without gap or repeat.
 */
export interface ConversationEvent {
  conversationId: string;
  turn: number;
  seq: number;
  type: EventType;
  chunk: string | null;
  error: string | null;
  errorCode: string | null;
  stopReason: string | null;
  usage: Usage | null;
  latencyMs: number | null;
  /** Milliseconds since the epoch, from the worker's clock. */
  createdAt: number;
}

/** A message of the conversation's history, as the model sees it. */
export interface Message {
  turn: number;
  role: 'user' | 'assistant';
  content: string;
}

/** One turn of a conversation: a user prompt and the model's answer. */
export interface Turn {
  turn: number;
  status: TurnStatus;
  modelId: string | null;
  startedAt: number;
  endedAt: number | null;
}

/** A conversation as `Query.conversation` returns it. */
export interface Conversation {
  conversationId: string;
  /** The principal that owns it (API key id or OIDC subject); null when ownership is not enforced. */
  owner: string | null;
  status: TurnStatus;
  lastSeq: number;
  createdAt: number;
  updatedAt: number;
  turns: Turn[];
  messages: Message[];
}

/** Parameters of one turn, as `startConversation` receives them. */
export interface TurnParameters {
  system?: string | undefined;
  modelId?: string | undefined;
  maxTokens?: number | undefined;
  temperature?: number | undefined;
  topP?: number | undefined;
}

/**
 * What the invoker hands to the worker: the Lambda Event payload in AWS, the same object locally.
 * The turn has already been reserved in the store (`Store.beginTurn`).
 */
export interface InvocationEvent extends TurnParameters {
  conversationId: string;
  turn: number;
  prompt: string;
}

/** True for the event types that end a turn. */
export function isTerminal(type: EventType): boolean {
  return type !== 'CHUNK';
}

/** Builds an event with every optional field set to null. */
export function makeEvent(
  fields: Pick<ConversationEvent, 'conversationId' | 'turn' | 'seq' | 'type' | 'createdAt'> &
    Partial<ConversationEvent>,
): ConversationEvent {
  return {
    chunk: null,
    error: null,
    errorCode: null,
    stopReason: null,
    usage: null,
    latencyMs: null,
    ...fields,
  };
}

/**
 * A complete event from one whose optional fields may be missing or undefined (a GraphQL input, a
 * database item): every field in the order of the schema, absent ones as null.
 */
export function normaliseEvent(
  event: Pick<ConversationEvent, 'conversationId' | 'turn' | 'seq' | 'type' | 'createdAt'> & {
    [K in 'chunk' | 'error' | 'errorCode' | 'stopReason' | 'usage' | 'latencyMs']?: ConversationEvent[K] | undefined;
  },
): ConversationEvent {
  return {
    conversationId: event.conversationId,
    turn: event.turn,
    seq: event.seq,
    type: event.type,
    chunk: event.chunk ?? null,
    error: event.error ?? null,
    errorCode: event.errorCode ?? null,
    stopReason: event.stopReason ?? null,
    usage: event.usage ? { inputTokens: event.usage.inputTokens, outputTokens: event.usage.outputTokens } : null,
    latencyMs: event.latencyMs ?? null,
    createdAt: event.createdAt,
  };
}
