/**
 * The in-process publisher: the local worker hands events straight to the gateway's fan-out.
 * It does what AppSync does with the AppSync publisher's mutations: `publishEvent` reaches
 * `onConversationEvent`, and a CHUNK's `sendChunk` reaches the pattern's `onReceiveChunk`.
 */
import type { Hub } from '../gateway/hub.js';
import type { Publisher } from './types.js';

/** Creates a publisher that delivers to `hub` synchronously. */
export function createInProcessPublisher(hub: Hub): Publisher {
  return {
    async publish(events) {
      for (const event of events) {
        hub.publish('onConversationEvent', event.conversationId, event);
        if (event.type === 'CHUNK' && event.chunk !== null) {
          hub.publish('onReceiveChunk', event.conversationId, { conversationId: event.conversationId, chunk: event.chunk });
        }
      }
    },
  };
}
