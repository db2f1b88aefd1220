/**
 * The SQLite store (better-sqlite3, WAL): the local deployment's storage. One file holds
 * conversations, turns, messages and events; `:memory:` gives a throw-away store.
 *
 * better-sqlite3 is synchronous; a write takes microseconds in WAL mode, less than handing it to a
 * thread would cost. `synchronous = NORMAL` keeps every committed write across a process crash
 * (`kill -9`); only a power loss may drop the last transactions.
 */
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Conversation, ConversationEvent, Message, Turn, TurnStatus } from '../domain.js';
import { ConflictError, StoreError, UnauthorizedError } from '../errors.js';
import type { BeginTurnInput, RunningTurn, Store, TurnContext } from './types.js';

interface EventRow {
  conversation_id: string;
  seq: number;
  turn: number;
  type: ConversationEvent['type'];
  chunk: string | null;
  error: string | null;
  error_code: string | null;
  stop_reason: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  latency_ms: number | null;
  created_at: number;
}

interface ConversationRow {
  id: string;
  owner: string | null;
  status: TurnStatus;
  turn: number;
  created_at: number;
  updated_at: number;
  cancel_requested_turn: number | null;
}

/** The layout `SCHEMA` creates; older files are migrated when opened (`migrate`). */
const SCHEMA_VERSION = 1;

const SCHEMA = `
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
CREATE TABLE IF NOT EXISTS conversation_keys (
  key INTEGER PRIMARY KEY AUTOINCREMENT,
  conversation_id TEXT NOT NULL UNIQUE REFERENCES conversations (id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS events (
  conversation_key INTEGER NOT NULL REFERENCES conversation_keys (key) ON DELETE CASCADE,
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
  PRIMARY KEY (conversation_key, seq)
) WITHOUT ROWID;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

// Version 0 keyed events by the conversation's id: a 36-character text in every row and every
// B-tree page of the largest table. Version 1 keys them by a small integer per conversation
// (conversation_keys): with 1,000 turns appending at once, an insert costs about 22 µs instead of
// 30 (docs/benchmarks.md). The migration spells out the version-1 tables rather than sharing
// `SCHEMA`'s text: it must keep making version 1 when `SCHEMA` moves on to a later version.
const MIGRATE_0_TO_1 = `
CREATE TABLE conversation_keys (
  key INTEGER PRIMARY KEY AUTOINCREMENT,
  conversation_id TEXT NOT NULL UNIQUE REFERENCES conversations (id) ON DELETE CASCADE
);
INSERT INTO conversation_keys (conversation_id) SELECT id FROM conversations ORDER BY created_at;
CREATE TABLE events_1 (
  conversation_key INTEGER NOT NULL REFERENCES conversation_keys (key) ON DELETE CASCADE,
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
  PRIMARY KEY (conversation_key, seq)
) WITHOUT ROWID;
INSERT INTO events_1
  SELECT k.key, e.seq, e.turn, e.type, e.chunk, e.error, e.error_code, e.stop_reason, e.input_tokens, e.output_tokens,
    e.latency_ms, e.created_at
  FROM events e JOIN conversation_keys k ON k.conversation_id = e.conversation_id;
DROP TABLE events;
ALTER TABLE events_1 RENAME TO events;
PRAGMA user_version = 1;
`;

/** Options of the SQLite store. */
export interface SqliteStoreOptions {
  /** Path of the database file, created with its folder when missing; `:memory:` for none. */
  path: string;
  /** How often the background checkpointer looks at how much was written (default 100 ms). */
  checkpointIntervalMs?: number;
  /**
   * Rows written since the last checkpoint that make the next look checkpoint (default 2000, about
   * what SQLite's own automatic checkpoint lets the log grow to); 0: at every look that finds a write.
   */
  checkpointRows?: number;
  /** A checkpoint also runs when anything was written and this long passed since the last (default 10,000 ms). */
  checkpointMaxIntervalMs?: number;
  /**
   * Pages in the write-ahead log past which a checkpoint also makes the next write start the log
   * over (default 4096, 16 MB of 4 KB pages). It holds writes back while it copies what was
   * written since the PASSIVE checkpoint it follows.
   */
  checkpointRestartPages?: number;
}

// The checkpointer: a thread with its own connection that copies the WAL into the database file.
// SQLite's automatic checkpoint would run inside a commit on the event loop, fsync included, and
// stall every stream for tens of milliseconds; here it runs beside it. A checkpoint still disturbs
// the commits that run meanwhile (its fsync competes with their writes), so it runs only once
// enough was written: the main thread counts the rows it commits in a shared counter, and the
// thread reads it. It is CommonJS because `eval` workers are.
//
// A PASSIVE checkpoint never waits for writers, but under a steady stream of commits it never
// catches up either: the log starts over only when a write begins with every page of it copied,
// and each commit made during the copy leaves some behind. The log then grows without end (1.4 GB
// in 15 s at 20,000 events/s), and every page read searches a longer index of it, so each insert
// costs more the longer the load lasts. So once the log holds checkpointRestartPages, a RESTART
// follows the PASSIVE one: it holds new writes back while it copies the little written since, and
// the next write starts the log over. A RESTART also waits for every reader of the log, holding
// writes back meanwhile, so it is tried only when no reader is behind, and waits 20 ms at most.
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const written = new Int32Array(workerData.written);
const database = new Database(workerData.path);
// Only a RESTART waits for other connections (a PASSIVE checkpoint never does), and new writes wait
// while it does: it may wait for a commit in progress, not for more.
database.pragma('busy_timeout = 20');
let checkpointedAt = Date.now();
let checkpointedRows = 0;
const checkpoint = () => {
  checkpointedRows = Atomics.load(written, 0);
  checkpointedAt = Date.now();
  try {
    const [passive] = database.pragma('wal_checkpoint(PASSIVE)');
    // Not while a reader holds an older snapshot (the PASSIVE one then stops short of the end): the
    // log cannot start over before that reader is done.
    if (passive.log >= workerData.restartPages && passive.checkpointed === passive.log) database.pragma('wal_checkpoint(RESTART)');
  } catch {}
};
const timer = setInterval(() => {
  const rows = (Atomics.load(written, 0) - checkpointedRows) | 0;
  if (rows > 0 && (rows >= workerData.rows || Date.now() - checkpointedAt >= workerData.maxIntervalMs)) checkpoint();
}, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  checkpoint();
  database.close();
  parentPort.close();
});
`;

interface Checkpointer {
  /** Counts rows committed on the main connection. */
  wrote(rows: number): void;
  /** Runs a last checkpoint and stops the thread. */
  stop(): Promise<void>;
}

function startCheckpointer(path: string, options: SqliteStoreOptions): Checkpointer {
  const written = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(CHECKPOINTER, {
    eval: true,
    workerData: {
      path,
      written: written.buffer,
      intervalMs: options.checkpointIntervalMs ?? 100,
      restartPages: options.checkpointRestartPages ?? 4096,
      rows: options.checkpointRows ?? 2000,
      maxIntervalMs: options.checkpointMaxIntervalMs ?? 10_000,
      module: createRequire(import.meta.url).resolve('better-sqlite3'),
    },
  });
  // Not holding the process open on its own: the store's close() ends it.
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.on('error', () => undefined);
  return {
    // Wraps around after 2^32 rows; the thread compares differences, so that is harmless.
    wrote: (rows) => void Atomics.add(written, 0, rows),
    stop: async () => {
      // Held while closing: an unreferenced worker would let the process exit before its last checkpoint.
      worker.ref();
      worker.postMessage('close');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      await worker.terminate();
    },
  };
}

/**
 * The most writes one group commit gathers (see `grouped`). Sixteen writes share a commit's
 * fixed cost well, and a write waits for at most fifteen others (about a millisecond under load)
 * rather than for the rest of a loop turn that, under load, can take tens of milliseconds.
 */
const GROUP_LIMIT = 16;

/**
 * Creates the tables of a new file, or brings an older file to `SCHEMA_VERSION`, in one
 * transaction that holds the write lock (another connection may be opening the same file).
 */
function migrate(database: Database.Database): void {
  database
    .transaction(() => {
      const version = database.pragma('user_version', { simple: true }) as number;
      const hasEvents = database.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").get() !== undefined;
      if (hasEvents && version === 0) database.exec(MIGRATE_0_TO_1);
      else if (version > SCHEMA_VERSION) {
        throw new Error(`the file was written by a newer longrun (schema ${version}; this one reads up to ${SCHEMA_VERSION})`);
      }
      database.exec(SCHEMA);
    })
    .immediate();
}

/** Opens (and creates when needed) the SQLite store. Throws `StoreError` when the file cannot be opened. */
export function createSqliteStore(options: SqliteStoreOptions): Store {
  let database: Database.Database;
  try {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    database = new Database(options.path);
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = NORMAL');
    database.pragma('foreign_keys = ON');
    database.pragma('busy_timeout = 2000');
    // Each running turn appends to its own leaf page of the events table; SQLite's default cache
    // (2 MB) holds the pages of about 500 of them, and past that every insert reads its page back
    // from the file. Pages are cached only once used, so an idle store costs nothing more.
    database.pragma('cache_size = -32768');
    migrate(database);
    if (options.path !== ':memory:') database.pragma('wal_autocheckpoint = 0');
  } catch (error) {
    if (database! !== undefined && database.open) database.close();
    throw new StoreError(`Cannot open the SQLite database at ${options.path}: ${(error as Error).message}`, error);
  }

  const checkpointer = options.path === ':memory:' ? undefined : startCheckpointer(options.path, options);

  const statements = {
    getConversation: database.prepare<[string], ConversationRow>('SELECT * FROM conversations WHERE id = ?'),
    insertConversation: database.prepare(
      `INSERT INTO conversations (id, owner, status, turn, created_at, updated_at) VALUES (?, ?, 'RUNNING', 1, ?, ?)`,
    ),
    startNextTurn: database.prepare(
      `UPDATE conversations SET status = 'RUNNING', turn = turn + 1, updated_at = ?, cancel_requested_turn = NULL
       WHERE id = ? AND status != 'RUNNING'`,
    ),
    insertTurn: database.prepare(
      `INSERT INTO turns (conversation_id, turn, status, model_id, started_at) VALUES (?, ?, 'RUNNING', ?, ?)`,
    ),
    insertMessage: database.prepare(`INSERT INTO messages (conversation_id, turn, role, content) VALUES (?, ?, ?, ?)`),
    insertConversationKey: database.prepare<[string]>('INSERT INTO conversation_keys (conversation_id) VALUES (?)'),
    conversationKey: database.prepare<[string], { key: number }>('SELECT key FROM conversation_keys WHERE conversation_id = ?'),
    insertEvent: database.prepare(
      `INSERT INTO events (conversation_key, seq, turn, type, chunk, error, error_code, stop_reason, input_tokens,
        output_tokens, latency_ms, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    endTurn: database.prepare(`UPDATE turns SET status = ?, ended_at = ? WHERE conversation_id = ? AND turn = ? AND status = 'RUNNING'`),
    endConversationTurn: database.prepare(`UPDATE conversations SET status = ?, updated_at = ? WHERE id = ? AND turn = ?`),
    lastSeq: database.prepare<[string], { seq: number | null }>(
      'SELECT MAX(seq) AS seq FROM events WHERE conversation_key = (SELECT key FROM conversation_keys WHERE conversation_id = ?)',
    ),
    listEvents: database.prepare<[string, number, number], EventRow>(
      `SELECT k.conversation_id, e.seq, e.turn, e.type, e.chunk, e.error, e.error_code, e.stop_reason, e.input_tokens,
        e.output_tokens, e.latency_ms, e.created_at
       FROM conversation_keys k JOIN events e ON e.conversation_key = k.key
       WHERE k.conversation_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?`,
    ),
    listMessages: database.prepare<[string], Message>(
      `SELECT turn, role, content FROM messages WHERE conversation_id = ? ORDER BY turn, CASE role WHEN 'user' THEN 0 ELSE 1 END`,
    ),
    historyBefore: database.prepare<[string, number], Message>(
      `SELECT turn, role, content FROM messages WHERE conversation_id = ? AND turn < ?
       ORDER BY turn, CASE role WHEN 'user' THEN 0 ELSE 1 END`,
    ),
    listTurns: database.prepare<[string], { turn: number; status: TurnStatus; model_id: string | null; started_at: number; ended_at: number | null }>(
      'SELECT turn, status, model_id, started_at, ended_at FROM turns WHERE conversation_id = ? ORDER BY turn',
    ),
    requestCancel: database.prepare(`UPDATE conversations SET cancel_requested_turn = turn WHERE id = ? AND status = 'RUNNING'`),
    runningTurns: database.prepare<[], { id: string; turn: number }>(`SELECT id, turn FROM conversations WHERE status = 'RUNNING'`),
    deleteConversation: database.prepare('DELETE FROM conversations WHERE id = ?'),
    pruneConversations: database.prepare(`DELETE FROM conversations WHERE updated_at < ? AND status != 'RUNNING'`),
  };

  const beginTurn = database.transaction((input: BeginTurnInput): number => {
    const existing = statements.getConversation.get(input.conversationId);
    let turn: number;
    if (existing === undefined) {
      statements.insertConversation.run(input.conversationId, input.owner ?? null, input.now, input.now);
      statements.insertConversationKey.run(input.conversationId);
      turn = 1;
    } else {
      if (existing.owner !== null && input.owner != null && existing.owner !== input.owner) {
        throw new UnauthorizedError();
      }
      if (statements.startNextTurn.run(input.now, input.conversationId).changes === 0) {
        throw new ConflictError(input.conversationId);
      }
      turn = existing.turn + 1;
    }
    statements.insertTurn.run(input.conversationId, turn, input.modelId ?? null, input.now);
    statements.insertMessage.run(input.conversationId, turn, 'user', input.prompt);
    return turn;
  });

  // The writes of running turns: their events, then their end. Each is a list of statements run
  // in one transaction, alone or with others (below).
  // The integer key of each conversation with a running turn, so that an insert does not look it
  // up. Dropped when the turn ends, so it holds the running turns only.
  const keys = new Map<string, number>();
  // A conversation that does not exist gets no key: the insert then fails on the foreign key, as
  // one write's fault.
  const keyOf = (conversationId: string): number => {
    let key = keys.get(conversationId);
    if (key === undefined) {
      key = statements.conversationKey.get(conversationId)?.key;
      if (key === undefined) return 0;
      keys.set(conversationId, key);
    }
    return key;
  };
  const insertEvents = (events: ConversationEvent[]): void => {
    for (const event of events) statements.insertEvent.run(toRow(event, keyOf(event.conversationId)));
  };
  const finishTurn = (event: ConversationEvent, assistantText: string): void => {
    statements.insertEvent.run(toRow(event, keyOf(event.conversationId)));
    keys.delete(event.conversationId);
    if (assistantText.length > 0) {
      statements.insertMessage.run(event.conversationId, event.turn, 'assistant', assistantText);
    }
    statements.endTurn.run(event.type, event.createdAt, event.conversationId, event.turn);
    statements.endConversationTurn.run(event.type, event.createdAt, event.conversationId, event.turn);
  };

  // Group commit: a write opens a group, or joins the open one, which collects whatever turns hand
  // over until the event loop's check phase (`setImmediate`, right after the timers and I/O of this
  // turn of the loop) or until it holds GROUP_LIMIT writes; the group is then written in one
  // transaction, since a transaction's fixed cost is most of a one-row insert's. A quiet stream
  // waits for nothing but the rest of the current loop turn; a busy gateway pays one commit per
  // GROUP_LIMIT writes instead of one per write: events as well as the ends of turns, which under
  // load come in bursts (turns started together end together). (A first write committed on its
  // own, as before, cost a second transaction per loop turn under load.)
  // If a group fails on a constraint, each write is retried on its own, so a bad write fails only
  // its caller and leaves the others stored.
  interface GroupedWrite {
    run: () => void;
    /** Rows it writes, for the checkpointer. */
    rows: number;
    what: string;
    resolve: () => void;
    reject: (error: unknown) => void;
  }
  let group: GroupedWrite[] = [];
  let groupOpen = false;
  const commitOne = database.transaction((entry: Pick<GroupedWrite, 'run' | 'rows'>) => {
    entry.run();
    checkpointer?.wrote(entry.rows);
  });
  const commitGroup = database.transaction((batch: GroupedWrite[]) => {
    let rows = 0;
    for (const entry of batch) {
      entry.run();
      rows += entry.rows;
    }
    checkpointer?.wrote(rows);
  });
  const commitWaiting = (): void => {
    const batch = group;
    group = [];
    if (batch.length === 0) return;
    try {
      // IMMEDIATE: a write may look up its conversation's key before it inserts, and a
      // transaction that read first fails at once if another connection wrote meanwhile.
      commitGroup.immediate(batch);
      for (const entry of batch) entry.resolve();
    } catch (error) {
      // A constraint (a duplicate seq) is one write's fault: each is retried alone. Anything else
      // (a lock held past the busy timeout, a full disk) would fail each of them again, each after
      // its own wait, so they all fail now.
      if (String((error as { code?: unknown }).code).startsWith('SQLITE_CONSTRAINT')) {
        for (const entry of batch) write(entry.what, () => commitOne.immediate(entry)).then(entry.resolve, entry.reject);
      } else {
        for (const entry of batch) write(entry.what, () => { throw error; }).catch(entry.reject);
      }
    }
  };
  const flushGroup = (): void => {
    groupOpen = false;
    commitWaiting();
  };
  const grouped = (what: string, rows: number, run: () => void): Promise<void> => {
    if (!groupOpen) {
      groupOpen = true;
      setImmediate(flushGroup);
    }
    const written = new Promise<void>((resolve, reject) => void group.push({ run, rows, what, resolve, reject }));
    // A full group is written now: under load a loop turn is long, and the writes that arrived
    // early in it would otherwise wait for all that came after them.
    if (group.length >= GROUP_LIMIT) commitWaiting();
    return written;
  };

  /** Runs a write, turning SQLite's errors into `StoreError` (domain errors pass through). */
  const write = <T>(what: string, action: () => T): Promise<T> => {
    try {
      return Promise.resolve(action());
    } catch (error) {
      if (error instanceof ConflictError || error instanceof UnauthorizedError) return Promise.reject(error);
      return Promise.reject(new StoreError(`Could not ${what}: ${(error as Error).message}`, error));
    }
  };

  return {
    // IMMEDIATE: the transaction reads before it writes, and a deferred one would then fail at
    // once, without waiting, whenever another connection (a turn thread's) wrote in between.
    beginTurn: (input) => write('start the turn', () => beginTurn.immediate(input)),
    turnContext: (conversationId, turn): Promise<TurnContext> =>
      write('read the conversation', () => ({
        history: statements.historyBefore.all(conversationId, turn),
        lastSeq: statements.lastSeq.get(conversationId)?.seq ?? 0,
      })),
    appendEvents: (events) => grouped('store the events', events.length, () => insertEvents(events)),
    endTurn: ({ event, assistantText }) => grouped('end the turn', 4, () => finishTurn(event, assistantText)),
    getConversation: (conversationId) =>
      write('read the conversation', (): Conversation | null => {
        const row = statements.getConversation.get(conversationId);
        if (row === undefined) return null;
        const turns: Turn[] = statements.listTurns.all(conversationId).map((turn) => ({
          turn: turn.turn,
          status: turn.status,
          modelId: turn.model_id,
          startedAt: turn.started_at,
          endedAt: turn.ended_at,
        }));
        return {
          conversationId: row.id,
          owner: row.owner,
          status: row.status,
          lastSeq: statements.lastSeq.get(conversationId)?.seq ?? 0,
          createdAt: row.created_at,
          updatedAt: row.updated_at,
          turns,
          messages: statements.listMessages.all(conversationId),
        };
      }),
    listEvents: (conversationId, afterSeq, limit = -1) =>
      write('read the events', () => statements.listEvents.all(conversationId, afterSeq, limit).map(fromRow)),
    requestCancel: (conversationId) =>
      write('request cancellation', () => statements.requestCancel.run(conversationId).changes > 0),
    isCancelRequested: (conversationId, turn) =>
      write('read the conversation', () => statements.getConversation.get(conversationId)?.cancel_requested_turn === turn),
    listRunningTurns: () =>
      write('list running turns', (): RunningTurn[] =>
        statements.runningTurns.all().map((row) => ({
          conversationId: row.id,
          turn: row.turn,
          lastSeq: statements.lastSeq.get(row.id)?.seq ?? 0,
        })),
      ),
    deleteConversation: (conversationId) =>
      write('delete the conversation', () => {
        keys.delete(conversationId);
        return statements.deleteConversation.run(conversationId).changes > 0;
      }),
    pruneConversations: (updatedBefore) =>
      write('prune conversations', () => {
        keys.clear();
        return statements.pruneConversations.run(updatedBefore).changes;
      }),
    close: async () => {
      if (group.length > 0 && database.open) flushGroup();
      await checkpointer?.stop();
      if (database.open) database.close();
    },
  };
}

/** The parameters of `insertEvent`, in the order of its columns (positional binding is the cheapest). */
function toRow(event: ConversationEvent, conversationKey: number): unknown[] {
  return [
    conversationKey,
    event.seq,
    event.turn,
    event.type,
    event.chunk,
    event.error,
    event.errorCode,
    event.stopReason,
    event.usage?.inputTokens ?? null,
    event.usage?.outputTokens ?? null,
    event.latencyMs,
    event.createdAt,
  ];
}

function fromRow(row: EventRow): ConversationEvent {
  return {
    conversationId: row.conversation_id,
    turn: row.turn,
    seq: row.seq,
    type: row.type,
    chunk: row.chunk,
    error: row.error,
    errorCode: row.error_code,
    stopReason: row.stop_reason,
    usage:
      row.input_tokens === null || row.output_tokens === null
        ? null
        : { inputTokens: row.input_tokens, outputTokens: row.output_tokens },
    latencyMs: row.latency_ms,
    createdAt: row.created_at,
  };
}
