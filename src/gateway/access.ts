/**
 * Who may use a conversation. With API keys (AppSync's API_KEY mode) anyone holding a valid key
 * may; with OpenID Connect every conversation belongs to the `sub` that started it, and anyone
 * else gets `Unauthorized` without learning whether the conversation exists.
 */
import type { Conversation } from '../domain.js';
import { LongrunError } from '../errors.js';
import type { Store } from '../store/types.js';
import type { Principal } from './auth.js';

/** Owners remembered for delivery-time checks; the oldest are forgotten past this many. */
const MAX_REMEMBERED_OWNERS = 100_000;

/** The refusal for a conversation the caller does not own (or that does not exist, in OIDC mode). */
export function conversationRefused(): LongrunError {
  return new LongrunError('UnauthorizedException', 'You are not authorized to access this conversation.');
}

export interface ConversationAccess {
  /** True when conversations have owners (OIDC mode). */
  readonly enforcesOwners: boolean;
  /** The owner a new conversation gets when `principal` starts it: its subject in OIDC mode, else none. */
  ownerFor(principal: Principal): string | null;
  /** Notes who owns a conversation, for delivery-time checks. */
  remember(conversationId: string, owner: string | null): void;
  forget(conversationId: string): void;
  /**
   * Loads a conversation for `principal`: null when it does not exist (API-key mode only);
   * throws `UnauthorizedException` when the caller may not use it.
   */
  load(principal: Principal, conversationId: string): Promise<Conversation | null>;
  /**
   * Checks a subscription at start and returns the test applied to each delivery: a subscriber
   * may wait for a conversation that does not exist yet, and receives it only if it becomes theirs.
   */
  gate(principal: Principal, conversationId: string): Promise<() => boolean>;
}

export function createConversationAccess(options: { store: Store; enforceOwners: boolean }): ConversationAccess {
  const owners = new Map<string, string | null>();
  const always = (): boolean => true;
  const remember = (conversationId: string, owner: string | null): void => {
    owners.delete(conversationId);
    owners.set(conversationId, owner);
    if (owners.size > MAX_REMEMBERED_OWNERS) owners.delete(owners.keys().next().value!);
  };
  return {
    enforcesOwners: options.enforceOwners,
    ownerFor: (principal) => (options.enforceOwners ? principal.id : null),
    remember,
    forget: (conversationId) => void owners.delete(conversationId),
    async load(principal, conversationId) {
      const conversation = await options.store.getConversation(conversationId);
      if (!options.enforceOwners || principal.mode === 'AWS_IAM') return conversation;
      if (conversation === null || conversation.owner !== principal.id) throw conversationRefused();
      return conversation;
    },
    async gate(principal, conversationId) {
      if (!options.enforceOwners) return always;
      const conversation = await options.store.getConversation(conversationId);
      if (conversation !== null) {
        if (conversation.owner !== principal.id) throw conversationRefused();
        remember(conversationId, conversation.owner);
      }
      return () => owners.get(conversationId) === principal.id;
    },
  };
}
