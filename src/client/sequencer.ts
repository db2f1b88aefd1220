/**
 * Puts a conversation's events back in order. Live events (from the subscription) and stored
 * events (from the `conversationEvents` backfill) are offered in whatever order they arrive, with
 * duplicates; the sequencer releases each `seq` exactly once, in order, and holds back an event
 * that arrives ahead of a gap until the gap is filled. It is pure: no I/O, no timers.
 */

/** Orders items by `seq` (consecutive integers); see the module comment. */
export class EventSequencer<T extends { readonly seq: number }> {
  private position: number | undefined;
  private readonly waiting = new Map<number, T>();

  /** The last `seq` released (or skipped by `begin`); undefined until `begin` is called. */
  get cursor(): number | undefined {
    return this.position;
  }

  /** True when events are held back behind a gap: a backfill is needed to fill it. */
  get hasGap(): boolean {
    return this.position !== undefined && this.waiting.size > 0;
  }

  /** Events held back (behind a gap, or because `begin` has not been called yet). */
  get held(): number {
    return this.waiting.size;
  }

  /**
   * Sets where the stream starts: events with `seq <= afterSeq` are old and dropped. Until this is
   * called, everything offered is held. Returns the events that can be released now, in order.
   * Calling it a second time has no effect and returns nothing.
   */
  begin(afterSeq: number): T[] {
    if (this.position !== undefined) return [];
    this.position = afterSeq;
    for (const seq of this.waiting.keys()) if (seq <= afterSeq) this.waiting.delete(seq);
    return this.release();
  }

  /**
   * Offers one event. Returns the events that can be released now, in order: none when it is a
   * duplicate, is older than the cursor, or waits behind a gap. An event without an integer `seq`
   * is ignored.
   */
  offer(item: T): T[] {
    const { seq } = item;
    if (!Number.isInteger(seq) || seq < 1) return [];
    if (this.position !== undefined && seq <= this.position) return [];
    if (!this.waiting.has(seq)) this.waiting.set(seq, item);
    return this.position === undefined ? [] : this.release();
  }

  private release(): T[] {
    const released: T[] = [];
    let next = this.waiting.get(this.position! + 1);
    while (next !== undefined) {
      this.waiting.delete(next.seq);
      this.position = next.seq;
      released.push(next);
      next = this.waiting.get(this.position + 1);
    }
    return released;
  }
}
