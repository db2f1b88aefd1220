/**
 * The benchmark: the gateway beside a bare `ws` server (the floor) and graphql-yoga (what a user
 * would build instead), in one run, on this machine.
 *
 *   npx tsx bench/run.ts            the full set (about 20 minutes)
 *   npx tsx bench/run.ts --quick    a shortened set (under 2 minutes)
 *   options: --profile (writes a CPU profile of each gateway process and summarises it),
 *            --nice=-10 (runs the children at a higher priority than the machine's other work),
 *            --gateway-env=NAME=value,... (extra gateway settings, for experiments),
 *            --gateway-node-args="--trace-gc" (extra Node options for the gateway process),
 *            --s4-rates=100,200 (S4's per-conversation rates),
 *            --rounds=3 (S1's and S2's rounds), --s4-runs=3 (the runs that decide an S4 step whose first fails),
 *            --label=name (writes bench/results/<name>.{json,md} instead of latest.* and <mode>.*),
 *            --only=s1,s2,s3,s4,idle,publisher   --servers=longrun,bare-ws,yoga
 *
 * Each server runs in its own child process; the load comes from another child (`bench/load.ts`)
 * over real sockets on 127.0.0.1. Children are bundled with esbuild first (so they start in a
 * second, without a TypeScript loader in the measured process) and are killed at the end, even
 * on failure. Results go to `bench/results/latest.{json,md}` (and `<mode>.{json,md}`); the table
 * is printed at the end. See `docs/benchmarks.md`.
 */
import { execSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { now, type ChildMessage, type ControlMessage, type ProcessStats, type ServerKind, type ServerReady } from './common.js';
import { median, medianRun, roundDifferences, stepOutcome } from './decide.js';
import type { LoadResult, LoadSpec } from './load.js';
import { summariseProfile, type ProfileSummary } from './profile.js';
import type { PublisherResult, PublisherSpec } from './publisher-cost.js';
import { renderMarkdown } from './report.js';
import { LAMBDA_DEFAULT_FLUSH_MS } from '../src/lambda/handler.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH_DIR);
const BUILD_DIR = join(BENCH_DIR, '.build');
const RESULTS_DIR = join(BENCH_DIR, 'results');
const PROFILE_DIR = join(RESULTS_DIR, 'profiles');

// ---------------------------------------------------------------------------------------------
// Plan

/** Sizes of every scenario. */
export interface Plan {
  /** Tokens of the warm-up conversation before each measurement (bench/load.ts). */
  warmUpTokens: number;
  /** S1 and S2 run in this many rounds (each server once a round) and are judged on the median round. */
  s1: { rate: number; seconds: number; rounds: number };
  s2: { conversations: number; rate: number; seconds: number; rounds: number };
  s3: { subscribers: number; rate: number; seconds: number };
  /** `runs`: a step whose first run does not hold is decided by this many runs, by majority. */
  s4: { conversations: number; rates: number[]; seconds: number; runs: number };
  idle: { connections: number };
  publisher: { tokens: number; rates: number[]; flushMs: number };
}

const FULL: Plan = {
  warmUpTokens: 3000,
  // Three rounds: the p99 of 1,000 tokens (S1) is their 10th worst, and a few seconds of other work
  // on a two-core machine move it by more than the targets' margins. The median of three rounds,
  // run side by side with the floor, is not decided by one disturbed run.
  s1: { rate: 100, seconds: 10, rounds: 3 },
  s2: { conversations: 1000, rate: 20, seconds: 15, rounds: 3 },
  s3: { subscribers: 1000, rate: 50, seconds: 10 },
  // S2 with its rate raised, in steps of about √2 (so "the highest rate held" is known to within
  // 40 %), each as long as S2: with shorter steps, the last tokens of the turns, which all end
  // together, would be more than 1 % of the tokens and decide the p99 alone. It starts low enough
  // (2,000 tokens/s) for a server that falls behind the model at 5,000 to hold a step.
  s4: { conversations: 1000, rates: [2, 3, 5, 7, 10, 14, 20, 28, 40, 56, 80, 113, 160, 226, 320, 453, 640], seconds: 15, runs: 3 },
  idle: { connections: 5000 },
  publisher: { tokens: 1000, rates: [50, 200], flushMs: LAMBDA_DEFAULT_FLUSH_MS },
};

const QUICK: Plan = {
  // Shorter, so that the quick set stays under two minutes; its figures are indicative anyway.
  warmUpTokens: 500,
  s1: { rate: 100, seconds: 2, rounds: 1 },
  s2: { conversations: 200, rate: 20, seconds: 3, rounds: 1 },
  s3: { subscribers: 200, rate: 50, seconds: 3 },
  s4: { conversations: 200, rates: [10, 25, 200], seconds: 2, runs: 1 },
  idle: { connections: 500 },
  publisher: { tokens: 200, rates: [100], flushMs: LAMBDA_DEFAULT_FLUSH_MS },
};

/**
 * A step of S4 holds when nothing is lost, the offered rate is delivered, and both the token
 * latency p99 and the schedule lag p99 stay under this. Token latency alone would not do: the
 * model runs in the server's own event loop and stamps a token when it emits it, so a saturated
 * server emits late and the lateness does not show in it (a coalescing server then "holds" any
 * rate, seconds behind the model's pace). Schedule lag counts from when the token was due.
 */
export const S4_P99_LIMIT_MS = 100;
/** ... "the offered rate is delivered": at least this share of it, at steady state. */
export const S4_DELIVERED_SHARE = 0.9;

const SCENARIOS = ['s1', 's2', 's3', 's4', 'idle', 'publisher'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => argv.find((arg) => arg.startsWith(`${name}=`))?.slice(name.length + 1);
const mode = argv.includes('--quick') ? 'quick' : 'full';
const plan: Plan = structuredClone(mode === 'quick' ? QUICK : FULL);
/** `--gateway-node-args=--trace-gc`: extra Node options for every gateway process (experiments), space-separated. */
const gatewayNodeArgs = option('--gateway-node-args')?.split(' ').filter(Boolean) ?? [];
/** `--label=name`: write `bench/results/<name>.{json,md}` instead of `latest` and `<mode>` (experiments). */
const label = option('--label');
if (label !== undefined && !/^[\w.-]+$/.test(label)) throw new Error('--label may hold letters, digits, ".", "_" and "-" only');
// `--s4-rates=100,200`: the per-conversation rates of S4's ladder (to study one step).
if (option('--s4-rates')) plan.s4.rates = option('--s4-rates')!.split(',').map(Number);
if (option('--s4-runs')) {
  const runs = Number(option('--s4-runs'));
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--s4-runs: expected a whole number of at least 1, got ${option('--s4-runs')}`);
  plan.s4.runs = runs;
}
// `--rounds=N`: S1's and S2's rounds.
if (option('--rounds')) {
  const rounds = Number(option('--rounds'));
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: expected a whole number of at least 1, got ${option('--rounds')}`);
  plan.s1.rounds = rounds;
  plan.s2.rounds = rounds;
}
const profiling = argv.includes('--profile');
/** `--nice=-10`: the scheduling priority of every child (negative needs root); the machine's other work then disturbs less. */
const niceness = option('--nice') === undefined ? undefined : Number(option('--nice'));
if (niceness !== undefined && !(Number.isInteger(niceness) && niceness >= -20 && niceness <= 19)) throw new Error('--nice must be a whole number from -20 to 19');
let niceWarned = false;
/** `--gateway-env=LONGRUN_DB=:memory:,LONGRUN_FLUSH_MS=20`: extra settings for every gateway process (experiments). */
const gatewayEnvironment = Object.fromEntries(
  (option('--gateway-env')?.split(',') ?? []).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
);
const only = new Set((option('--only')?.split(',') ?? SCENARIOS) as ScenarioName[]);
const servers = (option('--servers')?.split(',') ?? ['longrun', 'bare-ws', 'yoga']) as ServerKind[];
for (const name of only) if (!SCENARIOS.includes(name)) throw new Error(`--only: unknown scenario ${name}; known: ${SCENARIOS.join(', ')}`);
for (const kind of servers) if (!['longrun', 'bare-ws', 'yoga'].includes(kind)) throw new Error(`--servers: unknown server ${kind}`);

// ---------------------------------------------------------------------------------------------
// Child processes

const live = new Set<ChildProcess>();
let scratch: string | undefined;
const killAll = (): void => {
  for (const child of live) child.kill('SIGKILL');
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
};
// A closed pipe (`| head`) must not end the run before its children are stopped.
process.stdout.on('error', () => undefined);
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** A child process with an IPC channel: a queue of its messages and request/reply by id. */
class Child {
  readonly process: ChildProcess;
  private readonly queue: ChildMessage[] = [];
  private wake: (() => void) | undefined;
  private readonly exited: Promise<void>;
  private exitedAlready = false;
  private nextRequestId = 1;

  constructor(
    readonly name: string,
    file: string,
    nodeArgs: string[],
    environment: Record<string, string>,
  ) {
    this.process = spawn(process.execPath, [...nodeArgs, file], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, ...environment },
    });
    live.add(this.process);
    if (niceness !== undefined && this.process.pid !== undefined) {
      try {
        os.setPriority(this.process.pid, niceness);
      } catch (error) {
        if (!niceWarned) console.warn(`--nice: cannot set the priority (${(error as Error).message}); running at the default.`);
        niceWarned = true;
      }
    }
    this.exited = new Promise((resolve) => {
      this.process.once('exit', () => {
        this.exitedAlready = true;
        live.delete(this.process);
        this.wake?.();
        resolve();
      });
    });
    this.process.on('message', (message: ChildMessage) => {
      this.queue.push(message);
      this.wake?.();
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  send(message: ControlMessage): void {
    if (this.process.connected) this.process.send(message);
  }

  /** The first queued (or next) message matching `predicate`; rejects on exit or after `timeoutMs`. */
  async next(predicate: (message: ChildMessage) => boolean, timeoutMs: number, what: string): Promise<ChildMessage> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const index = this.queue.findIndex(predicate);
      if (index >= 0) return this.queue.splice(index, 1)[0]!;
      if (this.exitedAlready) throw new Error(`${this.name} exited while the runner waited for ${what}`);
      const left = deadline - now();
      if (left <= 0) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  async stats(gc = false, reset = false): Promise<ProcessStats> {
    const requestId = this.nextRequestId++;
    this.send({ type: 'stats', requestId, gc, reset });
    // A saturated server may take long to answer: its event loop is behind.
    const reply = await this.next((message) => message.type === 'stats' && message.requestId === requestId, 180_000, 'stats');
    return (reply as Extract<ChildMessage, { type: 'stats' }>).stats;
  }

  /** This child's clock minus the runner's, from the round trip with the smallest delay. */
  async clockOffset(samples = 12): Promise<{ offsetMs: number; roundTripMs: number }> {
    let best = { offsetMs: 0, roundTripMs: Number.POSITIVE_INFINITY };
    for (let sample = 0; sample < samples; sample += 1) {
      const requestId = this.nextRequestId++;
      const sent = now();
      this.send({ type: 'clock', requestId });
      const reply = (await this.next((message) => message.type === 'clock' && message.requestId === requestId, 10_000, 'clock')) as Extract<
        ChildMessage,
        { type: 'clock' }
      >;
      const received = now();
      if (received - sent < best.roundTripMs) best = { offsetMs: reply.now - (sent + received) / 2, roundTripMs: received - sent };
    }
    return best;
  }

  /** Asks the child to stop, then kills it if it has not exited after `graceMs`. */
  async stop(graceMs = 8_000): Promise<void> {
    if (this.exitedAlready) return;
    this.send({ type: 'stop' });
    const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): Promise<void> {
    if (!this.exitedAlready) this.process.kill('SIGKILL');
    return this.exited;
  }
}

// ---------------------------------------------------------------------------------------------
// Building the children

const entries = {
  longrun: join(BENCH_DIR, 'servers', 'longrun.ts'),
  'bare-ws': join(BENCH_DIR, 'baselines', 'bare-ws.ts'),
  yoga: join(BENCH_DIR, 'baselines', 'yoga.ts'),
  load: join(BENCH_DIR, 'load.ts'),
  publisher: join(BENCH_DIR, 'publisher-cost.ts'),
} as const;
type Entry = keyof typeof entries;

async function buildChildren(): Promise<Record<Entry, string>> {
  rmSync(BUILD_DIR, { recursive: true, force: true });
  mkdirSync(BUILD_DIR, { recursive: true });
  const outputs = {} as Record<Entry, string>;
  for (const [name, entry] of Object.entries(entries) as Array<[Entry, string]>) {
    const outfile = join(BUILD_DIR, `${name}.mjs`);
    await bundle(entry, outfile);
    outputs[name] = outfile;
  }
  // The gateway's turn threads load `thread-entry.js` from beside the file that starts them.
  await bundle(join(BENCH_DIR, '..', 'src', 'worker', 'thread-entry.ts'), join(BUILD_DIR, 'thread-entry.js'));
  return outputs;
}

/** Bundles one entry for Node 20. Dependencies stay external: they load from node_modules exactly as the gateway loads them. */
async function bundle(entry: string, outfile: string): Promise<void> {
  await build({ entryPoints: [entry], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', sourcemap: true, logLevel: 'warning' });
}

// ---------------------------------------------------------------------------------------------
// One measurement

/** What one server did under one load. */
export interface Measurement {
  server: ServerKind;
  load: LoadResult;
  /** Server CPU over the measurement, in % of one core. */
  serverCpuPercent: number;
  /** The server's event-loop thread alone, in % of one core (NaN off Linux). */
  serverLoopThreadCpuPercent: number;
  /**
   * CPU used meanwhile by processes other than the server and the load generator (other work on
   * the machine), in % of one core: the figures are only as clean as this is low.
   */
  otherCpuPercent: number;
  /** Server RSS at the end of the measurement, and its peak (VmHWM), in MB. */
  serverRssMB: number;
  serverPeakRssMB: number;
  serverHeapMB: number;
  /** How late the server's event loop ran during the measurement (p99, max), in ms. */
  serverLoopDelayP99Ms: number;
  serverLoopDelayMaxMs: number;
  /** Server clock minus load generator clock, in ms (estimated over IPC), and the round trip it was read with. */
  clockOffsetMs: number;
  clockRoundTripMs: number;
  /** Idle memory: set for the idle scenario. */
  idle?: { connections: number; rssBeforeMB: number; rssAfterMB: number; rssPerConnectionKB: number; heapPerConnectionKB: number };
  profile?: ProfileSummary;
  seconds: number;
}

/** A measurement that failed, with why. */
export interface FailedMeasurement {
  server: ServerKind;
  error: string;
}

let built: Record<Entry, string>;
let sequence = 0;

/** CPU time of the whole machine, from /proc/stat, in clock ticks: busy and total over all cores. */
function machineTicks(): { busy: number; total: number } | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
    const busy = user + nice + system + irq + softirq + steal;
    return { busy, total: busy + idle + iowait };
  } catch {
    return undefined;
  }
}

/** CPU used by the whole machine between two readings, in % of one core. */
function machinePercent(before: ReturnType<typeof machineTicks>, after: ReturnType<typeof machineTicks>): number {
  if (!before || !after || after.total <= before.total) return Number.NaN;
  return ((after.busy - before.busy) / ((after.total - before.total) / os.cpus().length)) * 100;
}

function serverEnvironment(kind: ServerKind, extra: Record<string, string>): Record<string, string> {
  if (kind !== 'longrun') return {};
  return {
    LONGRUN_DB: join(scratch ?? os.tmpdir(), `gateway-${++sequence}.db`),
    LONGRUN_API_KEY: 'da2-benchmarkbenchmarkbenchmark',
    LONGRUN_MAX_CONCURRENT_TURNS: '100000',
    LONGRUN_LOG_LEVEL: 'warn',
    LONGRUN_SIM_TTFT_MS: '0',
    // The gateway's abuse limits are sized for people, not for a load generator on one address.
    LONGRUN_TURNS_PER_MINUTE: '1000000',
    LONGRUN_MAX_TURNS_PER_PRINCIPAL: '100000',
    LONGRUN_MAX_CONNECTIONS_PER_ADDRESS: '1000000',
    ...extra,
    ...gatewayEnvironment,
  };
}

async function startServer(kind: ServerKind, extra: Record<string, string>, profileName: string | undefined): Promise<{ child: Child; ready: ServerReady }> {
  const nodeArgs = ['--expose-gc', '--enable-source-maps', ...(kind === 'longrun' ? gatewayNodeArgs : [])];
  if (profileName) {
    mkdirSync(PROFILE_DIR, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${profileName.replace('longrun', kind)}.cpuprofile`);
  }
  const child = new Child(kind, built[kind], nodeArgs, serverEnvironment(kind, extra));
  try {
    const ready = (await child.next((message) => message.type === 'ready', 30_000, 'ready')) as ServerReady;
    return { child, ready };
  } catch (error) {
    await child.kill();
    throw error;
  }
}

function peakRssMB(pid: number): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

const MB = 1024 * 1024;

async function measure(
  kind: ServerKind,
  spec: LoadSpec,
  extra: Record<string, string> = {},
  profileName?: string,
): Promise<Measurement> {
  const started = now();
  const { child: server, ready } = await startServer(kind, extra, profiling ? profileName : undefined);
  const load = new Child('load', built.load, ['--max-semi-space-size=64'], {});
  try {
    const [serverClock, loadClock] = await Promise.all([server.clockOffset(), load.clockOffset()]);
    const before = spec.idle ? await server.stats(true) : undefined;
    load.send({ type: 'run', spec: { ...spec, warmUpTokens: plan.warmUpTokens }, target: ready });
    let machineStart: ReturnType<typeof machineTicks>;
    let machineEnd: ReturnType<typeof machineTicks>;
    let measureStart: ProcessStats | undefined;
    let measureEnd: ProcessStats | undefined;
    let subscribed: ProcessStats | undefined;
    let peak = Number.NaN;
    const deadline = spec.deadlineMs + 180_000;
    for (;;) {
      const message = await load.next((candidate) => ['phase', 'result', 'failed'].includes(candidate.type), deadline, 'the load generator');
      if (message.type === 'failed') throw new Error(`load generator failed: ${message.message}`);
      if (message.type === 'result') {
        const result = message.result as LoadResult;
        const end = measureEnd ?? subscribed!;
        const start = measureStart ?? subscribed!;
        const wall = (end.at - start.at) / 1000;
        const serverCpuPercent = wall > 0 ? ((end.cpuMicros - start.cpuMicros) / 1e6 / wall) * 100 : 0;
        const measurement: Measurement = {
          server: kind,
          load: result,
          serverCpuPercent,
          serverLoopThreadCpuPercent: wall > 0 ? ((end.loopThreadCpuMicros - start.loopThreadCpuMicros) / 1e6 / wall) * 100 : 0,
          otherCpuPercent: Math.max(0, machinePercent(machineStart, machineEnd) - serverCpuPercent - result.loadCpuPercent),
          serverRssMB: end.rssBytes / MB,
          serverPeakRssMB: Number.isNaN(peak) ? peakRssMB(server.pid) : peak,
          serverHeapMB: end.heapUsedBytes / MB,
          serverLoopDelayP99Ms: end.eventLoopDelayP99Ms,
          serverLoopDelayMaxMs: end.eventLoopDelayMaxMs,
          clockOffsetMs: serverClock.offsetMs - loadClock.offsetMs,
          clockRoundTripMs: Math.max(serverClock.roundTripMs, loadClock.roundTripMs),
          seconds: 0,
        };
        if (spec.idle && before && subscribed) {
          const connections = result.connections;
          measurement.idle = {
            connections,
            rssBeforeMB: before.rssBytes / MB,
            rssAfterMB: subscribed.rssBytes / MB,
            rssPerConnectionKB: (subscribed.rssBytes - before.rssBytes) / 1024 / connections,
            heapPerConnectionKB: (subscribed.heapUsedBytes - before.heapUsedBytes) / 1024 / connections,
          };
        }
        await Promise.all([server.stop(), load.stop()]);
        if (profiling && profileName && kind === 'longrun') {
          const file = join(PROFILE_DIR, `${profileName}.cpuprofile`);
          if (existsSync(file)) measurement.profile = summariseProfile(file, ROOT);
          // Kept beside the profiles, so that `bench/profile.ts` can map them to source files later.
          copyFileSync(built.longrun, join(PROFILE_DIR, 'longrun.mjs'));
        }
        measurement.seconds = (now() - started) / 1000;
        return measurement;
      }
      if (message.type !== 'phase') continue;
      // A phase: read the server's figures, then let the load generator go on.
      if (message.name === 'subscribed') subscribed = await server.stats(spec.idle);
      else if (message.name === 'measure-start') {
        measureStart = await server.stats(false, true);
        machineStart = machineTicks();
      } else if (message.name === 'measure-end') {
        machineEnd = machineTicks();
        measureEnd = await server.stats();
        peak = peakRssMB(server.pid);
      }
      load.send({ type: 'continue' });
    }
  } finally {
    await Promise.all([server.kill(), load.kill()]);
  }
}

async function attempt(kind: ServerKind, label: string, run: () => Promise<Measurement>): Promise<Measurement | FailedMeasurement> {
  process.stdout.write(`  ${label} ${kind.padEnd(8)} `);
  try {
    const measurement = await run();
    const { load } = measurement;
    process.stdout.write(
      `${measurement.seconds.toFixed(1)}s  ` +
        (measurement.idle
          ? `${measurement.idle.rssPerConnectionKB.toFixed(1)} KB RSS per connection\n`
          : `${Math.round(load.tokensPerSecond)} tok/s, token p99 ${load.tokenLatency.p99} ms, delivery p99 ${load.deliveryLatency.p99} ms, lost ${load.lostTokens}, cpu ${Math.round(measurement.serverCpuPercent)}% (loop thread ${Math.round(measurement.serverLoopThreadCpuPercent)}%), loop max ${Math.round(measurement.serverLoopDelayMaxMs)} ms (load ${Math.round(load.loadCpuPercent)}%, others ${Math.round(measurement.otherCpuPercent)}%)\n`),
    );
    return measurement;
  } catch (error) {
    const message = (error as Error).message;
    process.stdout.write(`FAILED: ${message}\n`);
    return { server: kind, error: message };
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/** A scenario's measurements, one per server. */
export interface ScenarioResult {
  title: string;
  parameters: Record<string, unknown>;
  /** One measurement per server: with rounds, the server's median round. */
  rows: Array<Measurement | FailedMeasurement>;
  /** Every round, in the order run (S1 and S2). */
  rounds?: Array<Array<Measurement | FailedMeasurement>>;
  /** The figure that picks the median round, and its value in each round (null: the run failed). */
  roundFigure?: { label: string; values: Array<Array<{ server: ServerKind; value: number | null }>> };
}

/** One run of a step of S4. */
export interface SaturationStep {
  conversations: number;
  rate: number;
  offeredTokensPerSecond: number;
  /** This run held. */
  held: boolean;
  why: string;
  /** 1 for a step's first run; 2, 3, … for the runs that decide a step whose first did not hold. */
  run: number;
  /** Set on a step's last run: whether the step held (its first run, or most of its runs). */
  stepHeld?: boolean;
  measurement: Measurement | FailedMeasurement;
}

export interface SaturationResult {
  title: string;
  parameters: Record<string, unknown>;
  steps: Partial<Record<ServerKind, SaturationStep[]>>;
  /** The highest offered rate held, and what was delivered then. */
  held: Partial<Record<ServerKind, { offeredTokensPerSecond: number; deliveredTokensPerSecond: number; messagesPerSecond: number } | null>>;
}

export interface PublisherScenario {
  title: string;
  available: boolean;
  reason?: string;
  rows: Array<PublisherResult & { gatewayRequests: number }>;
}

const runId = (name: string): string => `${name}-${Date.now().toString(36)}`;

function deadlineFor(seconds: number, spreadMs: number): number {
  return seconds * 1000 + spreadMs + 30_000;
}

/** What picks the median round of a scenario with rounds. */
interface RoundFigure {
  label: string;
  read: (measurement: Measurement) => number;
}
const TOKEN_P99: RoundFigure = { label: 'token latency p99 (ms)', read: (m) => m.load.tokenLatency.p99 };
const DELIVERY_P99: RoundFigure = { label: 'delivery latency p99 (ms)', read: (m) => m.load.deliveryLatency.p99 };

/**
 * Measures every server `count` times, a round at a time, the order reversed every other round:
 * longrun and the floor run side by side in each round, and neither always first. Each server's
 * row is its median round by `figure` (a failed run counts as the worst); all rounds are kept.
 */
async function inRounds(
  name: string,
  count: number,
  figure: RoundFigure,
  /** Measures `kind` once; `round` counts from 1. */
  run: (kind: ServerKind, round: number) => Promise<Measurement>,
): Promise<Pick<ScenarioResult, 'rows' | 'rounds' | 'roundFigure'>> {
  const rounds: Array<Array<Measurement | FailedMeasurement>> = [];
  for (let round = 0; round < count; round += 1) {
    const order = round % 2 === 0 ? servers : [...servers].reverse();
    const results: Array<Measurement | FailedMeasurement> = [];
    for (const kind of order) results.push(await attempt(kind, count > 1 ? `${name}.${round + 1}` : name, () => run(kind, round + 1)));
    rounds.push(results);
  }
  const rows = servers.map((kind) =>
    medianRun(
      rounds.map((round) => round.find((row) => row.server === kind)!),
      (row) => (isMeasurement(row) ? figure.read(row) : undefined),
    ),
  );
  return {
    rows,
    rounds,
    roundFigure: {
      label: figure.label,
      values: rounds.map((round) => round.map((row) => ({ server: row.server, value: isMeasurement(row) ? figure.read(row) : null }))),
    },
  };
}

/**
 * The name of a measurement's CPU profile (`--profile`), with `longrun` where the server's name
 * goes: `s2-longrun`, or `s2-r2-longrun` for the second of several rounds (or runs of an S4 step),
 * so that no round's profile replaces another's.
 */
function profileFile(scenario: string, round: number, of: number): string {
  return of > 1 ? `${scenario}-r${round}-longrun` : `${scenario}-longrun`;
}

async function scenarioS1(): Promise<ScenarioResult> {
  const { rate, seconds, rounds } = plan.s1;
  const measured = await inRounds('S1', rounds, TOKEN_P99, (kind, round) => {
    const spec: LoadSpec = { conversations: 1, subscribersPerConversation: 1, tokens: rate * seconds, rate, spreadMs: 0, idle: false, checkStore: kind === 'longrun', deadlineMs: deadlineFor(seconds, 0), runId: runId('s1') };
    return measure(kind, spec, { LONGRUN_FLUSH_MS: '0' }, profileFile('s1', round, rounds));
  });
  return { title: 'S1 latency: 1 conversation, 1 subscriber, LONGRUN_FLUSH_MS=0', parameters: { conversations: 1, subscribers: 1, rate, seconds, flushMs: 0, rounds }, ...measured };
}

async function scenarioS2(): Promise<ScenarioResult> {
  const { conversations, rate, seconds, rounds } = plan.s2;
  const measured = await inRounds('S2', rounds, DELIVERY_P99, (kind, round) => {
    const spreadMs = 1000 / rate;
    const spec: LoadSpec = { conversations, subscribersPerConversation: 1, tokens: rate * seconds, rate, spreadMs, idle: false, checkStore: kind === 'longrun', deadlineMs: deadlineFor(seconds, spreadMs), runId: runId('s2') };
    return measure(kind, spec, {}, profileFile('s2', round, rounds));
  });
  return {
    title: `S2 concurrency: ${conversations} conversations, each with its own subscriber connection, coalescing at the default 50 ms`,
    parameters: { conversations, subscribers: conversations, rate, seconds, flushMs: 50, rounds },
    ...measured,
  };
}

async function scenarioS3(): Promise<ScenarioResult> {
  const { subscribers, rate, seconds } = plan.s3;
  const rows: ScenarioResult['rows'] = [];
  for (const kind of servers) {
    const spec: LoadSpec = { conversations: 1, subscribersPerConversation: subscribers, tokens: rate * seconds, rate, spreadMs: 0, idle: false, checkStore: kind === 'longrun', deadlineMs: deadlineFor(seconds, 0), runId: runId('s3') };
    rows.push(await attempt(kind, 'S3', () => measure(kind, spec, {}, 's3-longrun')));
  }
  return {
    title: `S3 fan-out: 1 conversation, ${subscribers} subscribers on ${subscribers} connections`,
    parameters: { conversations: 1, subscribers, rate, seconds, flushMs: 50 },
    rows,
  };
}

/** Why a saturation step did not hold, or 'held'. */
export function verdict(measurement: Measurement | FailedMeasurement, offered: number): { held: boolean; why: string } {
  if ('error' in measurement) return { held: false, why: `failed: ${measurement.error}` };
  const { load } = measurement;
  const problems: string[] = [];
  if (load.lostTokens > 0) problems.push(`${load.lostTokens} tokens lost`);
  if (load.duplicateEvents > 0) problems.push(`${load.duplicateEvents} duplicates`);
  if (load.corruptSubscriptions > 0) problems.push(`${load.corruptSubscriptions} texts differ`);
  if (load.incomplete > 0) problems.push(`${load.incomplete} turns unfinished`);
  if (load.tokenLatency.p99 > S4_P99_LIMIT_MS) problems.push(`token p99 ${load.tokenLatency.p99} ms`);
  if (load.scheduleLag.p99 > S4_P99_LIMIT_MS) problems.push(`schedule lag p99 ${load.scheduleLag.p99} ms`);
  if (load.tokensPerSecond < offered * S4_DELIVERED_SHARE) problems.push(`delivered ${Math.round(load.tokensPerSecond)} of ${Math.round(offered)} tokens/s`);
  return problems.length === 0 ? { held: true, why: 'held' } : { held: false, why: problems.join(', ') };
}

async function scenarioS4(): Promise<SaturationResult> {
  const { conversations, rates, seconds, runs: runsToDecide } = plan.s4;
  const result: SaturationResult = {
    title: `S4 saturation: ${conversations} conversations, per-conversation rate raised by about √2 a step until token or schedule-lag p99 > ${S4_P99_LIMIT_MS} ms, a loss, or less than ${S4_DELIVERED_SHARE * 100} % of the rate delivered${runsToDecide > 1 ? `, in most of ${runsToDecide} runs when the first fails` : ''}`,
    parameters: { conversations, rates, seconds, flushMs: 50, p99LimitMs: S4_P99_LIMIT_MS },
    steps: {},
    held: {},
  };
  for (const kind of servers) {
    const steps: SaturationStep[] = [];
    result.steps[kind] = steps;
    result.held[kind] = null;
    for (const rate of rates) {
      const spreadMs = 1000 / rate;
      const once = async (run: number): Promise<SaturationStep> => {
        const spec: LoadSpec = { conversations, subscribersPerConversation: 1, tokens: Math.round(rate * seconds), rate, spreadMs, idle: false, checkStore: kind === 'longrun', deadlineMs: deadlineFor(seconds, spreadMs), runId: runId(`s4-${rate}`) };
        const measurement = await attempt(kind, `S4 ${String(rate).padStart(4)}/s${run > 1 ? ` (${run} of ${runsToDecide})` : ''}`, () => measure(kind, spec, {}, profileFile(`s4-${rate}`, run, runsToDecide)));
        const { held, why } = verdict(measurement, conversations * rate);
        const step: SaturationStep = { conversations, rate, offeredTokensPerSecond: conversations * rate, held, why, run, measurement };
        steps.push(step);
        return step;
      };
      // A step whose first run does not hold is run again, up to `runsToDecide` runs in all, and
      // holds if most of them do: one stall of a loop fails a run, and on this machine that
      // decided whole ladders. (It stops as soon as the majority is known either way.)
      const runs: SaturationStep[] = [];
      let outcome = stepOutcome([], runsToDecide);
      while (outcome.more) {
        runs.push(await once(runs.length + 1));
        outcome = stepOutcome(runs.map((step) => step.held), runsToDecide);
      }
      runs.at(-1)!.stepHeld = outcome.held;
      if (!outcome.held) break;
      const measurement = runs.find((step) => step.held)!.measurement;
      if (!('error' in measurement)) {
        result.held[kind] = {
          offeredTokensPerSecond: conversations * rate,
          deliveredTokensPerSecond: measurement.load.tokensPerSecond,
          messagesPerSecond: measurement.load.messagesPerSecond,
        };
      }
    }
  }
  return result;
}

async function scenarioIdle(): Promise<ScenarioResult> {
  const { connections } = plan.idle;
  const rows: ScenarioResult['rows'] = [];
  for (const kind of servers) {
    const spec: LoadSpec = { conversations: connections, subscribersPerConversation: 1, tokens: 0, rate: 0, spreadMs: 0, idle: true, checkStore: false, deadlineMs: 0, runId: runId('idle') };
    rows.push(await attempt(kind, 'idle', () => measure(kind, spec)));
  }
  return { title: `Idle memory: ${connections} connections, each with one subscription, no traffic`, parameters: { connections }, rows };
}

async function scenarioPublisher(): Promise<PublisherScenario> {
  const title = 'Publisher cost: HTTP requests of the AppSync publisher (worker Lambda) per 1000 tokens, against the gateway acting as AppSync';
  if (!existsSync(join(ROOT, 'src', 'publisher', 'appsync.ts'))) {
    return { title, available: false, reason: 'src/publisher/appsync.ts is not there yet', rows: [] };
  }
  const credentials = { accessKeyId: 'AKIDBENCHWORKER', secretAccessKey: 'bench-worker-secret' };
  const rows: PublisherScenario['rows'] = [];
  for (const rate of plan.publisher.rates) {
    process.stdout.write(`  publisher ${rate} tok/s `);
    const { child: server, ready } = await startServer(
      'longrun',
      { LONGRUN_WORKER_ACCESS_KEY_ID: credentials.accessKeyId, LONGRUN_WORKER_SECRET_ACCESS_KEY: credentials.secretAccessKey },
      undefined,
    );
    const worker = new Child('publisher', built.publisher, [], {});
    try {
      const before = await server.stats();
      const spec: PublisherSpec = { tokens: plan.publisher.tokens, rate, flushMs: plan.publisher.flushMs, credentials, runId: runId('publisher') };
      worker.send({ type: 'run', spec, target: ready });
      const message = await worker.next((candidate) => candidate.type === 'result' || candidate.type === 'failed', (plan.publisher.tokens / rate) * 1000 + 60_000, 'the publisher run');
      if (message.type === 'failed') throw new Error(message.message);
      const result = (message as Extract<ChildMessage, { type: 'result' }>).result as PublisherResult;
      const after = await server.stats();
      rows.push({ ...result, gatewayRequests: after.httpRequests - before.httpRequests });
      process.stdout.write(`${result.requests} requests for ${result.tokens} tokens (pattern: ${result.patternRequests}), exact: ${result.exact}\n`);
    } catch (error) {
      process.stdout.write(`FAILED: ${(error as Error).message}\n`);
      return { title, available: false, reason: `the run failed: ${(error as Error).message}`, rows };
    } finally {
      await Promise.all([server.stop(), worker.stop()]);
      await Promise.all([server.kill(), worker.kill()]);
    }
  }
  return { title, available: true, rows };
}

// ---------------------------------------------------------------------------------------------
// Machine, versions, targets

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  let fileLimit = 'unknown';
  try {
    fileLimit = execSync('ulimit -n', { shell: '/bin/sh' }).toString().trim();
  } catch {
    // reported as unknown
  }
  return {
    cpus: cpus.length,
    model: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    fileLimit,
  };
}

function versions(): Record<string, string> {
  const read = (path: string): string => {
    try {
      return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  const result: Record<string, string> = { longrun: read(join(ROOT, 'package.json')) };
  for (const name of ['ws', 'graphql', 'graphql-ws', 'graphql-yoga', 'prom-client', 'better-sqlite3', 'esbuild']) {
    result[name] = read(join(ROOT, 'node_modules', name, 'package.json'));
  }
  try {
    result.commit = execSync('git rev-parse --short HEAD', { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    // not a git checkout
  }
  return result;
}

/** One target of the issue, checked against the figures. */
export interface TargetCheck {
  target: string;
  value: string;
  met: boolean | null;
}

const isMeasurement = (row: Measurement | FailedMeasurement | undefined): row is Measurement => row !== undefined && !('error' in row);
const rowOf = (scenario: ScenarioResult | undefined, kind: ServerKind): Measurement | undefined => {
  const row = scenario?.rows.find((candidate) => candidate.server === kind);
  return isMeasurement(row) ? row : undefined;
};

/** A server's runs of a scenario: every round, or its one row. */
const roundRows = (scenario: ScenarioResult | undefined, kind: ServerKind): Array<Measurement | FailedMeasurement> =>
  (scenario?.rounds ?? [scenario?.rows ?? []]).flatMap((round) => round.filter((row) => row.server === kind));
/** The figure that picked the median round, for each round in order (a failed run: +∞); empty when the server has no run. */
const roundValues = (scenario: ScenarioResult | undefined, kind: ServerKind): number[] =>
  (scenario?.roundFigure?.values ?? [])
    .map((round) => round.find((entry) => entry.server === kind))
    .filter((entry) => entry !== undefined)
    .map((entry) => entry.value ?? Number.POSITIVE_INFINITY);
const signed = (value: number): string => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(3)}` : 'failed');
const signless = (value: number): string => (Number.isFinite(value) ? value.toFixed(3) : 'failed');

/**
 * Other processes took more than this share of a core during a measurement (the "other processes"
 * row): its verdict then says how much, since on a two-core machine that load moves every p99.
 */
const DISTURBED_PERCENT = 10;

/** " — disturbed: …" when other load went over `DISTURBED_PERCENT` in any of `rows`, else "". */
function disturbance(rows: Array<Measurement | FailedMeasurement | undefined>): string {
  const most = Math.max(0, ...rows.filter(isMeasurement).map((row) => row.otherCpuPercent));
  return most > DISTURBED_PERCENT ? ` — disturbed: other processes took up to ${Math.round(most)} % of a core meanwhile` : '';
}

function checkTargets(results: Results): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const { s1, s2, s3, s4, idle } = results.scenarios;
  const stepRows = (...kinds: ServerKind[]) => kinds.flatMap((kind) => (s4?.steps[kind] ?? []).map((step) => step.measurement));
  const all: Measurement[] = [];
  for (const scenario of [s1, s2, s3]) all.push(...roundRows(scenario, 'longrun').filter(isMeasurement));
  for (const step of s4?.steps.longrun ?? []) if (step.held && isMeasurement(step.measurement)) all.push(step.measurement);
  if (all.length > 0) {
    const lost = all.reduce((sum, row) => sum + row.load.lostTokens + row.load.seqGaps + row.load.corruptSubscriptions + (row.load.storeMismatches ?? 0), 0);
    const duplicates = all.reduce((sum, row) => sum + row.load.duplicateEvents, 0);
    checks.push({ target: 'No loss and no duplicate (S1, S2, S3, held S4 steps)', value: `${lost} lost, ${duplicates} duplicates`, met: lost === 0 && duplicates === 0 });
  }
  const held = s4?.held;
  const rateHeld = (kind: ServerKind): string => (held?.[kind] ? `${held[kind]!.offeredTokensPerSecond} tokens/s` : 'no step');
  for (const [baseline, share, target] of [
    ['yoga', 2, 'S4 rate held ≥ 2× yoga'],
    ['bare-ws', 0.5, 'S4 rate held ≥ ½ the bare-ws floor'],
  ] as const) {
    if (held?.longrun === undefined || held[baseline] === undefined) continue;
    const mine = held.longrun?.offeredTokensPerSecond ?? 0;
    const theirs = held[baseline]?.offeredTokensPerSecond ?? 0;
    const ratio = theirs > 0 ? mine / theirs : mine > 0 ? Number.POSITIVE_INFINITY : 0;
    checks.push({
      target,
      value: `${fmtRatio(ratio)}× (longrun ${rateHeld('longrun')}, ${baseline} ${rateHeld(baseline)})${disturbance(stepRows('longrun', baseline))}`,
      met: ratio >= share,
    });
  }
  const s3Row = rowOf(s3, 'longrun');
  if (s3Row) {
    const deliveries = s3Row.load.tokensPerSecond;
    checks.push({
      target: 'S3 token p99 < 100 ms at 50k token deliveries/s',
      value: `p99 ${s3Row.load.tokenLatency.p99} ms at ${Math.round(deliveries)} token deliveries/s (${Math.round(s3Row.load.messagesPerSecond)} messages/s)${disturbance([s3Row])}`,
      met: deliveries >= 45_000 ? s3Row.load.tokenLatency.p99 < 100 : null,
    });
  }
  const s2Row = rowOf(s2, 'longrun');
  if (s2Row) {
    const each = roundValues(s2, 'longrun');
    checks.push({
      target: 'S2 p99 < 5 ms (delivery latency: createdAt → received)',
      value:
        `delivery p99 ${s2Row.load.deliveryLatency.p99} ms${each.length > 1 ? ` (the median of ${each.length} rounds: ${each.map(signless).join(', ')})` : ''}; ` +
        `token p99, coalescing included: ${s2Row.load.tokenLatency.p99} ms${disturbance(roundRows(s2, 'longrun'))}`,
      met: s2Row.load.deliveryLatency.p99 < 5,
    });
  }
  // Longrun's p99 less the floor's, in each round (they run side by side), and the median of those.
  const s1Longrun = roundValues(s1, 'longrun');
  const s1Floor = roundValues(s1, 'bare-ws');
  if (s1Longrun.length > 0 && s1Longrun.length === s1Floor.length) {
    const differences = roundDifferences(s1Longrun, s1Floor);
    const difference = median(differences);
    checks.push({
      target: 'S1 p99 within 1 ms of the floor',
      value:
        `${signed(difference)} ms${differences.length > 1 ? ` (the median of ${differences.length} rounds, each longrun's p99 less the floor's: ${differences.map(signed).join(', ')} ms)` : ''}` +
        disturbance([...roundRows(s1, 'longrun'), ...roundRows(s1, 'bare-ws')]),
      met: difference <= 1,
    });
  }
  const idleRow = rowOf(idle, 'longrun');
  if (idleRow?.idle) {
    // Below a few thousand connections the RSS delta is within the noise of the young generation's size.
    checks.push({
      target: 'Idle memory < 15 KB per connection',
      value: `${idleRow.idle.rssPerConnectionKB.toFixed(1)} KB RSS (${idleRow.idle.heapPerConnectionKB.toFixed(1)} KB heap) over ${idleRow.idle.connections} connections`,
      met: idleRow.idle.connections >= 2000 ? idleRow.idle.rssPerConnectionKB < 15 : null,
    });
  }
  return checks;
}

function fmtRatio(value: number): string {
  return Number.isFinite(value) ? value.toFixed(2) : '∞';
}

/** Everything one run found. */
export interface Results {
  mode: 'quick' | 'full';
  date: string;
  durationSeconds: number;
  machine: Record<string, unknown>;
  /** The machine's 1, 5 and 15 minute load averages when the run started and ended. */
  loadAverage: { start: number[]; end: number[] };
  /** The children's scheduling priority (`--nice`), 0 by default. */
  niceness: number;
  /** Extra gateway settings given with `--gateway-env`. */
  gatewayEnvironment: Record<string, string>;
  versions: Record<string, string>;
  servers: ServerKind[];
  plan: Plan;
  scenarios: {
    s1?: ScenarioResult;
    s2?: ScenarioResult;
    s3?: ScenarioResult;
    s4?: SaturationResult;
    idle?: ScenarioResult;
    publisher?: PublisherScenario;
  };
  targets: TargetCheck[];
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = now();
  console.log(`longrun benchmark (${mode}) on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`);
  built = await buildChildren();
  scratch = mkdtempSync(join(os.tmpdir(), 'longrun-bench-'));
  const results: Results = {
    mode,
    date: new Date().toISOString(),
    durationSeconds: 0,
    machine: machine(),
    loadAverage: { start: os.loadavg().map((value) => Math.round(value * 100) / 100), end: [] },
    niceness: niceness ?? 0,
    gatewayEnvironment,
    versions: versions(),
    servers,
    plan,
    scenarios: {},
    targets: [],
  };
  try {
    if (only.has('s1')) results.scenarios.s1 = await scenarioS1();
    if (only.has('s2')) results.scenarios.s2 = await scenarioS2();
    if (only.has('s3')) results.scenarios.s3 = await scenarioS3();
    if (only.has('s4')) results.scenarios.s4 = await scenarioS4();
    if (only.has('idle')) results.scenarios.idle = await scenarioIdle();
    if (only.has('publisher')) results.scenarios.publisher = await scenarioPublisher();
  } finally {
    killAll();
    rmSync(BUILD_DIR, { recursive: true, force: true });
  }
  results.loadAverage.end = os.loadavg().map((value) => Math.round(value * 100) / 100);
  results.targets = checkTargets(results);
  results.durationSeconds = Math.round((now() - started) / 100) / 10;

  mkdirSync(RESULTS_DIR, { recursive: true });
  const markdown = renderMarkdown(results);
  const json = `${JSON.stringify(results, null, 2)}\n`;
  for (const name of label ? [label] : ['latest', mode]) {
    writeFileSync(join(RESULTS_DIR, `${name}.json`), json);
    writeFileSync(join(RESULTS_DIR, `${name}.md`), markdown);
  }
  console.log(`\n${markdown}`);
  console.log(`Written: ${label ? `bench/results/${label}.{json,md}` : `bench/results/latest.{json,md} and ${mode}.{json,md}`} in ${results.durationSeconds} s.`);
  if (profiling) console.log(`CPU profiles: ${readdirSync(PROFILE_DIR).map((file) => join('bench/results/profiles', file)).join(', ')}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    killAll();
    process.exit(1);
  },
);
