/**
 * What the benchmark's processes share: the clock, the latency histogram, the messages the runner
 * and its children exchange over the IPC channel, and the child side of that channel.
 *
 * Every process reads time as `performance.timeOrigin + performance.now()`, the clock the simulated
 * model stamps its tokens with (`[stamp]`), so a token's one-way latency is the receiving process's
 * clock minus the stamp: both processes run on this machine's wall clock, to the microsecond.
 */
import { readFileSync } from 'node:fs';
import { subscribe as subscribeChannel } from 'node:diagnostics_channel';
import { monitorEventLoopDelay } from 'node:perf_hooks';

/** Milliseconds since the epoch, with microsecond precision: the clock of `[stamp]`. */
export const now = (): number => performance.timeOrigin + performance.now();

/** The three servers measured. */
export type ServerKind = 'longrun' | 'bare-ws' | 'yoga';

/** The wire protocol a server's subscribers speak. */
export type WireProtocol = 'appsync' | 'graphql-transport-ws';

/** Where a started server listens, as its child process reports it. */
export interface ServerReady {
  type: 'ready';
  kind: ServerKind;
  protocol: WireProtocol;
  /** `ws://…` of the subscription endpoint (AppSync: without the `header` query). */
  wsUrl: string;
  /** `http://…/graphql`, where `startConversation` is posted. */
  httpUrl: string;
  apiKey: string;
  pid: number;
}

/** Resource use of a process at one instant. */
export interface ProcessStats {
  /** `now()` when read. */
  at: number;
  /** CPU time, user + system, in microseconds since the process started. */
  cpuMicros: number;
  /**
   * The same for the event loop's own thread alone (Linux, from `/proc/thread-self/stat`, in steps
   * of 10 ms); NaN elsewhere. The process's figure also counts its other threads: GC helpers and,
   * in the gateway, the SQLite background thread.
   */
  loopThreadCpuMicros: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** HTTP requests the server received (counted through `diagnostics_channel`). */
  httpRequests: number;
  /**
   * How late the event loop ran (`monitorEventLoopDelay`, 1 ms resolution) since the last
   * `reset`, in ms: p99 and max. A server whose loop is blocked delays every delivery.
   */
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
}

/** Runner → child. */
export type ControlMessage =
  | { type: 'stats'; requestId: number; gc?: boolean; reset?: boolean }
  | { type: 'clock'; requestId: number }
  | { type: 'stop' }
  | { type: 'continue' }
  | { type: 'run'; spec: unknown; target: ServerReady };

/** Child → runner. */
export type ChildMessage =
  | ServerReady
  | { type: 'stats'; requestId: number; stats: ProcessStats }
  | { type: 'clock'; requestId: number; now: number }
  | { type: 'phase'; name: string }
  | { type: 'result'; result: unknown }
  | { type: 'failed'; message: string };

/** Reads this process's resource use; with `gc`, collects garbage first (needs `--expose-gc`). */
export function processStats(httpRequests = 0, gc = false, loopDelay?: ReturnType<typeof monitorEventLoopDelay>): ProcessStats {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (gc && collect) {
    collect();
    collect();
  }
  const cpu = process.cpuUsage();
  const memory = process.memoryUsage();
  return {
    at: now(),
    cpuMicros: cpu.user + cpu.system,
    loopThreadCpuMicros: loopThreadCpuMicros(),
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    httpRequests,
    eventLoopDelayP99Ms: loopDelay && loopDelay.count > 0 ? loopDelay.percentile(99) / 1e6 : Number.NaN,
    eventLoopDelayMaxMs: loopDelay && loopDelay.count > 0 ? loopDelay.max / 1e6 : Number.NaN,
  };
}

/**
 * CPU time of the calling thread (user + system) in microseconds, from `/proc/thread-self/stat`
 * (fields 14 and 15, in clock ticks of 1/100 s, the USER_HZ Linux reports in on every
 * architecture Node runs on); NaN where there is no such file.
 */
function loopThreadCpuMicros(): number {
  try {
    const fields = readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/** Sends a message to the runner; a no-op when the runner is gone. */
export function toRunner(message: ChildMessage): void {
  if (process.connected) process.send?.(message);
}

/**
 * The child side of a server process: reports `ready`, answers `stats` and `clock`, stops on
 * `stop` (then exits, so that `--cpu-prof` writes its profile) and exits when the runner goes away.
 */
export function serveControl(ready: Omit<ServerReady, 'type' | 'pid'>, stop: () => Promise<void>): void {
  let httpRequests = 0;
  subscribeChannel('http.server.request.start', () => {
    httpRequests += 1;
  });
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  let stopping = false;
  const shutdown = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => process.exit(0), 5_000);
    timer.unref();
    try {
      await stop();
    } finally {
      process.exit(0);
    }
  };
  process.on('message', (message: ControlMessage) => {
    if (message.type === 'stats') {
      toRunner({ type: 'stats', requestId: message.requestId, stats: processStats(httpRequests, message.gc, loopDelay) });
      if (message.reset) loopDelay.reset();
    }
    else if (message.type === 'clock') toRunner({ type: 'clock', requestId: message.requestId, now: now() });
    else if (message.type === 'stop') void shutdown();
  });
  process.on('disconnect', () => void shutdown());
  toRunner({ type: 'ready', pid: process.pid, ...ready });
}

/**
 * A latency histogram in milliseconds: 5 µs buckets up to 2 s, exact values above. Recording is
 * O(1) and memory is fixed, so millions of samples cost nothing; percentiles are exact to 5 µs.
 */
export class LatencyHistogram {
  private static readonly resolution = 0.005;
  private static readonly limit = 2_000;
  private readonly buckets = new Uint32Array(Math.ceil(LatencyHistogram.limit / LatencyHistogram.resolution));
  private readonly overflow: number[] = [];
  count = 0;
  /** Samples below 0 (clock skew between processes); counted as 0. */
  negative = 0;
  private sum = 0;
  private maximum = 0;

  record(milliseconds: number): void {
    this.count += 1;
    let value = milliseconds;
    if (value < 0) {
      this.negative += 1;
      value = 0;
    }
    this.sum += value;
    if (value > this.maximum) this.maximum = value;
    if (value >= LatencyHistogram.limit) this.overflow.push(value);
    else this.buckets[Math.floor(value / LatencyHistogram.resolution)]! += 1;
  }

  /** The value under which `fraction` of the samples fall (upper edge of its bucket); NaN when empty. */
  percentile(fraction: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(fraction * this.count));
    let seen = 0;
    for (let index = 0; index < this.buckets.length; index += 1) {
      seen += this.buckets[index]!;
      if (seen >= rank) return Math.min((index + 1) * LatencyHistogram.resolution, this.maximum);
    }
    const sorted = [...this.overflow].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, rank - seen - 1)]!;
  }

  summary(): LatencySummary {
    const round = (value: number): number => (Number.isFinite(value) ? Math.round(value * 1000) / 1000 : value);
    return {
      count: this.count,
      p50: round(this.percentile(0.5)),
      p90: round(this.percentile(0.9)),
      p99: round(this.percentile(0.99)),
      p999: round(this.percentile(0.999)),
      max: round(this.count === 0 ? Number.NaN : this.maximum),
      mean: round(this.count === 0 ? Number.NaN : this.sum / this.count),
      negative: this.negative,
    };
  }
}

/** Percentiles of a latency histogram, in milliseconds. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  negative: number;
}

/** The subscription every client sends: the same document for all three servers. */
export const ON_EVENT_SUBSCRIPTION = /* GraphQL */ `subscription OnEvent($conversationId: ID!) {
  onConversationEvent(conversationId: $conversationId) {
    conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt
  }
}`;

/** The mutation that starts a conversation: the same request body for all three servers. */
export const START_MUTATION = /* GraphQL */ `mutation Start($input: StartConversationInput!) {
  startConversation(input: $input) { conversationId status }
}`;

/** Runs `work` over `items` with at most `concurrency` at a time. */
export async function mapConcurrently<T, R>(items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await work(items[index]!, index);
    }
  });
  await Promise.all(lanes);
  return results;
}

/** Rejects with `message` when `promise` has not settled after `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
