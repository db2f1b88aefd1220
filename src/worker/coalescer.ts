/**
 * Coalesces a model's text deltas into chunks: on average at most one chunk every `flushMs`, and
 * never a wait for a delta that keeps within that pace. It is a token bucket (GCRA): each chunk
 * moves the conversation's next slot `flushMs` later, counting from the slot or from now,
 * whichever is later; a delta that arrives no more than `BURST_SLOTS` slots ahead goes out at
 * once, and one that arrives sooner waits for its slot, gathered with whatever else arrives
 * meanwhile. `flushBytes` waiting also flush at once; `flushMs` 0 flushes every delta as it comes.
 *
 * The burst allowance is what keeps a model streaming at about the coalescing pace (20 tokens a
 * second against 50 ms) from waiting: its tokens come a little early and a little late. A plain
 * throttle (one chunk per `flushMs` from the last) makes each late token delay every later one of
 * the turn, since at that pace nothing is gained back; measured, that was most of a token's
 * latency (docs/benchmarks.md).
 *
 * A chunk also waits while the one before it is still being handed over (stored and published):
 * when the store or the event loop falls behind, each turn then sends fewer, larger chunks instead
 * of queueing more of them, so the delay stays at one hand-over rather than growing with the
 * queue. (`flushBytes` still bound a chunk's size, and `flushMs` 0 queues every delta.)
 *
 * The coalescer never splits a delta, so a multi-byte character is never cut. A chunk held for its
 * slot goes at the first tick of `SLOT_TICK_MS` (2 ms) after it, on a timer shared with every
 * coalescer due in that tick.
 */
export interface CoalescerOptions {
  /** The pace: on average at most one chunk per this many milliseconds; 0 sends every delta. */
  flushMs: number;
  /** Flush at once when this many UTF-8 bytes are waiting. */
  flushBytes: number;
  /** How many slots early a chunk may go (`BURST_SLOTS` by default; 0: strictly one per `flushMs`). */
  burst?: number;
  /** Receives each chunk; calls are made one at a time, in order. */
  flush: (text: string) => Promise<void>;
}

/**
 * How many slots early a chunk may go by default: after a pause, five chunks may go at once before
 * the pace holds; at 50 ms, a token may come 200 ms late without holding back the ones after it.
 * 1 and 2 were measured too: with 1, S2's token p99 stayed at about 260 ms (docs/benchmarks.md).
 */
export const BURST_SLOTS = 4;

export class Coalescer {
  private buffer: string[] = [];
  /**
   * The buffered UTF-8 bytes, counted lazily: `Buffer.byteLength` per delta is a cost at tens of
   * thousands of deltas a second, and a UTF-16 string of length n is at most 3n UTF-8 bytes, so
   * deltas are counted exactly only once that bound reaches `flushBytes`. The first
   * `countedDeltas` deltas of the buffer hold `countedBytes`; the rest hold at most `uncountedBound`.
   */
  private countedDeltas = 0;
  private countedBytes = 0;
  private uncountedBound = 0;
  /** The tick this coalescer waits for (`slotTicks`), while a chunk is held for its slot. */
  private waitingFor: number | undefined;
  private readonly onSlot = (): void => this.flushWhenFree();
  /** The next chunk's slot (performance.now()); -Infinity before the first chunk. */
  private nextSlot = Number.NEGATIVE_INFINITY;
  /** The chain of flushes, so chunks are written in order and errors surface in `drain`. */
  private pending: Promise<void> = Promise.resolve();
  private failure: unknown;
  /** Chunks handed to `flush` and not finished. */
  private inFlight = 0;
  /** A chunk was due while another was in flight: it goes out when that one is done. */
  private dueWhenFree = false;

  constructor(private readonly options: CoalescerOptions) {}

  /** Adds a delta; it goes out at once, at its slot, or when the buffer fills. */
  push(delta: string): void {
    if (delta.length === 0) return;
    this.buffer.push(delta);
    this.uncountedBound += 3 * delta.length;
    const { flushBytes } = this.options;
    const full = this.countedBytes + this.uncountedBound >= flushBytes && this.countBytes() >= flushBytes;
    if (this.waitingFor !== undefined && !full) return;
    const wait = this.nextSlot - (this.options.burst ?? BURST_SLOTS) * this.options.flushMs - performance.now();
    if (full) this.flushNow();
    else if (wait <= 0) this.flushWhenFree();
    else this.waitingFor = slotTicks.add(this.onSlot, wait);
  }

  /** The first error a flush raised, if any; the worker checks it to stop the turn early. */
  get error(): unknown {
    return this.failure;
  }

  /** Flushes what is buffered and waits for every flush; rejects with the first flush error. */
  async drain(): Promise<void> {
    this.dueWhenFree = false;
    this.flushNow();
    await this.pending;
    if (this.failure !== undefined) throw this.failure;
  }

  /** Stops waiting for the slot, without flushing. */
  dispose(): void {
    if (this.waitingFor !== undefined) slotTicks.cancel(this.onSlot, this.waitingFor);
    this.waitingFor = undefined;
  }

  /** Counts the deltas not counted yet; returns the exact UTF-8 bytes buffered. */
  private countBytes(): number {
    for (; this.countedDeltas < this.buffer.length; this.countedDeltas += 1) {
      this.countedBytes += Buffer.byteLength(this.buffer[this.countedDeltas]!, 'utf8');
    }
    this.uncountedBound = 0;
    return this.countedBytes;
  }

  /** Flushes now, or once the chunk in flight is done. */
  private flushWhenFree(): void {
    this.dispose();
    if (this.inFlight > 0 && this.options.flushMs > 0) this.dueWhenFree = true;
    else this.flushNow();
  }

  private flushNow(): void {
    this.dispose();
    if (this.buffer.length === 0) return;
    this.nextSlot = Math.max(this.nextSlot, performance.now()) + this.options.flushMs;
    const text = this.buffer.join('');
    this.buffer = [];
    this.countedDeltas = 0;
    this.countedBytes = 0;
    this.uncountedBound = 0;
    this.inFlight += 1;
    this.pending = this.pending.then(async () => {
      try {
        if (this.failure === undefined) await this.options.flush(text);
      } catch (error) {
        this.failure = error;
      } finally {
        this.inFlight -= 1;
        if (this.dueWhenFree && this.inFlight === 0) {
          this.dueWhenFree = false;
          this.flushNow();
        }
      }
    });
  }
}

/**
 * When the chunks held for their slots go: one Node timer per tick of `SLOT_TICK_MS` for every
 * coalescer due in it, not one timer per coalescer. Under load thousands of turns each wait for a
 * slot twenty times a second; a timer apiece (a `Timeout`, its closure, an entry in Node's timer
 * lists) was measurable on the event loop (docs/benchmarks.md). A chunk goes at most one tick after
 * its slot.
 */
export const SLOT_TICK_MS = 2;

class SlotTicks {
  private readonly due = new Map<number, { runs: Set<() => void>; timer: ReturnType<typeof setTimeout> }>();

  /** Calls `run` at the first tick at least `waitMs` from now; returns the tick, for `cancel`. */
  add(run: () => void, waitMs: number): number {
    const tick = Math.ceil((performance.now() + waitMs) / SLOT_TICK_MS);
    let entry = this.due.get(tick);
    if (entry === undefined) {
      entry = { runs: new Set(), timer: setTimeout(() => this.fire(tick), tick * SLOT_TICK_MS - performance.now()) };
      this.due.set(tick, entry);
    }
    entry.runs.add(run);
    return tick;
  }

  /** Forgets `run`; a tick nobody waits for any more stops its timer, so it holds no process open. */
  cancel(run: () => void, tick: number): void {
    const entry = this.due.get(tick);
    if (entry === undefined || !entry.runs.delete(run) || entry.runs.size > 0) return;
    clearTimeout(entry.timer);
    this.due.delete(tick);
  }

  private fire(tick: number): void {
    const entry = this.due.get(tick);
    this.due.delete(tick);
    if (entry !== undefined) for (const run of entry.runs) run();
  }
}

const slotTicks = new SlotTicks();
