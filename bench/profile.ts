/**
 * Summarises a V8 CPU profile (`node --cpu-prof`) of a benchmark child: where the process spent
 * its CPU, by function and by module. The children are esbuild bundles; esbuild marks where each
 * source module starts with a `// path` comment, which is how a bundle line maps back to a file.
 *
 *   npx tsx bench/profile.ts bench/results/profiles/s3-longrun.cpuprofile
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the time went. Percentages are of the time the process was not idle. */
export interface ProfileSummary {
  file: string;
  /** Sampled time, idle included, in ms. */
  totalMs: number;
  busyMs: number;
  idlePercent: number;
  /** Functions by self time. */
  functions: Array<{ name: string; module: string; selfPercent: number }>;
  /** Modules (a source file, a package, `node:internal`, `(garbage collector)`) by self time. */
  modules: Array<{ module: string; selfPercent: number }>;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Maps a line of an esbuild bundle to the source module it came from. */
function bundleModules(path: string): (line: number) => string {
  if (!existsSync(path)) return () => 'bundle';
  const starts: Array<{ line: number; module: string }> = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((text, line) => {
      const match = /^\/\/ (\S+\.(?:ts|js|mjs|cjs))$/.exec(text);
      if (match) starts.push({ line, module: match[1]! });
    });
  return (line) => {
    let low = 0;
    let high = starts.length - 1;
    let found = 'bundle';
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (starts[middle]!.line <= line) {
        found = starts[middle]!.module;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return found;
  };
}

function moduleOf(url: string, line: number, bundles: Map<string, (line: number) => string>, root: string, profileDir: string): string {
  if (url === '') return '(native)';
  if (url.startsWith('node:')) return 'node:internal';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.includes('/.build/') && path.endsWith('.mjs')) {
    let lookup = bundles.get(path);
    // The bundle is deleted after a run; `bench/run.ts` keeps a copy beside the profiles.
    if (!lookup) bundles.set(path, (lookup = bundleModules(existsSync(path) ? path : join(profileDir, basename(path)))));
    return lookup(line);
  }
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (packageMatch) return packageMatch[1]!;
  return path.startsWith(root) ? path.slice(root.length + 1) : path;
}

/** Reads and summarises a `.cpuprofile`. */
export function summariseProfile(file: string, root: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfMicros = new Map<number, number>();
  profile.samples.forEach((id, index) => {
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  const bundles = new Map<string, (line: number) => string>();
  const functions = new Map<string, { name: string; module: string; micros: number }>();
  const modules = new Map<string, number>();
  let idle = 0;
  let total = 0;
  for (const [id, micros] of selfMicros) {
    const node = byId.get(id);
    if (!node) continue;
    total += micros;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += micros;
      continue;
    }
    const module = functionName.startsWith('(') ? functionName : moduleOf(url, lineNumber, bundles, root, dirname(file));
    const name = functionName || '(anonymous)';
    const key = `${module}\u0000${name}`;
    const entry = functions.get(key) ?? { name, module, micros: 0 };
    entry.micros += micros;
    functions.set(key, entry);
    modules.set(module, (modules.get(module) ?? 0) + micros);
  }
  const busy = total - idle;
  const percent = (micros: number): number => Math.round((micros / Math.max(1, busy)) * 1000) / 10;
  return {
    file,
    totalMs: Math.round(total / 1000),
    busyMs: Math.round(busy / 1000),
    idlePercent: Math.round((idle / Math.max(1, total)) * 1000) / 10,
    functions: [...functions.values()]
      .sort((a, b) => b.micros - a.micros)
      .slice(0, top)
      .map((entry) => ({ name: entry.name, module: entry.module, selfPercent: percent(entry.micros) })),
    modules: [...modules.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([module, micros]) => ({ module, selfPercent: percent(micros) })),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: npx tsx bench/profile.ts <file.cpuprofile>');
    process.exit(2);
  }
  const summary = summariseProfile(file, process.cwd());
  console.log(`${summary.file}: ${summary.busyMs} ms busy of ${summary.totalMs} ms (${summary.idlePercent}% idle)\n`);
  console.log('By module:');
  for (const entry of summary.modules) console.log(`  ${entry.selfPercent.toFixed(1).padStart(5)}%  ${entry.module}`);
  console.log('\nBy function:');
  for (const entry of summary.functions) console.log(`  ${entry.selfPercent.toFixed(1).padStart(5)}%  ${entry.name}  (${entry.module})`);
}
