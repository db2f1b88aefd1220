import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { expect, it } from 'vitest';
import { makeEvent } from '../../src/domain.js';
import { createSqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite.js';
import { describeStoreConformance } from './store.suite.js';

describeStoreConformance('sqlite (in memory)', { create: async () => createSqliteStore({ path: ':memory:' }) });

const folder = mkdtempSync(join(tmpdir(), 'longrun-store-'));
describeStoreConformance('sqlite (file)', {
  create: async () => createSqliteStore({ path: join(folder, 'nested', 'test.db') }),
});
// Moves at every look of the background thread: reads then often find events in both files.
describeStoreConformance('sqlite (file, moving all the time)', {
  create: async () => createSqliteStore({ path: join(folder, 'moving.db'), moveIntervalMs: 1, checkpointIntervalMs: 1 }),
});
describeStoreConformance('sqlite (file, no incoming file)', {
  create: async () => createSqliteStore({ path: join(folder, 'direct.db'), incoming: false }),
  dispose: async () => rmSync(folder, { recursive: true, force: true }),
});

it('keeps everything across reopening the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-reopen-'));
  const path = join(dir, 'db.sqlite');
  const first = createSqliteStore({ path });
  await first.beginTurn({ conversationId: 'c1', prompt: 'p', now: 1 });
  await first.appendEvents([makeEvent({ conversationId: 'c1', turn: 1, seq: 1, type: 'CHUNK', chunk: 'kept 🦊', createdAt: 2 })]);
  await first.close();
  const second = createSqliteStore({ path });
  expect((await second.listEvents('c1', 0)).map((event) => event.chunk)).toEqual(['kept 🦊']);
  expect(await second.listRunningTurns()).toEqual([{ conversationId: 'c1', turn: 1, lastSeq: 1 }]);
  await second.close();
  rmSync(dir, { recursive: true, force: true });
});

it('copies the write-ahead log into the database file from a background thread, once enough was written or enough time passed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-checkpoint-'));
  // By time alone, then by rows alone.
  for (const options of [{ checkpointRows: 1_000_000, checkpointMaxIntervalMs: 300 }, { checkpointRows: 200, checkpointMaxIntervalMs: 3_600_000 }]) {
    const path = join(dir, `${options.checkpointRows}.sqlite`);
    const store = createSqliteStore({ path, checkpointIntervalMs: 50, ...options });
    await store.beginTurn({ conversationId: 'c1', prompt: 'p', now: 1 });
    const before = statSync(path).size;
    for (let seq = 1; seq <= 300; seq += 1) {
      await store.appendEvents([makeEvent({ conversationId: 'c1', turn: 1, seq, type: 'CHUNK', chunk: 'x'.repeat(500), createdAt: seq })]);
    }
    // SQLite's own checkpoint is off, so only the background thread can grow the database file.
    const deadline = Date.now() + 10_000;
    while (statSync(path).size <= before + 100_000 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(statSync(path).size, JSON.stringify(options)).toBeGreaterThan(before + 100_000);
    await store.close();
    const reopened = createSqliteStore({ path });
    expect((await reopened.listEvents('c1', 0)).length).toBe(300);
    await reopened.close();
  }
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Opens a file store with the given checkpointer settings and starts a turn in each of `count`
 * conversations; `append(seq)` then stores one chunk in each, as a gateway under load does.
 */
async function turnsOnFile(folder: string, count: number, options: Omit<SqliteStoreOptions, 'path'>) {
  const path = join(mkdtempSync(join(tmpdir(), folder)), 'db.sqlite');
  const store = createSqliteStore({ path, ...options });
  const ids = Array.from({ length: count }, (_, index) => `c${index}`);
  for (const id of ids) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
  const append = (seq: number): Promise<unknown> =>
    Promise.all(ids.map((id) => store.appendEvents([makeEvent({ conversationId: id, turn: 1, seq, type: 'CHUNK', chunk: 'x'.repeat(40), createdAt: seq })])));
  const dispose = async (): Promise<void> => {
    await store.close();
    rmSync(dirname(path), { recursive: true, force: true });
  };
  return { path, store, append, dispose };
}

it('keeps the write-ahead log small under writes that hardly pause', async () => {
  // Inserted straight into the events table (as turn threads write, and as the background thread
  // moves), where each conversation's events land on pages of their own.
  const { path, store, append, dispose } = await turnsOnFile('longrun-wal-', 400, {
    incoming: false,
    checkpointIntervalMs: 10,
    checkpointRows: 100,
    checkpointRestartPages: 256,
  });
  // The checkpointer is at work once it has copied a first round into the database file.
  await append(1);
  const deadline = Date.now() + 10_000;
  while (statSync(path).size < 40_000 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  // Every conversation appends once per round, as a gateway under load does: each commit touches
  // pages of its own, and the 2 ms between rounds are too short for a checkpoint to catch up in.
  let largestLog = 0;
  for (let seq = 2; seq <= 61; seq += 1) {
    await append(seq);
    await new Promise((resolve) => setTimeout(resolve, 2));
    largestLog = Math.max(largestLog, statSync(`${path}-wal`).size);
  }
  // 24,000 rows over 400 conversations write some 70 MB of pages to the log, and without the
  // restart it keeps them all; with it, the log holds what is written while a checkpoint runs.
  expect(largestLog).toBeLessThan(35 * 1024 * 1024);
  expect((await store.listEvents('c399', 0)).length).toBe(61);
  await dispose();
});

it('keeps writing while another connection holds an old snapshot that stops the log from starting over', async () => {
  // Written straight into the database file, whose log the reader holds.
  const { path, store, append, dispose } = await turnsOnFile('longrun-wal-reader-', 100, {
    incoming: false,
    checkpointIntervalMs: 10,
    checkpointRows: 10,
    checkpointRestartPages: 16,
  });
  await append(1);
  // A reader (another process, a backup) keeps a read transaction open: the log cannot start over
  // while it lasts, and a RESTART checkpoint that waits for it holds every writer back meanwhile.
  const reader = new Database(path);
  reader.prepare('BEGIN').run();
  reader.prepare('SELECT COUNT(*) AS n FROM events').get();
  let slowest = 0;
  try {
    for (let seq = 2; seq <= 21; seq += 1) {
      const started = performance.now();
      await append(seq);
      slowest = Math.max(slowest, performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    reader.prepare('COMMIT').run();
    reader.close();
  }
  // The checkpointer leaves the RESTART until the reader is done (and would wait 20 ms at most).
  // When it tried one regardless and waited up to 5 s, the writes stalled past their own 2 s busy
  // timeout and failed with "database is locked".
  expect(slowest).toBeLessThan(1_000);
  expect((await store.listEvents('c99', 0)).length).toBe(21);
  await dispose();
});

it('commits a full group at once instead of at the end of the loop turn', async () => {
  const store = createSqliteStore({ path: ':memory:' });
  const ids = Array.from({ length: 40 }, (_, index) => `c${index}`);
  for (const id of ids) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
  // All handed over in one turn of the event loop, in groups of at most 16: the first 32 are
  // stored before the loop comes round, the last 8 after.
  const writes = ids.map((id) => store.appendEvents([makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CHUNK', chunk: id, createdAt: 2 })]));
  const storedBeforeTheLoopTurnEnds = await Promise.all(ids.map((id) => store.listEvents(id, 0)));
  expect(storedBeforeTheLoopTurnEnds.filter((events) => events.length === 1).length).toBe(32);
  await Promise.all(writes);
  expect((await Promise.all(ids.map((id) => store.listEvents(id, 0)))).every((events) => events.length === 1)).toBe(true);
  await store.close();
});

it('writes the events of one loop turn together, and a bad write fails only its own caller', async () => {
  const store = createSqliteStore({ path: ':memory:' });
  for (const id of ['a', 'b']) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
  await store.appendEvents([makeEvent({ conversationId: 'a', turn: 1, seq: 1, type: 'CHUNK', chunk: 'first', createdAt: 1 })]);
  // Handed over in the same turn of the event loop: one group, one of them a duplicate seq.
  const good = store.appendEvents([makeEvent({ conversationId: 'b', turn: 1, seq: 1, type: 'CHUNK', chunk: 'kept', createdAt: 2 })]);
  const bad = store.appendEvents([makeEvent({ conversationId: 'a', turn: 1, seq: 1, type: 'CHUNK', chunk: 'again', createdAt: 2 })]);
  const alsoGood = store.appendEvents([makeEvent({ conversationId: 'a', turn: 1, seq: 2, type: 'CHUNK', chunk: 'second', createdAt: 3 })]);
  await expect(good).resolves.toBeUndefined();
  await expect(bad).rejects.toThrow(/Could not store the events/);
  await expect(alsoGood).resolves.toBeUndefined();
  expect((await store.listEvents('a', 0)).map((event) => event.chunk)).toEqual(['first', 'second']);
  expect((await store.listEvents('b', 0)).map((event) => event.chunk)).toEqual(['kept']);
  await store.close();
});

it('ends turns in the same groups as events, and a bad end fails only its own caller', async () => {
  const store = createSqliteStore({ path: ':memory:' });
  for (const id of ['a', 'b']) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
  await store.appendEvents([makeEvent({ conversationId: 'a', turn: 1, seq: 1, type: 'CHUNK', chunk: 'first', createdAt: 1 })]);
  // One turn of the event loop: a write that opens a group, then two ends, one of them with a seq
  // that is already stored.
  const opened = store.appendEvents([makeEvent({ conversationId: 'b', turn: 1, seq: 1, type: 'CHUNK', chunk: 'hello', createdAt: 2 })]);
  const good = store.endTurn({ event: makeEvent({ conversationId: 'b', turn: 1, seq: 2, type: 'COMPLETE', createdAt: 3 }), assistantText: 'hello' });
  const bad = store.endTurn({ event: makeEvent({ conversationId: 'a', turn: 1, seq: 1, type: 'COMPLETE', createdAt: 3 }), assistantText: 'first' });
  await opened;
  await expect(good).resolves.toBeUndefined();
  await expect(bad).rejects.toThrow(/Could not end the turn/);
  expect(await store.getConversation('b')).toMatchObject({ status: 'COMPLETE', lastSeq: 2, messages: [{ role: 'user' }, { role: 'assistant', content: 'hello' }] });
  // Nothing of the bad end is stored: the turn still runs, with its one event.
  expect(await store.getConversation('a')).toMatchObject({ status: 'RUNNING', lastSeq: 1, messages: [{ role: 'user' }] });
  await store.close();
});

it.each([
  ['the incoming file', true],
  ['the database file', false],
])('fails a whole group at once when %s stays locked, instead of waiting once per write', async (_, incoming) => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-locked-'));
  const path = join(dir, 'db.sqlite');
  const store = createSqliteStore({ path, incoming });
  const ids = Array.from({ length: 16 }, (_, index) => `c${index}`);
  for (const id of ids) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
  // Events go to the incoming file, or straight to the database file.
  const intruder = new Database(incoming ? `${path}-incoming` : path);
  intruder.exec('BEGIN EXCLUSIVE');
  try {
    // One write alone, then a group of fifteen: the group waits out the 2 s busy timeout once and
    // all fifteen fail together. Retrying each on its own would block the event loop for another
    // 2 s per write (34 s in all); the bound leaves a slow machine plenty of room.
    const started = Date.now();
    const results = await Promise.allSettled(
      ids.map((id) => store.appendEvents([makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CHUNK', chunk: id, createdAt: 2 })])),
    );
    expect(results.every((result) => result.status === 'rejected' && /database is locked/.test(String(result.reason)))).toBe(true);
    expect(Date.now() - started).toBeLessThan(20_000);
  } finally {
    intruder.exec('COMMIT');
    intruder.close();
  }
  await store.appendEvents([makeEvent({ conversationId: 'c0', turn: 1, seq: 1, type: 'CHUNK', chunk: 'after', createdAt: 3 })]);
  expect((await store.listEvents('c0', 0)).map((event) => event.chunk)).toEqual(['after']);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

it('starts a turn while another connection (a turn thread) holds the write lock and commits', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-busy-'));
  const path = join(dir, 'db.sqlite');
  const store = createSqliteStore({ path });
  await store.beginTurn({ conversationId: 'c1', prompt: 'first', now: 1 });
  await store.endTurn({ event: makeEvent({ conversationId: 'c1', turn: 1, seq: 1, type: 'COMPLETE', createdAt: 2 }), assistantText: 'a' });
  // Another thread takes the write lock, writes, and commits 300 ms later. A transaction that read
  // before it asked for the lock would then hold a stale snapshot and fail at once with "database
  // is locked"; the store's waits for the lock first, then reads.
  const other = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const database = new (require(workerData.module))(workerData.path);
     database.exec('BEGIN IMMEDIATE');
     database.prepare("INSERT INTO conversations (id, owner, status, turn, created_at, updated_at) VALUES ('c2', NULL, 'COMPLETE', 1, 1, 1)").run();
     parentPort.postMessage('locked');
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
     database.exec('COMMIT');
     database.close();`,
    { eval: true, workerData: { path, module: createRequire(import.meta.url).resolve('better-sqlite3') } },
  );
  // Listened for now: the store's write waits without blocking the loop, so the thread may have
  // committed and exited before the turn has started.
  const exited = new Promise((resolve) => other.once('exit', resolve));
  await new Promise((resolve) => other.once('message', resolve));
  await expect(store.beginTurn({ conversationId: 'c1', prompt: 'second', now: 3 })).resolves.toBe(2);
  await exited;
  expect(await store.getConversation('c2')).toMatchObject({ status: 'COMPLETE' });
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

it('migrates a file of the first layout (events keyed by the conversation id) when it opens it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-migrate-'));
  const path = join(dir, 'db.sqlite');
  const old = new Database(path);
  old.pragma('journal_mode = WAL');
  old.exec(`
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY,
  owner TEXT,
  status TEXT NOT NULL,
  turn INTEGER NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  cancel_requested_turn INTEGER
);
CREATE INDEX IF NOT EXISTS conversations_status ON conversations (status);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS turns (
  conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  turn INTEGER NOT NULL,
  status TEXT NOT NULL,
  model_id TEXT,
  started_at REAL NOT NULL,
  ended_at REAL,
  PRIMARY KEY (conversation_id, turn)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
  conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  turn INTEGER NOT NULL,
  role TEXT NOT NULL,
  content TEXT NOT NULL,
  PRIMARY KEY (conversation_id, turn, role)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  turn INTEGER NOT NULL,
  type TEXT NOT NULL,
  chunk TEXT,
  error TEXT,
  error_code TEXT,
  stop_reason TEXT,
  input_tokens INTEGER,
  output_tokens INTEGER,
  latency_ms INTEGER,
  created_at REAL NOT NULL,
  PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
INSERT INTO conversations (id, owner, status, turn, created_at, updated_at) VALUES ('kept', NULL, 'COMPLETE', 1, 1, 3);
INSERT INTO conversations (id, owner, status, turn, created_at, updated_at) VALUES ('running', NULL, 'RUNNING', 1, 2, 2);
INSERT INTO turns (conversation_id, turn, status, started_at, ended_at) VALUES ('kept', 1, 'COMPLETE', 1, 3);
INSERT INTO turns (conversation_id, turn, status, started_at) VALUES ('running', 1, 'RUNNING', 2);
INSERT INTO messages (conversation_id, turn, role, content) VALUES ('kept', 1, 'user', 'hi'), ('kept', 1, 'assistant', 'hello 🦊');
INSERT INTO events (conversation_id, seq, turn, type, chunk, created_at) VALUES ('kept', 1, 1, 'CHUNK', 'hello 🦊', 2);
INSERT INTO events (conversation_id, seq, turn, type, stop_reason, input_tokens, output_tokens, created_at) VALUES ('kept', 2, 1, 'COMPLETE', 'end_turn', 1, 2, 3);
INSERT INTO events (conversation_id, seq, turn, type, chunk, created_at) VALUES ('running', 1, 1, 'CHUNK', 'part', 2);
`);
  old.close();

  const store = createSqliteStore({ path });
  expect(await store.listEvents('kept', 0)).toEqual([
    makeEvent({ conversationId: 'kept', turn: 1, seq: 1, type: 'CHUNK', chunk: 'hello 🦊', createdAt: 2 }),
    makeEvent({ conversationId: 'kept', turn: 1, seq: 2, type: 'COMPLETE', stopReason: 'end_turn', usage: { inputTokens: 1, outputTokens: 2 }, createdAt: 3 }),
  ]);
  expect(await store.listRunningTurns()).toEqual([{ conversationId: 'running', turn: 1, lastSeq: 1 }]);
  // Migrated conversations take new events and new turns; deleting one removes its events.
  await store.appendEvents([makeEvent({ conversationId: 'running', turn: 1, seq: 2, type: 'CHUNK', chunk: ' more', createdAt: 4 })]);
  expect((await store.listEvents('running', 0)).map((event) => event.chunk)).toEqual(['part', ' more']);
  expect(await store.beginTurn({ conversationId: 'kept', prompt: 'again', now: 5 })).toBe(2);
  expect(await store.getConversation('kept')).toMatchObject({ lastSeq: 2, status: 'RUNNING' });
  expect(await store.deleteConversation('kept')).toBe(true);
  expect(await store.listEvents('kept', 0)).toEqual([]);
  await store.close();

  const check = new Database(path);
  expect(check.pragma('user_version', { simple: true })).toBe(1);
  expect(check.prepare("SELECT COUNT(*) AS n FROM events").get()).toEqual({ n: 2 });
  check.pragma('user_version = 99');
  check.close();
  expect(() => createSqliteStore({ path })).toThrow(/written by a newer longrun \(schema 99; this one reads up to 1\)/);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `body` in a Node process of its own, started as an ES module with `createSqliteStore` in
 * scope (as `node --input-type=module -e` runs a script); its standard output is piped.
 */
function spawnStoreScript(body: string) {
  const store = JSON.stringify(fileURLToPath(new URL('../../src/store/sqlite.ts', import.meta.url)));
  return spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', `const { createSqliteStore } = await import(${store});\n${body}`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
}

/** Counts rows of a table with a connection of its own, as another process would see them. */
function countRows(file: string, table: string): number {
  const reader = new Database(file, { readonly: true });
  try {
    return (reader.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    reader.close();
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

it('appends events to the incoming file, moves them into the events table in the background, and deletes them behind', async () => {
  const { path, store, append, dispose } = await turnsOnFile('longrun-incoming-', 50, { moveIntervalMs: 200, checkpointIntervalMs: 20 });
  for (let seq = 1; seq <= 20; seq += 1) await append(seq);
  // Stored: readable at once through the store, wherever they are.
  expect((await store.listEvents('c49', 0)).map((event) => event.seq)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
  await until(() => countRows(path, 'events') === 1000, 'the events table holds all 1,000 events');
  // Each commit of events deletes moved rows from the incoming file, a few at a time.
  for (let seq = 21; seq <= 40; seq += 1) await append(seq);
  await until(() => countRows(path, 'events') === 2000, 'the events table holds all 2,000 events');
  for (let seq = 41; seq <= 60 && countRows(`${path}-incoming`, 'events') > 1000; seq += 1) await append(seq);
  expect(countRows(`${path}-incoming`, 'events')).toBeLessThanOrEqual(1000);
  const events = await store.listEvents('c0', 0);
  expect(events.map((event) => event.seq)).toEqual(Array.from({ length: events.length }, (_, index) => index + 1));
  expect((await store.getConversation('c0'))?.lastSeq).toBe(events.length);
  await dispose();
});

it('refuses an event that does not come after the last one stored, even while that one waits in the incoming file', async () => {
  const { store, dispose } = await turnsOnFile('longrun-incoming-order-', 1, { moveIntervalMs: 3_600_000 });
  await store.appendEvents([makeEvent({ conversationId: 'c0', turn: 1, seq: 1, type: 'CHUNK', chunk: 'one', createdAt: 1 })]);
  await store.appendEvents([makeEvent({ conversationId: 'c0', turn: 1, seq: 2, type: 'CHUNK', chunk: 'two', createdAt: 2 })]);
  await expect(store.appendEvents([makeEvent({ conversationId: 'c0', turn: 1, seq: 2, type: 'CHUNK', chunk: 'again', createdAt: 3 })])).rejects.toThrow(
    /event 2 of conversation c0 does not come after its last stored event \(2\)/,
  );
  await expect(store.endTurn({ event: makeEvent({ conversationId: 'c0', turn: 1, seq: 1, type: 'COMPLETE', createdAt: 3 }), assistantText: 'x' })).rejects.toThrow(
    /Could not end the turn/,
  );
  await expect(store.appendEvents([makeEvent({ conversationId: 'nobody', turn: 1, seq: 1, type: 'CHUNK', chunk: 'x', createdAt: 3 })])).rejects.toThrow(
    /conversation nobody does not exist/,
  );
  expect((await store.listEvents('c0', 0)).map((event) => event.chunk)).toEqual(['one', 'two']);
  await dispose();
});

it('appends a group of events to the incoming file in the order they were handed over, and reads them all back', async () => {
  const { path, store, dispose } = await turnsOnFile('longrun-incoming-group-', 3, { moveIntervalMs: 3_600_000 });
  const event = (conversationId: string, seq: number) =>
    makeEvent({ conversationId, turn: 1, seq, type: 'CHUNK', chunk: `${conversationId}-${seq}`, createdAt: seq });
  // One group: a write of 40 events (three INSERTs of at most 16 rows) between writes of one.
  await Promise.all([
    store.appendEvents([event('c1', 1)]),
    store.appendEvents(Array.from({ length: 40 }, (_, index) => event('c0', index + 1))),
    store.appendEvents([event('c2', 1)]),
    store.appendEvents([event('c1', 2)]),
  ]);
  const reader = new Database(`${path}-incoming`, { readonly: true });
  const chunks = reader.prepare('SELECT chunk FROM events ORDER BY id').pluck().all();
  reader.close();
  expect(chunks).toEqual(['c1-1', ...Array.from({ length: 40 }, (_, index) => `c0-${index + 1}`), 'c2-1', 'c1-2']);
  expect((await store.listEvents('c0', 0)).map((stored) => stored.chunk)).toEqual(Array.from({ length: 40 }, (_, index) => `c0-${index + 1}`));
  expect((await store.listEvents('c1', 1)).map((stored) => stored.chunk)).toEqual(['c1-2']);
  expect((await store.getConversation('c0'))?.lastSeq).toBe(40);
  await dispose();
});

it('drops the waiting events of a deleted conversation and moves the others', async () => {
  const { path, store, append } = await turnsOnFile('longrun-incoming-deleted-', 3, { moveIntervalMs: 3_600_000 });
  await append(1);
  await append(2);
  expect(await store.deleteConversation('c1')).toBe(true);
  expect(await store.listEvents('c1', 0)).toEqual([]);
  // Closing moves what waits; the move finds no conversation for c1's events and drops them.
  await store.close();
  expect(countRows(path, 'events')).toBe(4);
  expect(countRows(`${path}-incoming`, 'events')).toBe(0);
  const reopened = createSqliteStore({ path });
  expect((await reopened.listEvents('c2', 0)).map((event) => event.seq)).toEqual([1, 2]);
  await reopened.close();
  rmSync(dirname(path), { recursive: true, force: true });
});

it('keeps the events a killed process left in the incoming file, and moves them when the file is opened again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-incoming-killed-'));
  const path = join(dir, 'db.sqlite');
  // A process that stores 30 events and is killed (SIGKILL) before its background thread moves any.
  const child = spawnStoreScript(
    `const store = createSqliteStore({ path: ${JSON.stringify(path)}, moveIntervalMs: 3_600_000 });
       await store.beginTurn({ conversationId: 'c1', prompt: 'p', now: 1 });
       for (let seq = 1; seq <= 30; seq += 1) {
         await store.appendEvents([{ conversationId: 'c1', turn: 1, seq, type: 'CHUNK', chunk: 'part ' + seq, error: null, errorCode: null, stopReason: null, usage: null, latencyMs: null, createdAt: seq }]);
       }
       process.kill(process.pid, 'SIGKILL');`,
  );
  expect(await new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)))).toBe('SIGKILL');
  expect(countRows(`${path}-incoming`, 'events')).toBe(30);
  expect(countRows(path, 'events')).toBe(0);

  const store = createSqliteStore({ path });
  expect(countRows(path, 'events')).toBe(30);
  expect(countRows(`${path}-incoming`, 'events')).toBe(0);
  expect((await store.listEvents('c1', 0)).map((event) => event.chunk)).toEqual(Array.from({ length: 30 }, (_, index) => `part ${index + 1}`));
  expect(await store.listRunningTurns()).toEqual([{ conversationId: 'c1', turn: 1, lastSeq: 30 }]);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

it('starts and ends turns without putting the event loop to sleep while another connection holds the database file', async () => {
  const { path, store, dispose } = await turnsOnFile('longrun-yield-', 1, {});
  // The background thread's moves hold the database file's write lock a few milliseconds at a
  // time; here another connection holds it for 300 ms, twice. SQLite's own wait would put the
  // event loop to sleep meanwhile, and the timer that releases the lock could never run.
  const intruder = new Database(path);
  let ticks = 0;
  const ticker = setInterval(() => (ticks += 1), 10);
  const holdFor300ms = (): void => {
    intruder.exec('BEGIN IMMEDIATE');
    setTimeout(() => intruder.exec('COMMIT'), 300);
  };
  try {
    holdFor300ms();
    await store.endTurn({ event: makeEvent({ conversationId: 'c0', turn: 1, seq: 1, type: 'COMPLETE', createdAt: 2 }), assistantText: 'done' });
    expect(ticks).toBeGreaterThanOrEqual(5);
    ticks = 0;
    holdFor300ms();
    await expect(store.beginTurn({ conversationId: 'c0', prompt: 'again', now: 3 })).resolves.toBe(2);
    expect(ticks).toBeGreaterThanOrEqual(5);
    // Held past the busy timeout (2 s), the write fails as SQLite's own wait would have.
    intruder.exec('BEGIN IMMEDIATE');
    await expect(store.beginTurn({ conversationId: 'c1', prompt: 'p', now: 4 })).rejects.toThrow(/Could not start the turn: database is locked/);
    intruder.exec('COMMIT');
  } finally {
    clearInterval(ticker);
    intruder.close();
  }
  expect(await store.getConversation('c0')).toMatchObject({ status: 'RUNNING', lastSeq: 1, turns: [{ status: 'COMPLETE' }, { status: 'RUNNING' }] });
  await dispose();
});

it.runIf(process.platform === 'linux')('runs its background thread below the event loop, at nice 10', async () => {
  const niceOfThreads = (): number[] =>
    readdirSync('/proc/self/task').map((thread) => Number(readFileSync(`/proc/self/task/${thread}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]));
  const before = niceOfThreads().filter((nice) => nice === 10).length;
  const { store, dispose } = await turnsOnFile('longrun-nice-', 1, {});
  await until(() => niceOfThreads().filter((nice) => nice === 10).length > before, 'a thread runs at nice 10');
  // The event loop's own thread keeps its priority.
  expect(Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[16])).toBe(0);
  await store.appendEvents([makeEvent({ conversationId: 'c0', turn: 1, seq: 1, type: 'CHUNK', chunk: 'x', createdAt: 1 })]);
  await dispose();
});

it('runs its background thread in a process started as an ES module (--input-type=module)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longrun-module-process-'));
  const path = join(dir, 'db.sqlite');
  // The thread's source is CommonJS; started with the process's own options, it failed to load
  // there, and nothing was moved until the store closed.
  const child = spawnStoreScript(
    `const { default: Database } = await import('better-sqlite3');
       const store = createSqliteStore({ path: ${JSON.stringify(path)}, moveIntervalMs: 20, checkpointIntervalMs: 5 });
       await store.beginTurn({ conversationId: 'c1', prompt: 'p', now: 1 });
       for (let seq = 1; seq <= 5; seq += 1) {
         await store.appendEvents([{ conversationId: 'c1', turn: 1, seq, type: 'CHUNK', chunk: 'part ' + seq, error: null, errorCode: null, stopReason: null, usage: null, latencyMs: null, createdAt: seq }]);
       }
       const reader = new Database(${JSON.stringify(path)}, { readonly: true });
       let moved = 0;
       for (const deadline = Date.now() + 10_000; moved < 5 && Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 20))) {
         moved = reader.prepare('SELECT COUNT(*) AS n FROM events').get().n;
       }
       reader.close();
       await store.close();
       process.stdout.write('moved ' + moved);`,
  );
  let output = '';
  child.stdout!.on('data', (data: Buffer) => (output += data.toString()));
  expect(await new Promise((resolve) => child.on('exit', (code) => resolve(code)))).toBe(0);
  expect(output).toBe('moved 5');
  rmSync(dir, { recursive: true, force: true });
}, 30_000);
