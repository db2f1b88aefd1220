/**
 * Coalesces a model's text deltas into chunks, at most one chunk every `flushMs`: a delta that
 * arrives when the last chunk is at least `flushMs` old goes out at once (so the first token, and
 * every token of a slow model, waits for nothing); one that arrives sooner waits only until
 * `flushMs` after the last chunk, gathered with whatever else arrives meanwhile. `flushBytes`
 * waiting also flush at once; `flushMs` 0 flushes every delta as it comes.
 *
 * A chunk also waits while the one before it is still being handed over (stored and published):
 * when the store or the event loop falls behind, each turn then sends fewer, larger chunks instead
 * of queueing more of them, so the delay stays at one hand-over rather than growing with the
 * queue. (`flushBytes` still bound a chunk's size, and `flushMs` 0 queues every delta.)
 *
 * Counting from the last chunk (rather than keeping chunks on a fixed schedule) is deliberate:
 * when the event loop runs late, each chunk then takes more tokens, which sheds load. Schedules
 * anchored at the flush or at the delta were measured and made a loaded gateway slower
 * (docs/benchmarks.md).
 *
 * The coalescer never splits a delta, so a multi-byte character is never cut.
 */
export interface CoalescerOptions {
  /** Milliseconds to gather deltas after the first one; 0 disables gathering. */
  flushMs: number;
  /** Flush at once when this many UTF-8 bytes are waiting. */
  flushBytes: number;
  /** Receives each chunk; calls are made one at a time, in order. */
  flush: (text: string) => Promise<void>;
}

export class Coalescer {
  private buffer: string[] = [];
  private bufferedBytes = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** When the last chunk went out (performance.now()); -Infinity before the first. */
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  /** The chain of flushes, so chunks are written in order and errors surface in `drain`. */
  private pending: Promise<void> = Promise.resolve();
  private failure: unknown;
  /** Chunks handed to `flush` and not finished. */
  private inFlight = 0;
  /** A chunk was due while another was in flight: it goes out when that one is done. */
  private dueWhenFree = false;

  constructor(private readonly options: CoalescerOptions) {}

  /** Adds a delta; it goes out at once, when `flushMs` have passed since the last chunk, or when the buffer fills. */
  push(delta: string): void {
    if (delta.length === 0) return;
    this.buffer.push(delta);
    this.bufferedBytes += Buffer.byteLength(delta, 'utf8');
    if (this.timer !== undefined && this.bufferedBytes < this.options.flushBytes) return;
    const wait = this.lastFlushAt + this.options.flushMs - performance.now();
    if (this.bufferedBytes >= this.options.flushBytes) this.flushNow();
    else if (wait <= 0) this.flushWhenFree();
    else this.timer = setTimeout(() => this.flushWhenFree(), wait);
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

  /** Stops the timer without flushing. */
  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
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
    this.lastFlushAt = performance.now();
    const text = this.buffer.join('');
    this.buffer = [];
    this.bufferedBytes = 0;
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
