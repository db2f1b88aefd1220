/**
 * The gateway's fan-out: subscribers register for (subscription field, conversationId), as
 * AppSync filters subscriptions on their arguments, and receive every value published there.
 *
 * A value is published with a memo shared by all its subscribers, so each distinct subscription
 * selection serialises it once, not once per subscriber (see `realtime/server.ts`).
 */

/** The subscription fields of the schema. */
export type Topic = 'onConversationEvent' | 'onReceiveChunk';

/** Receives published values; `memo` is shared by every listener of one publish. */
export type Listener = (value: unknown, memo: Map<string, string>) => void;

export class Hub {
  // Topic, then conversation: a publish looks up the conversation id it was given (whose hash V8
  // has cached) instead of building and hashing a new `topic + id` key for every event.
  private readonly topics = new Map<Topic, Map<string, Set<Listener>>>();
  private count = 0;

  /** Registers a listener; returns the function that removes it (calling it again does nothing). */
  subscribe(topic: Topic, conversationId: string, listener: Listener): () => void {
    let conversations = this.topics.get(topic);
    if (!conversations) {
      conversations = new Map();
      this.topics.set(topic, conversations);
    }
    let listeners = conversations.get(conversationId);
    if (!listeners) {
      listeners = new Set();
      conversations.set(conversationId, listeners);
    }
    listeners.add(listener);
    this.count += 1;
    return () => {
      if (listeners.delete(listener)) this.count -= 1;
      // Only a set that is still registered is dropped: a late second call must not remove the
      // set of subscribers who came after.
      if (listeners.size === 0 && conversations.get(conversationId) === listeners) conversations.delete(conversationId);
    };
  }

  /** Delivers a value to the listeners of (topic, conversationId); a listener that throws does not stop the others. */
  publish(topic: Topic, conversationId: string, value: unknown): void {
    const listeners = this.topics.get(topic)?.get(conversationId);
    if (!listeners) return;
    const memo = new Map<string, string>();
    for (const listener of listeners) {
      try {
        listener(value, memo);
      } catch {
        // A broken subscriber is closed by its own connection; others still get the value.
      }
    }
  }

  /** Subscriptions currently registered. */
  get size(): number {
    return this.count;
  }

  /**
   * An async iterator over a topic, for graphql-js `subscribe` (the graphql-ws endpoint). Values
   * published while the consumer is busy are queued in order; `accept` can refuse deliveries.
   */
  iterate(topic: Topic, conversationId: string, accept: () => boolean = () => true): AsyncIterableIterator<unknown> {
    const queue: unknown[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    const unsubscribe = this.subscribe(topic, conversationId, (value) => {
      if (!accept()) return;
      queue.push(value);
      wake?.();
    });
    const finish = (): IteratorResult<unknown> => {
      done = true;
      unsubscribe();
      wake?.();
      return { value: undefined, done: true };
    };
    const iterator: AsyncIterableIterator<unknown> = {
      async next() {
        while (queue.length === 0 && !done) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
        if (queue.length > 0) return { value: queue.shift(), done: false };
        return { value: undefined, done: true };
      },
      async return() {
        return finish();
      },
      async throw(error?: unknown) {
        finish();
        throw error;
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }
}
