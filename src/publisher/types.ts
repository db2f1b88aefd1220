/**
 * The publisher interface: delivers stored events to subscribers. In-process (the gateway's own
 * fan-out) locally; AppSync over SigV4-signed HTTP in AWS. Events are published after they are
 * stored, in seq order; `seq` makes delivery idempotent for clients.
 */
import type { ConversationEvent } from '../domain.js';

export interface Publisher {
  /**
   * Publishes events of one conversation, in order. Each event reaches `onConversationEvent`
   * subscribers; CHUNK events also reach the pattern's `onReceiveChunk` subscribers.
   * Rejects when delivery failed after the publisher's own retries.
   */
  publish(events: ConversationEvent[]): Promise<void>;
  close?(): Promise<void>;
}
