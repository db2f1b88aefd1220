/**
 * Coalesces a model's text deltas into chunks, on average at most one chunk every `flushMs`: the
 * first delta goes out at once, and so does every delta of a model slower than that; faster ones
 * wait, gathered with whatever else arrives meanwhile, until the stream is due another chunk.
 * `flushBytes` waiting also flush at once; `flushMs` 0 flushes every delta as it comes.
 *
 * "Due" is kept on a schedule (a generic cell rate algorithm) rather than counted from the last
 * chunk: each chunk moves the next due time `flushMs` on, and a chunk may go out up to half of
 * `flushMs` early. Counting from the last chunk would tie the chunks of every stream to the moment
 * the event loop caught up after a stall: all of them would then be due at the same instant, and
 * stay so, turning an even load into bursts. With the schedule, a stream's chunks return to the
 * times its model sends them within one interval.
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
  /** When the next chunk is due (performance.now()); one may go out up to `flushMs / 2` sooner. */
  private due = Number.NEGATIVE_INFINITY;
  /** The chain of flushes, so chunks are written in order and errors surface in `drain`. */
  private pending: Promise<void> = Promise.resolve();
  private failure: unknown;

  constructor(private readonly options: CoalescerOptions) {}

  /** Adds a delta; it goes out at once when the stream is due a chunk or the buffer fills, else when it is due. */
  push(delta: string): void {
    if (delta.length === 0) return;
    this.buffer.push(delta);
    this.bufferedBytes += Buffer.byteLength(delta, 'utf8');
    if (this.timer !== undefined && this.bufferedBytes < this.options.flushBytes) return;
    const wait = this.due - this.options.flushMs / 2 - performance.now();
    if (wait <= 0 || this.bufferedBytes >= this.options.flushBytes) this.flushNow();
    else this.timer = setTimeout(() => this.flushNow(), wait);
  }

  /** The first error a flush raised, if any; the worker checks it to stop the turn early. */
  get error(): unknown {
    return this.failure;
  }

  /** Flushes what is buffered and waits for every flush; rejects with the first flush error. */
  async drain(): Promise<void> {
    this.flushNow();
    await this.pending;
    if (this.failure !== undefined) throw this.failure;
  }

  /** Stops the timer without flushing. */
  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flushNow(): void {
    this.dispose();
    if (this.buffer.length === 0) return;
    this.due = Math.max(this.due, performance.now()) + this.options.flushMs;
    const text = this.buffer.join('');
    this.buffer = [];
    this.bufferedBytes = 0;
    this.pending = this.pending.then(async () => {
      if (this.failure !== undefined) return;
      try {
        await this.options.flush(text);
      } catch (error) {
        this.failure = error;
      }
    });
  }
}
