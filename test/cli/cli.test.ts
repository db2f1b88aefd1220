/**
 * The `longrun` CLI end to end: a child process against a real gateway on port 0. Assertions are
 * about what a person at a terminal sees: stdout holds exactly the answer, stderr one clear line
 * when something is wrong, and the exit status.
 *
 * The CLI under test is built from the current sources before the tests: esbuild bundles
 * `test/cli/run-cli.ts` (the same few lines as `bin/longrun.js`) into `node_modules/.cache/`, in
 * about 100 ms, and the tests run it with plain `node`. So they never test a stale `dist/`, and a
 * child starts in a quarter of a second instead of the second tsx takes to compile on the fly.
 * One more test runs `bin/longrun.js` itself when `dist/` is up to date (as after `npm test`,
 * which builds first).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { EVENTS_QUERY, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { closedPort, expectedText, TcpProxy, until } from '../client/helpers.js';

// Inside the project, so that the bundles' imports of packages (ws, ...) resolve from node_modules.
const BUNDLES = join(PROJECT_ROOT, 'node_modules', '.cache', 'longrun-cli-test');
const CLI = join(BUNDLES, 'longrun.mjs');
const SEED_CLIENT = join(BUNDLES, 'seed-client.mjs');

let test: TestGateway;
let scratch: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  // Code splitting keeps each command's lazy import lazy: `chat` does not load the gateway.
  await build({
    entryPoints: { longrun: join(PROJECT_ROOT, 'test', 'cli', 'run-cli.ts'), 'seed-client': join(PROJECT_ROOT, 'examples', 'seed-client.ts') },
    outdir: BUNDLES,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'error',
  });
  test = await startTestGateway();
  scratch = mkdtempSync(join(tmpdir(), 'longrun-cli-'));
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await test.stop();
  rmSync(scratch, { recursive: true, force: true });
});

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  finished: Promise<Finished>;
}

/** The environment of the child: this process's, without any LONGRUN_ setting, plus `extra`. */
function environment(extra: Record<string, string>): Record<string, string> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name, value]) => !name.startsWith('LONGRUN_') && value !== undefined));
  return { ...(base as Record<string, string>), ...extra };
}

/** Starts a command (`node` with `command`; by default the CLI built from the sources), pointed at the test gateway. */
function start(args: string[], options: { env?: Record<string, string>; command?: string[]; cwd?: string } = {}): Running {
  const env = options.env ?? environment({ LONGRUN_URL: test.endpoints.graphqlUrl, LONGRUN_API_KEY: test.apiKey });
  const command = options.command ?? [CLI];
  const child = spawn(process.execPath, [...command, ...args], { cwd: options.cwd ?? scratch, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const finished = new Promise<Finished>((resolve) => {
    child.on('close', (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, finished };
}

const run = (args: string[], options?: Parameters<typeof start>[1]): Promise<Finished> => start(args, options).finished;

const conversationIdIn = (stderr: string): string => {
  const match = /conversation ([0-9a-f-]{36})/.exec(stderr);
  if (!match) throw new Error(`no conversation id on stderr: ${stderr}`);
  return match[1]!;
};

async function stored(conversationId: string): Promise<any> {
  const answer = await test.graphql(
    `query($id: ID!) { conversation(conversationId: $id) { status turns { turn status } messages { turn role content } } }`,
    { id: conversationId },
  );
  return answer.body.data.conversation;
}

/** Asserts that stderr is exactly one line, with no stack trace, and returns it. */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line !== '');
  expect(lines, stderr).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m);
  return lines[0]!;
}

describe('longrun chat', () => {
  it('writes exactly the stored answer to stdout, status to stderr, and exits 0', async () => {
    const prompt = 'Tell me a long story [tokens=3000] [rate=4000]';
    const { code, stdout, stderr } = await run(['chat', prompt]);
    expect(code, stderr).toBe(0);
    const conversationId = conversationIdIn(stderr);
    const conversation = await stored(conversationId);
    expect(conversation.status).toBe('COMPLETE');
    expect(stdout).toBe(conversation.messages[1].content);
    expect(stdout).toBe(expectedText(prompt));
    expect(stderr).toMatch(/COMPLETE · first token after \d+ ms · 3000 tokens in [\d.]+ s \([\d.]+ tokens\/s\)/);
  });

  it('continues a conversation with --conversation, and honours --system', async () => {
    const first = await run(['chat', 'first [tokens=20]']);
    expect(first.code, first.stderr).toBe(0);
    const conversationId = conversationIdIn(first.stderr);
    const second = await run(['chat', '--conversation', conversationId, '--system', 'be brief', 'second [tokens=15]', '--quiet']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toBe('');
    const expected = simulatedAnswer({
      messages: [
        { role: 'user', content: 'first [tokens=20]' },
        { role: 'assistant', content: first.stdout },
        { role: 'user', content: 'second [tokens=15]' },
      ],
      system: 'be brief',
    }).tokens.join('');
    expect(second.stdout).toBe(expected);
    expect((await stored(conversationId)).turns).toEqual([
      { turn: 1, status: 'COMPLETE' },
      { turn: 2, status: 'COMPLETE' },
    ]);
  });

  it('--json prints one event per line, each parseable, seq 1..n, ending with COMPLETE', async () => {
    const prompt = 'as json [tokens=300] [rate=3000]';
    const { code, stdout, stderr } = await run(['chat', '--json', prompt]);
    expect(code, stderr).toBe(0);
    expect(stdout.endsWith('\n')).toBe(true);
    const events = stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.at(-1).type).toBe('COMPLETE');
    expect(events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(expectedText(prompt));
    const replayed = await test.graphql(EVENTS_QUERY, { conversationId: conversationIdIn(stderr), afterSeq: 0 });
    expect(events).toEqual(replayed.body.data.conversationEvents);
  });

  it('exits 1 with the model error on stderr when the turn ends in ERROR', async () => {
    const prompt = 'this will fail [tokens=50] [fail-after=5]';
    const { code, stdout, stderr } = await run(['chat', prompt]);
    expect(code).toBe(1);
    expect(stdout).toBe(simulatedAnswer({ messages: [{ role: 'user', content: prompt }] }).tokens.slice(0, 5).join(''));
    expect(stderr).toContain("longrun: the turn failed: The simulated model failed after 5 tokens, as the prompt's [fail-after=5] asked. (ModelFailure)");
  });

  it('Ctrl+C cancels the turn on the server and exits 130', async () => {
    const running = start(['chat', 'a slow answer [rate=20] [tokens=10000]']);
    await until(() => running.stdout().length > 0, 'the first words on stdout');
    running.child.kill('SIGINT');
    const { code, stdout, stderr } = await running.finished;
    expect(code, stderr).toBe(130);
    const conversation = await stored(conversationIdIn(stderr));
    expect(conversation.status).toBe('CANCELLED');
    expect(conversation.turns).toEqual([{ turn: 1, status: 'CANCELLED' }]);
    expect(stdout).toBe(conversation.messages[1]?.content ?? '');
    expect(stderr).toContain('cancelling the turn');
  });

  it('says on stderr when the connection drops and when it is back, and still writes the whole answer', async () => {
    const proxy = await TcpProxy.start(test.endpoints.port);
    try {
      const prompt = 'a story told over a bad line [tokens=400] [rate=200]';
      const running = start(['chat', prompt], { env: environment({ LONGRUN_URL: proxy.url(), LONGRUN_API_KEY: test.apiKey }) });
      await until(() => running.stdout().length > 200, 'the first part of the answer');
      proxy.sever();
      const { code, stdout, stderr } = await running.finished;
      expect(code, stderr).toBe(0);
      expect(stdout).toBe(expectedText(prompt));
      const lines = stderr.split('\n');
      const lost = lines.findIndex((line) => /^connection lost \(connection closed \(code \d+.*\)\); reconnecting$/.test(line));
      const back = lines.indexOf('reconnected; the answer goes on from the last event received');
      expect(lost, stderr).toBeGreaterThanOrEqual(0);
      expect(back, stderr).toBeGreaterThan(lost);
      expect(lines.at(-2), stderr).toMatch(/^COMPLETE · /);
    } finally {
      await proxy.close();
    }
  });

  it('a wrong API key gives one clear line and a non-zero exit', async () => {
    const { code, stdout, stderr } = await run(['chat', '--api-key', 'da2-wrongwrongwrongwrongwrongwr', 'hello']);
    expect(code).not.toBe(0);
    expect(stdout).toBe('');
    expect(oneLine(stderr)).toBe(
      `longrun: the API key was refused by ${test.endpoints.graphqlUrl}; pass the right one with --api-key or LONGRUN_API_KEY (the local gateway keeps its key in .longrun/api-key)`,
    );
  });

  it('an unreachable URL gives one clear line and a non-zero exit', async () => {
    const port = await closedPort();
    const began = Date.now();
    const { code, stdout, stderr } = await run(['chat', '--url', `http://127.0.0.1:${port}/graphql`, 'hello']);
    expect(code).not.toBe(0);
    expect(stdout).toBe('');
    const line = oneLine(stderr);
    expect(line).toMatch(new RegExp(`^longrun: Could not connect to ws://127\\.0\\.0\\.1:${port}/graphql/realtime \\(connect ECONNREFUSED[^)]*\\)\\. Is the gateway running`));
    // The first connection is not retried for the whole reconnect budget.
    expect(Date.now() - began).toBeLessThan(15_000);
  });

  it('reads the local dev key from the api-key file beside LONGRUN_DB', async () => {
    const folder = join(scratch, 'state');
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'api-key'), `${test.apiKey}\n`);
    const env = environment({ LONGRUN_URL: test.endpoints.graphqlUrl, LONGRUN_DB: join(folder, 'longrun.db') });
    const { code, stdout, stderr } = await run(['chat', 'keyless [tokens=10]'], { env });
    expect(code, stderr).toBe(0);
    expect(stdout).toBe(expectedText('keyless [tokens=10]'));

    const none = await run(['chat', 'hello'], { env: environment({ LONGRUN_URL: test.endpoints.graphqlUrl, LONGRUN_DB: join(scratch, 'empty', 'x.db') }) });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^longrun: no API key: pass --api-key or set LONGRUN_API_KEY/);
  });

  it('refuses an unknown option with usage status 2', async () => {
    const { code, stderr } = await run(['chat', '--colour', 'hello']);
    expect(code).toBe(2);
    expect(stderr).toContain("Unknown option '--colour'");
  });
});

describe('longrun replay', () => {
  it('prints the stored messages turn by turn, and --json the stored events', async () => {
    const first = await run(['chat', 'remember this [tokens=25]']);
    const conversationId = conversationIdIn(first.stderr);
    const second = await run(['chat', '--conversation', conversationId, 'and this [tokens=12]']);
    expect(second.code, second.stderr).toBe(0);

    const text = await run(['replay', conversationId]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(
      `## Turn 1 · user\n\nremember this [tokens=25]\n\n## Turn 1 · assistant (COMPLETE)\n\n${first.stdout}\n\n` +
        `## Turn 2 · user\n\nand this [tokens=12]\n\n## Turn 2 · assistant (COMPLETE)\n\n${second.stdout}\n\n`,
    );
    expect(text.stderr).toContain(`conversation ${conversationId} · COMPLETE · 2 turns`);

    const json = await run(['replay', '--json', conversationId]);
    expect(json.code, json.stderr).toBe(0);
    const events = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    const storedEvents = await test.graphql(EVENTS_QUERY, { conversationId, afterSeq: 0 });
    expect(events).toEqual(storedEvents.body.data.conversationEvents);
  });

  it('says so in one line when the conversation does not exist', async () => {
    const { code, stdout, stderr } = await run(['replay', 'no-such-conversation']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(oneLine(stderr)).toBe('longrun: conversation no-such-conversation was not found');
  });
});

it('examples/seed-client.ts subscribes, starts, prints the chunks as they arrive and ends', async () => {
  const prompt = 'the seed example [tokens=30]';
  const { code, stdout, stderr } = await run([prompt], { command: [SEED_CLIENT] });
  expect(code, stderr).toBe(0);
  const lines = stdout.split('\n');
  expect(lines.slice(0, 2)).toEqual(['Starting subscription...', 'Starting conversation...']);
  expect(stdout).toMatch(/StartConversation response: \{\s+conversationId: '[0-9a-f-]{36}',\s+status: 'STARTED'\s+\}/);
  expect(stdout.match(/^Received chunk: \{/gm)?.length).toBeGreaterThan(0);
  expect(stdout).toMatch(/Stream COMPLETE:/);
});

/** True when dist/ was built after every source file of the CLI and the SDK changed. */
// bin/longrun.js runs the build in dist/: bring it up to date first (incremental: a no-op after
// `npm run build`, which `npm test` runs), so the built CLI is never tested stale.
it('bin/longrun.js (the built CLI) streams an answer', async () => {
  const compiled = spawnSync(process.execPath, [join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(PROJECT_ROOT, 'tsconfig.build.json')], { encoding: 'utf8' });
  expect(compiled.status, compiled.stdout + compiled.stderr).toBe(0);
  const prompt = 'from the build [tokens=40]';
  const { code, stdout, stderr } = await run(['chat', prompt], { command: [join(PROJECT_ROOT, 'bin', 'longrun.js')] });
  expect(code, stderr).toBe(0);
  expect(stdout).toBe(expectedText(prompt));
});
