/**
 * Renders a benchmark run (`bench/run.ts`) as the markdown of `bench/results/latest.md`: the
 * machine, the issue's targets, then one table per scenario with longrun, each baseline and the
 * ratios longrun ÷ baseline.
 */
import type { ServerKind } from './common.js';
import type { FailedMeasurement, Measurement, Results, SaturationResult, ScenarioResult } from './run.js';

type Row = [label: string, value: (measurement: Measurement) => number | null, format: (value: number) => string];

const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(value < 10 ? 3 : 1) : '—');
const count = (value: number): string => (Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '—');
const percent = (value: number): string => (Number.isFinite(value) ? `${Math.round(value)} %` : '—');
const megabytes = (value: number): string => (Number.isFinite(value) ? value.toFixed(0) : '—');
const kilobytes = (value: number): string => (Number.isFinite(value) ? value.toFixed(1) : '—');
const ratio = (a: number | null, b: number | null): string =>
  a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? '—' : `${(a / b).toFixed(2)}×`;

const LATENCY_ROWS: Row[] = [
  ['token latency p50 (ms)', (m) => m.load.tokenLatency.p50, ms],
  ['token latency p99 (ms)', (m) => m.load.tokenLatency.p99, ms],
  ['token latency p99.9 (ms)', (m) => m.load.tokenLatency.p999, ms],
  ['token latency max (ms)', (m) => m.load.tokenLatency.max, ms],
  ['delivery latency p50 (ms)', (m) => m.load.deliveryLatency.p50, ms],
  ['delivery latency p99 (ms)', (m) => m.load.deliveryLatency.p99, ms],
];
const THROUGHPUT_ROWS: Row[] = [
  ['tokens delivered / s', (m) => m.load.tokensPerSecond, count],
  ['messages delivered / s', (m) => m.load.messagesPerSecond, count],
];
const CORRECTNESS_ROWS: Row[] = [
  ['tokens delivered', (m) => m.load.deliveredTokens, count],
  ['tokens missing at the end (lost or late)', (m) => m.load.lostTokens, count],
  ['seq gaps / duplicates', (m) => m.load.seqGaps + m.load.duplicateEvents, count],
  ['texts not byte-exact', (m) => m.load.corruptSubscriptions, count],
  ['stored lastSeq ≠ received', (m) => m.load.storeMismatches, count],
];
const RESOURCE_ROWS: Row[] = [
  ['server CPU (% of a core)', (m) => m.serverCpuPercent, percent],
  ['server CPU, event-loop thread alone (% of a core)', (m) => m.serverLoopThreadCpuPercent, percent],
  ['server event-loop delay p99 / max (ms)', (m) => m.serverLoopDelayMaxMs, ms],
  ['other processes on the machine (% of a core)', (m) => m.otherCpuPercent, percent],
  ['server RSS at end / peak (MB)', (m) => m.serverPeakRssMB, megabytes],
  ['load generator CPU (% of a core)', (m) => m.load.loadCpuPercent, percent],
];

function scenarioTable(scenario: ScenarioResult, servers: ServerKind[], rows: Row[]): string {
  const measurements = new Map<ServerKind, Measurement | FailedMeasurement>(scenario.rows.map((row) => [row.server, row]));
  const baselines = servers.filter((kind) => kind !== 'longrun');
  const hasLongrun = servers.includes('longrun');
  const header = ['', ...servers, ...(hasLongrun ? baselines.map((kind) => `longrun ÷ ${kind}`) : [])];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, index) => (index === 0 ? '---' : '---:')).join('|')}|`];
  for (const [label, read, format] of rows) {
    const values = servers.map((kind) => {
      const measurement = measurements.get(kind);
      return measurement && !('error' in measurement) ? read(measurement) : null;
    });
    const cells = values.map((value, index) => {
      const measurement = measurements.get(servers[index]!);
      if (measurement && 'error' in measurement) return 'failed';
      if (label.startsWith('server RSS') && measurement) return `${megabytes((measurement as Measurement).serverRssMB)} / ${megabytes(value ?? Number.NaN)}`;
      if (label.startsWith('server event-loop') && measurement) return `${ms((measurement as Measurement).serverLoopDelayP99Ms)} / ${ms(value ?? Number.NaN)}`;
      return value === null ? '—' : format(value);
    });
    const longrunValue = hasLongrun ? values[servers.indexOf('longrun')] ?? null : null;
    const ratios = hasLongrun ? baselines.map((kind) => ratio(longrunValue, values[servers.indexOf(kind)] ?? null)) : [];
    lines.push(`| ${[label, ...cells, ...ratios].join(' | ')} |`);
  }
  const failures = scenario.rows.filter((row): row is FailedMeasurement => 'error' in row);
  for (const failure of failures) lines.push('', `${failure.server} failed: ${failure.error}`);
  return lines.join('\n');
}

/** With rounds: each round's figure, in the order run, under the table of median rounds. */
function roundsNote(scenario: ScenarioResult): string {
  const figure = scenario.roundFigure;
  if (!figure || figure.values.length < 2) return '';
  const rounds = figure.values.map(
    (round, index) => `${index + 1}: ${round.map((entry) => `${entry.server} ${entry.value === null ? 'failed' : ms(entry.value)}`).join(', ')}`,
  );
  return `\n\nEach server's column is its median round of ${figure.values.length} by ${figure.label}; the rounds, each server's runs in the order run: ${rounds.join(' · ')}.`;
}

function parameters(values: Record<string, unknown>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key} ${Array.isArray(value) ? value.join(', ') : String(value)}`)
    .join(' · ');
}

function saturationTables(scenario: SaturationResult, servers: ServerKind[]): string {
  const lines = [
    '| server | tokens/s per conversation | run | offered tokens/s | delivered tokens/s | messages/s | token p99 (ms) | schedule lag p99 (ms) | delivery p99 (ms) | lost | server CPU | loop thread CPU | server loop delay max (ms) | load CPU | others\' CPU | verdict |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const kind of servers) {
    for (const step of scenario.steps[kind] ?? []) {
      const m = step.measurement;
      // A step decided by more than one run says so on its last.
      const why = step.run > 1 && step.stepHeld !== undefined ? `${step.why}; the step ${step.stepHeld ? 'held' : 'did not hold'}` : step.why;
      const run = String(step.run);
      if ('error' in m) {
        lines.push(`| ${kind} | ${step.rate} | ${run} | ${count(step.offeredTokensPerSecond)} | — | — | — | — | — | — | — | — | — | — | — | ${why} |`);
        continue;
      }
      lines.push(
        `| ${kind} | ${step.rate} | ${run} | ${count(step.offeredTokensPerSecond)} | ${count(m.load.tokensPerSecond)} | ${count(m.load.messagesPerSecond)} | ${ms(m.load.tokenLatency.p99)} | ${ms(m.load.scheduleLag.p99)} | ${ms(m.load.deliveryLatency.p99)} | ${count(m.load.lostTokens)} | ${percent(m.serverCpuPercent)} | ${percent(m.serverLoopThreadCpuPercent)} | ${ms(m.serverLoopDelayMaxMs)} | ${percent(m.load.loadCpuPercent)} | ${percent(m.otherCpuPercent)} | ${why} |`,
      );
    }
  }
  const held = scenario.held;
  const longrun = held.longrun?.offeredTokensPerSecond ?? null;
  lines.push('', '| server | highest rate held (tokens/s) | delivered then (tokens/s) | messages/s then | longrun ÷ server |', '|---|---:|---:|---:|---:|');
  for (const kind of servers) {
    const entry = held[kind];
    lines.push(
      entry
        ? `| ${kind} | ${count(entry.offeredTokensPerSecond)} | ${count(entry.deliveredTokensPerSecond)} | ${count(entry.messagesPerSecond)} | ${ratio(longrun, entry.offeredTokensPerSecond)} |`
        : `| ${kind} | none held | — | — | — |`,
    );
  }
  return lines.join('\n');
}

/** The markdown of a run. */
export function renderMarkdown(results: Results): string {
  const { machine, versions, servers, scenarios } = results;
  const out: string[] = [];
  out.push(`# longrun benchmark: ${results.mode} run`, '');
  out.push(
    `${results.date}, ${results.durationSeconds} s. Machine: ${String(machine.cpus)} × ${String(machine.model)}, ${String(machine.memoryGiB)} GiB, ${String(machine.platform)}, Node ${String(machine.node)}, \`ulimit -n\` ${String(machine.fileLimit)}.`,
    '',
    `Load average (1, 5, 15 min) at the start: ${results.loadAverage.start.join(', ')}; at the end: ${results.loadAverage.end.join(', ')}. Children's priority (nice): ${results.niceness}.${Object.keys(results.gatewayEnvironment).length > 0 ? ` Extra gateway settings: ${Object.entries(results.gatewayEnvironment).map(([name, value]) => `${name}=${value}`).join(', ')}.` : ''}`,
    '',
    `Versions: ${Object.entries(versions)
      .map(([name, version]) => `${name} ${version}`)
      .join(', ')}.`,
    '',
    'Every server runs in its own process; the load generator in another; all on 127.0.0.1 and sharing the machine\'s cores. Latencies in ms. *Token latency*: the model emitted the token (its `[stamp]`) → the subscriber received it, coalescing included. *Delivery latency*: the server created the event (`createdAt`) → received. Ratios are longrun ÷ baseline (for latency and memory, lower is better; for rates, higher).',
    '',
  );
  if (results.targets.length > 0) {
    out.push('## Targets of the issue', '', '| target | measured | met |', '|---|---|---|');
    for (const check of results.targets) out.push(`| ${check.target} | ${check.value} | ${check.met === null ? 'not at this scale' : check.met ? 'yes' : '**no**'} |`);
    out.push('');
  }
  if (scenarios.s1) {
    out.push(`## ${scenarios.s1.title}`, '', parameters(scenarios.s1.parameters), '', scenarioTable(scenarios.s1, servers, [...LATENCY_ROWS, ...CORRECTNESS_ROWS, ...RESOURCE_ROWS]) + roundsNote(scenarios.s1), '');
  }
  if (scenarios.s2) {
    out.push(`## ${scenarios.s2.title}`, '', parameters(scenarios.s2.parameters), '', scenarioTable(scenarios.s2, servers, [...THROUGHPUT_ROWS, ...LATENCY_ROWS, ...CORRECTNESS_ROWS, ...RESOURCE_ROWS]) + roundsNote(scenarios.s2), '');
  }
  if (scenarios.s3) {
    out.push(`## ${scenarios.s3.title}`, '', parameters(scenarios.s3.parameters), '', scenarioTable(scenarios.s3, servers, [...THROUGHPUT_ROWS, ...LATENCY_ROWS, ...CORRECTNESS_ROWS, ...RESOURCE_ROWS]), '');
  }
  if (scenarios.s4) {
    out.push(`## ${scenarios.s4.title}`, '', parameters(scenarios.s4.parameters), '', saturationTables(scenarios.s4, servers), '');
  }
  if (scenarios.idle) {
    out.push(
      `## ${scenarios.idle.title}`,
      '',
      scenarioTable(scenarios.idle, servers, [
        ['RSS per connection (KB)', (m) => m.idle?.rssPerConnectionKB ?? null, kilobytes],
        ['JS heap per connection (KB)', (m) => m.idle?.heapPerConnectionKB ?? null, kilobytes],
        ['RSS before (MB)', (m) => m.idle?.rssBeforeMB ?? null, megabytes],
        ['RSS with the connections (MB)', (m) => m.idle?.rssAfterMB ?? null, megabytes],
      ]),
      '',
    );
  }
  if (scenarios.publisher) {
    const publisher = scenarios.publisher;
    out.push(`## ${publisher.title}`, '');
    if (!publisher.available) out.push(`Not available: ${publisher.reason ?? 'unknown reason'}.`, '');
    if (publisher.rows.length > 0) {
      out.push(
        '| model tokens/s | tokens | characters | LONGRUN_FLUSH_MS | longrun requests | per 1000 tokens | counted at the gateway | pattern requests (100 chars or sentence end) | per 1000 tokens | mean request (ms) | delivered exactly |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
      );
      for (const row of publisher.rows) {
        out.push(
          `| ${row.rate} | ${row.tokens} | ${row.characters} | ${row.flushMs} | ${row.requests} | ${row.requestsPer1000Tokens.toFixed(0)} | ${row.gatewayRequests} | ${row.patternRequests} | ${row.patternRequestsPer1000Tokens.toFixed(0)} | ${row.meanRequestMs.toFixed(2)} | ${row.exact ? 'yes' : '**no**'} |`,
        );
      }
      out.push('');
    }
  }
  const profiled: Array<[string, Measurement]> = [];
  for (const [name, scenario] of Object.entries({ S1: scenarios.s1, S2: scenarios.s2, S3: scenarios.s3, idle: scenarios.idle })) {
    const row = scenario?.rows.find((candidate) => candidate.server === 'longrun');
    if (row && !('error' in row) && row.profile) profiled.push([name, row]);
  }
  for (const step of scenarios.s4?.steps.longrun ?? []) {
    if (!('error' in step.measurement) && step.measurement.profile) profiled.push([`S4 ${step.rate}/s`, step.measurement]);
  }
  if (profiled.length > 0) {
    out.push('## Where the gateway spends its CPU (`--profile`)', '');
    for (const [name, measurement] of profiled) {
      const profile = measurement.profile!;
      out.push(
        `**${name}**: ${profile.busyMs} ms busy, ${profile.idlePercent} % idle. Modules: ${profile.modules
          .slice(0, 8)
          .map((entry) => `${entry.module} ${entry.selfPercent} %`)
          .join(', ')}. Functions: ${profile.functions
          .slice(0, 10)
          .map((entry) => `\`${entry.name}\` (${entry.module}) ${entry.selfPercent} %`)
          .join(', ')}.`,
        '',
      );
    }
  }
  return `${out.join('\n')}\n`;
}
