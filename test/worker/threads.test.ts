/**
 * Turn threads on their own: real worker threads, each with its own connection to a real SQLite
 * file and the simulated model, driven as the gateway drives them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { ConversationEvent, InvocationEvent } from '../../src/domain.js';
import { createLogger, type LogFields } from '../../src/log.js';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { createSqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/types.js';
import { closeLostTurns } from '../../src/worker/recovery.js';
import { startTurnThreads, type TurnThreads } from '../../src/worker/threads.js';

const folder = mkdtempSync(join(tmpdir(), 'longrun-turn-threads-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const provider = loadConfig({ LONGRUN_SIM_TTFT_MS: '0', LONGRUN_SIM_TOKENS_PER_SEC: '500' }).provider;

async function start(name: string, count = 1) {
  const databasePath = join(folder, `${name}.db`);
  const store = createSqliteStore({ path: databasePath });
  const published: ConversationEvent[] = [];
  const logs: Array<{ event: string } & LogFields> = [];
  const logger = createLogger('info', (line) => void logs.push(JSON.parse(line)));
  const counts = { tokens: 0, firstTokens: 0 };
  const threads = await startTurnThreads({
    count,
    setup: { databasePath, provider, workerOptions: { flushMs: 5 }, logLevel: 'info', preciseClock: false },
    publisher: { publish: async (events) => void published.push(...events) },
    recordParts: (tokens, firstTokenMs) => {
      counts.tokens += tokens;
      counts.firstTokens += firstTokenMs.length;
    },
    logger,
    onLost: (events) => closeLostTurns(store, events, { clock: Date.now, logger, publisher: { publish: async (lost) => void published.push(...lost) } }),
  });
  return { store, threads, published, logs, counts };
}

async function begin(store: Store, conversationId: string, prompt: string): Promise<InvocationEvent> {
  const turn = await store.beginTurn({ conversationId, prompt, now: Date.now() });
  return { conversationId, turn, prompt };
}

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

let open: TurnThreads | undefined;
afterAll(async () => open?.close());

it('runs turns on threads: stored, then published in order, with metric counts and log lines on this thread', async () => {
  const { store, threads, published, logs, counts } = await start('runs', 2);
  open = threads;
  const prompts = ['first story [tokens=40]', 'second story [tokens=60]', 'third story [tokens=20]'];
  const events = await Promise.all(prompts.map((prompt, index) => begin(store, `c${index}`, prompt)));
  await Promise.all(events.map((event) => threads.run(event, new AbortController().signal)));
  expect(threads.running).toBe(0);
  for (const [index, prompt] of prompts.entries()) {
    const mine = published.filter((event) => event.conversationId === `c${index}`);
    expect(mine.map((event) => event.seq)).toEqual(mine.map((_, position) => position + 1));
    expect(mine[mine.length - 1]).toMatchObject({ type: 'COMPLETE' });
    const text = mine.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
    expect(text).toBe(simulatedAnswer({ messages: [{ role: 'user', content: prompt }] }).tokens.join(''));
    // Everything published was stored first, by the thread's own connection.
    expect(await store.listEvents(`c${index}`, 0)).toEqual(mine);
  }
  expect(counts).toEqual({ tokens: 120, firstTokens: 3 });
  expect(logs.filter((line) => line.event === 'turn-ended').map((line) => line.conversationId).sort()).toEqual(['c0', 'c1', 'c2']);
  await threads.close();
  await store.close();
  open = undefined;
});

it('closes the turns of a thread that dies as interrupted, and runs the next turn on a new thread', async () => {
  const { store, threads, published, logs } = await start('dies');
  open = threads;
  const first = await begin(store, 'c', 'endless [rate=200] [tokens=100000]');
  const running = threads.run(first, new AbortController().signal);
  await until(() => published.length >= 3);
  const [worker] = threads.workers;
  await worker!.terminate();
  await running;
  // The thread hands its events over once per loop turn, after storing them: killed in between,
  // it leaves stored events nobody was sent (subscribers get them by backfill, as after any gap).
  // So every published event is stored, and the end comes right after the last stored one.
  const last = published[published.length - 1]!;
  const stored = await store.listEvents('c', 0);
  expect(stored.map((event) => event.seq)).toEqual(stored.map((_, index) => index + 1));
  expect(last).toMatchObject({ type: 'ERROR', errorCode: 'Interrupted', seq: stored.length });
  for (const event of published) expect(stored[event.seq - 1]).toEqual(event);
  expect(logs.some((line) => line.event === 'turn-thread-died')).toBe(true);

  const second = await begin(store, 'c', 'again [tokens=5]');
  await threads.run(second, new AbortController().signal);
  expect(threads.workers).toHaveLength(1);
  expect(threads.workers[0]).not.toBe(worker);
  expect(published[published.length - 1]).toMatchObject({ type: 'COMPLETE', turn: 2 });
  await threads.close();
  await store.close();
  open = undefined;
});

it('aborts a turn on its thread with the reason given, and starts an already aborted one aborted', async () => {
  const { store, threads, published } = await start('aborts');
  open = threads;
  const controller = new AbortController();
  const running = threads.run(await begin(store, 'a', 'endless [rate=200] [tokens=100000]'), controller.signal);
  await until(() => published.length >= 2);
  controller.abort('cancel');
  await running;
  expect(published[published.length - 1]).toMatchObject({ conversationId: 'a', type: 'CANCELLED' });

  const early = new AbortController();
  early.abort('shutdown');
  await threads.run(await begin(store, 'b', 'never runs [tokens=50]'), early.signal);
  expect(published.filter((event) => event.conversationId === 'b')).toEqual([
    expect.objectContaining({ type: 'ERROR', errorCode: 'Interrupted', seq: 1 }),
  ]);
  await threads.close();
  await store.close();
  open = undefined;
});

it('refuses to start when a thread cannot open its store, saying why', async () => {
  // A folder that cannot be created: its parent is a file.
  const blocked = join(folder, 'a-file');
  writeFileSync(blocked, '');
  await expect(
    startTurnThreads({
      count: 1,
      setup: { databasePath: join(blocked, 'db'), provider, workerOptions: {}, logLevel: 'silent', preciseClock: false },
      publisher: { publish: async () => undefined },
      logger: createLogger('silent'),
      onLost: async () => undefined,
    }),
  ).rejects.toThrow(`A turn thread could not start: Cannot open the SQLite database at ${join(blocked, 'db')}`);
});
