/**
 * The SQLite store (better-sqlite3, WAL): the local deployment's storage. One file holds
 * conversations, turns, messages and events; `:memory:` gives a throw-away store. Events are first
 * appended to a second file beside it (`<path>-incoming`, see `INCOMING_SCHEMA`), and a background
 * thread moves them into the first about once a second; reads look in both.
 *
 * better-sqlite3 is synchronous; a write takes microseconds in WAL mode, less than handing it to a
 * thread would cost. `synchronous = NORMAL` keeps every committed write across a process crash
 * (`kill -9`); only a power loss may drop the last transactions.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Conversation, ConversationEvent, Message, Turn, TurnStatus } from '../domain.js';
import { ConflictError, StoreError, UnauthorizedError } from '../errors.js';
import { startBackground } from './sqlite-background.js';
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

/** An event's columns after its conversation's key, in the events table as in the incoming file. */
const EVENT_FIELDS = `
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
  created_at REAL NOT NULL`.slice(1);

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
${EVENT_FIELDS},
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
  /**
   * Appends events to an incoming file beside the database file (`<path>-incoming`), from which a
   * background thread moves them into it about once a second (default: on for a file; a
   * `:memory:` store always writes them directly). Off, each event is inserted into the events
   * table as it comes.
   */
  incoming?: boolean;
  /** How often the background thread moves the incoming events into the database file (default 1000 ms). */
  moveIntervalMs?: number;
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

/** The columns of an event row, in the order `toRow` gives them. */
const EVENT_COLUMNS =
  'conversation_key, seq, turn, type, chunk, error, error_code, stop_reason, input_tokens, output_tokens, latency_ms, created_at';
const EVENT_COLUMN_COUNT = EVENT_COLUMNS.split(',').length;
/** The parameters of one event row in an INSERT: `(?, ?, …)`, one per column of `EVENT_COLUMNS`. */
const EVENT_ROW_PARAMETERS = `(${Array.from({ length: EVENT_COLUMN_COUNT }, () => '?').join(', ')})`;

/** Rows one INSERT into the incoming file takes at most: a full group of one-event writes. */
const INSERT_ROWS = 16;

// The incoming file: the events as they come, with no index but an id that never goes back
// (AUTOINCREMENT), which is how far the background thread has moved them. A commit writes the page
// or two at its end, where an insert into the events table, keyed by conversation, dirties a page
// per running turn: with 1,000 turns appending at once, each commit of 16 events wrote 16 pages.
// The background thread moves a second's worth at once into the events table, sorted, where a
// turn's events share their page (src/store/sqlite-background.ts). It is a file of its own because
// SQLite has one writer per file: a move of that size holds the lock for tens of milliseconds.
const INCOMING_SCHEMA = `
CREATE TABLE IF NOT EXISTS incoming.events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  conversation_key INTEGER NOT NULL,
${EVENT_FIELDS}
);
`;

/** How long a write waits for another connection's lock before it fails with "database is locked". */
const BUSY_TIMEOUT_MS = 2000;

/** Moved rows deleted from the incoming file per commit of events: it keeps up with 16 appended. */
const DELETE_LIMIT = 64;

/**
 * Moves every event of the incoming file into the events table, then deletes them there, on the
 * store's own connection: at opening (what a crash left) and at closing (what the background
 * thread left). A row already in the table is ignored; a row whose conversation was deleted is
 * dropped. Two transactions, the insert first: a crash between them leaves rows that the next move
 * ignores.
 */
function moveIncoming(database: Database.Database): void {
  const last = database.prepare('SELECT MAX(id) FROM incoming.events').pluck().get() as number | null;
  if (last === null) return;
  database
    .transaction(() =>
      database
        .prepare(
          `INSERT OR IGNORE INTO main.events (${EVENT_COLUMNS})
           SELECT ${EVENT_COLUMNS} FROM incoming.events i
           WHERE i.id <= ? AND EXISTS (SELECT 1 FROM main.conversation_keys k WHERE k.key = i.conversation_key)
           ORDER BY conversation_key, seq`,
        )
        .run(last),
    )
    .immediate();
  database.prepare('DELETE FROM incoming.events WHERE id <= ?').run(last);
}

/** SQLite's errors as `StoreError` naming what failed; domain errors pass through. */
function storeError(what: string, error: unknown): unknown {
  if (error instanceof ConflictError || error instanceof UnauthorizedError) return error;
  return new StoreError(`Could not ${what}: ${(error as Error).message}`, error);
}

/** An error that the group commit treats as one write's fault, as it does SQLite's constraints. */
function constraintError(message: string): Error {
  return Object.assign(new Error(message), { code: 'SQLITE_CONSTRAINT' });
}

/** Opens (and creates when needed) the SQLite store. Throws `StoreError` when the file cannot be opened. */
export function createSqliteStore(options: SqliteStoreOptions): Store {
  const incomingPath = options.path !== ':memory:' && options.incoming !== false ? `${options.path}-incoming` : undefined;
  let database: Database.Database;
  try {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    database = new Database(options.path);
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = NORMAL');
    database.pragma('foreign_keys = ON');
    database.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // Each running turn appends to its own leaf page of the events table; SQLite's default cache
    // (2 MB) holds the pages of about 500 of them, and past that every insert reads its page back
    // from the file. Pages are cached only once used, so an idle store costs nothing more.
    database.pragma('cache_size = -32768');
    migrate(database);
    if (incomingPath !== undefined) {
      database.prepare('ATTACH DATABASE ? AS incoming').run(incomingPath);
      database.pragma('incoming.journal_mode = WAL');
      database.pragma('incoming.synchronous = NORMAL');
      database.exec(INCOMING_SCHEMA);
      // Events that a crash left there, before anything reads the events table.
      moveIncoming(database);
    }
    if (options.path !== ':memory:') database.pragma('wal_autocheckpoint = 0');
  } catch (error) {
    if (database! !== undefined && database.open) database.close();
    throw new StoreError(`Cannot open the SQLite database at ${options.path}: ${(error as Error).message}`, error);
  }

  const background =
    options.path === ':memory:'
      ? undefined
      : startBackground(
          {
            path: options.path,
            incomingPath,
            eventColumns: EVENT_COLUMNS,
            moveIntervalMs: options.moveIntervalMs ?? 1000,
            intervalMs: options.checkpointIntervalMs ?? 100,
            restartPages: options.checkpointRestartPages ?? 4096,
            rows: options.checkpointRows ?? 2000,
            maxIntervalMs: options.checkpointMaxIntervalMs ?? 10_000,
          });

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
    insertEvent: database.prepare(`INSERT INTO events (${EVENT_COLUMNS}) VALUES ${EVENT_ROW_PARAMETERS}`),
    endTurn: database.prepare(`UPDATE turns SET status = ?, ended_at = ? WHERE conversation_id = ? AND turn = ? AND status = 'RUNNING'`),
    endConversationTurn: database.prepare(`UPDATE conversations SET status = ?, updated_at = ? WHERE id = ? AND turn = ?`),
    lastSeqOfKey: database.prepare<[number], { seq: number | null }>('SELECT MAX(seq) AS seq FROM events WHERE conversation_key = ?'),
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

  // The incoming file (see `moveIncoming`): appends, and deletes behind the background thread.
  const incoming =
    incomingPath === undefined
      ? undefined
      : {
          // INSERTs of 1 to INSERT_ROWS rows, prepared when first needed (`insertStaged`).
          inserts: [] as Database.Statement[],
          deleteMoved: database.prepare<[number, number]>(
            'DELETE FROM incoming.events WHERE id IN (SELECT id FROM incoming.events WHERE id <= ? ORDER BY id LIMIT ?)',
          ),
          // Reads of a conversation that has events there that may not be moved yet: both files.
          listEvents: database.prepare<[number, number, number, number, number], Omit<EventRow, 'conversation_id'>>(
            `SELECT ${EVENT_COLUMNS.replace('conversation_key, ', '')} FROM (
               SELECT ${EVENT_COLUMNS} FROM main.events WHERE conversation_key = ? AND seq > ?
               UNION
               SELECT ${EVENT_COLUMNS} FROM incoming.events WHERE conversation_key = ? AND seq > ?
             ) ORDER BY seq LIMIT ?`,
          ),
          // The conversations with events there, which the background thread may not have moved
          // yet: the last seq and id of each. Nothing is kept per event.
          waiting: new Map<string, { lastSeq: number; lastId: number }>(),
          // How far the background thread had moved when `waiting` was last swept.
          sweptAt: 0,
          // Every row up to this id is deleted from the incoming file.
          deletedUpTo: 0,
        };
  /** Forgets the conversations whose events the background thread has all moved into the database file. */
  const catchUp = (): void => {
    if (incoming === undefined || background === undefined) return;
    const moved = background.moved();
    if (moved === incoming.sweptAt) return;
    incoming.sweptAt = moved;
    for (const [conversationId, waiting] of incoming.waiting) if (waiting.lastId <= moved) incoming.waiting.delete(conversationId);
  };

  // The writes of running turns: their events, then their end. Each is a list of statements run
  // in one transaction, alone or with others (below).
  // The integer key of each conversation with a running turn, so that an insert does not look it
  // up, and the last seq it stored. Dropped when the turn ends, so it holds the running turns only.
  interface RunningState {
    key: number;
    lastSeq: number;
  }
  const running = new Map<string, RunningState>();
  const stateOf = (conversationId: string): RunningState | undefined => {
    let state = running.get(conversationId);
    if (state === undefined) {
      const key = statements.conversationKey.get(conversationId)?.key;
      if (key === undefined) return undefined;
      // The last seq serves the incoming file's order check only; the events table's key does it
      // without one.
      const lastSeq =
        incoming === undefined ? 0 : Math.max(statements.lastSeqOfKey.get(key)?.seq ?? 0, incoming.waiting.get(conversationId)?.lastSeq ?? 0);
      state = { key, lastSeq };
      running.set(conversationId, state);
    }
    return state;
  };
  // The events of the transaction in progress, and the last seq each conversation reaches in it:
  // they count as waiting in the incoming file, and as the conversations' last seqs, once it commits.
  // Their rows are inserted together once every write of the transaction has run (`insertStaged`);
  // until then `stagedValues` holds their values one after the other, and their ids are 0.
  let staged: Array<{ id: number; event: ConversationEvent; state: RunningState }> = [];
  let stagedValues: unknown[] = [];
  const stagedLast = new Map<RunningState, number>();
  const beginStaging = (): void => {
    staged = [];
    stagedValues = [];
    stagedLast.clear();
  };
  /**
   * Inserts the staged rows into the incoming file, INSERT_ROWS to a statement: one statement for
   * a group costs about a third less than one per row (binding and stepping each row is most of
   * an append). The ids of one statement's rows follow each other, ending at its last insert id.
   */
  const insertStaged = (): void => {
    if (incoming === undefined) return;
    const width = EVENT_COLUMN_COUNT;
    for (let row = 0; row < staged.length; ) {
      const count = Math.min(INSERT_ROWS, staged.length - row);
      const statement = (incoming.inserts[count] ??= database.prepare(
        `INSERT INTO incoming.events (${EVENT_COLUMNS}) VALUES ${Array.from({ length: count }, () => EVENT_ROW_PARAMETERS).join(', ')}`,
      ));
      const lastId = Number(statement.run(stagedValues.slice(row * width, (row + count) * width)).lastInsertRowid);
      for (let index = 0; index < count; index += 1) staged[row + index]!.id = lastId - count + 1 + index;
      row += count;
    }
  };
  const commitStaged = (): void => {
    for (const { id, event, state } of staged) {
      const waiting = incoming!.waiting.get(event.conversationId);
      if (waiting === undefined) incoming!.waiting.set(event.conversationId, { lastSeq: event.seq, lastId: id });
      else {
        waiting.lastSeq = event.seq;
        waiting.lastId = id;
      }
      state.lastSeq = event.seq;
    }
    beginStaging();
  };
  /**
   * The conversation's running state, checking that `event` comes after every event it stored:
   * without an index, the incoming file cannot refuse a duplicate seq as the events table does.
   */
  const checkedState = (event: ConversationEvent): RunningState => {
    const state = stateOf(event.conversationId);
    if (state === undefined) throw constraintError(`conversation ${event.conversationId} does not exist`);
    const last = stagedLast.get(state) ?? state.lastSeq;
    if (event.seq <= last) {
      throw constraintError(`event ${event.seq} of conversation ${event.conversationId} does not come after its last stored event (${last})`);
    }
    stagedLast.set(state, event.seq);
    return state;
  };
  // A conversation that does not exist gets no key: the insert then fails on the foreign key, as
  // one write's fault.
  const keyOf = (conversationId: string): number => stateOf(conversationId)?.key ?? 0;
  const insertEvents = (events: ConversationEvent[]): void => {
    if (incoming === undefined) {
      for (const event of events) statements.insertEvent.run(toRow(event, keyOf(event.conversationId)));
      return;
    }
    for (const event of events) {
      const state = checkedState(event);
      stagedValues.push(...toRow(event, state.key));
      staged.push({ id: 0, event, state });
    }
  };
  const finishTurn = (event: ConversationEvent, assistantText: string): void => {
    // The terminal event goes to the database file with the turn's status, in one transaction,
    // even when the turn's other events are still in the incoming file.
    statements.insertEvent.run(toRow(event, incoming === undefined ? keyOf(event.conversationId) : checkedState(event).key));
    running.delete(event.conversationId);
    if (assistantText.length > 0) {
      statements.insertMessage.run(event.conversationId, event.turn, 'assistant', assistantText);
    }
    statements.endTurn.run(event.type, event.createdAt, event.conversationId, event.turn);
    statements.endConversationTurn.run(event.type, event.createdAt, event.conversationId, event.turn);
  };

  /** Runs `action` now, as a promise. */
  const now = <T>(action: () => T): Promise<T> => {
    try {
      return Promise.resolve(action());
    } catch (error) {
      return Promise.reject(error);
    }
  };
  // A write to the database file while the background thread may hold its write lock for a move
  // transaction (a few milliseconds): tried without waiting, then again every millisecond, up to
  // the busy timeout (2 s), with the thread asked to stand aside after its current transaction.
  // SQLite's own wait would put the whole event loop to sleep meanwhile, in steps of 1, 2, 5, 10
  // and 15 ms, and every stream with it. Without an incoming file, SQLite's wait as before. The
  // writes still trying are kept in `trying`, which closing waits for.
  const trying = new Set<Promise<unknown>>();
  const onDatabaseFile = <T>(action: () => T): Promise<T> => {
    if (incoming === undefined || background === undefined) return now(action);
    const thread = background;
    thread.yieldLock(true);
    const giveUpAt = performance.now() + BUSY_TIMEOUT_MS;
    const written = new Promise<T>((resolve, reject) => {
      const attempt = (): void => {
        if (!database.open) {
          thread.yieldLock(false);
          reject(new Error('the store is closed'));
          return;
        }
        database.pragma('busy_timeout = 0');
        try {
          const result = action();
          thread.yieldLock(false);
          resolve(result);
        } catch (error) {
          if (String((error as { code?: unknown }).code).startsWith('SQLITE_BUSY') && performance.now() < giveUpAt) {
            setTimeout(attempt, 1);
            return;
          }
          thread.yieldLock(false);
          reject(error);
        } finally {
          database.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
        }
      };
      attempt();
    });
    const settled: Promise<unknown> = written.then(
      (): boolean => trying.delete(settled),
      (): boolean => trying.delete(settled),
    );
    trying.add(settled);
    return written;
  };

  // Group commit: a write opens a group, or joins the open one, which collects whatever turns hand
  // over until the event loop's check phase (`setImmediate`, right after the timers and I/O of this
  // turn of the loop) or until it holds GROUP_LIMIT writes; the group is then written in one
  // transaction, since a transaction's fixed cost is most of a one-row insert's. A quiet stream
  // waits for nothing but the rest of the current loop turn; a busy gateway pays one commit per
  // GROUP_LIMIT writes instead of one per write: events as well as the ends of turns, which under
  // load come in bursts (turns started together end together). (A first write committed on its
  // own, as before, cost a second transaction per loop turn under load.)
  // With an incoming file, a group is two transactions: the events, on the incoming file alone
  // (deferred, so that it never waits for the background thread's moves into the database file),
  // then the ends of turns, on the database file.
  // If a group fails on a constraint, each write is retried on its own, so a bad write fails only
  // its caller and leaves the others stored.
  interface GroupedWrite {
    run: () => void;
    /** Rows it writes, for the checkpointer. */
    rows: number;
    what: string;
    /** It writes the database file (the end of a turn), not only the incoming file. */
    main: boolean;
    resolve: () => void;
    reject: (error: unknown) => void;
  }
  let group: GroupedWrite[] = [];
  let groupOpen = false;
  const commitOne = database.transaction((entry: Pick<GroupedWrite, 'run' | 'rows'>) => {
    beginStaging();
    entry.run();
    insertStaged();
    background?.wrote(entry.rows);
  });
  const commitGroup = database.transaction((batch: GroupedWrite[]) => {
    beginStaging();
    let rows = 0;
    for (const entry of batch) {
      entry.run();
      rows += entry.rows;
    }
    insertStaged();
    // Behind the background thread, a few rows at a time, from the other end of the same pages.
    deleted = undefined;
    if (incoming !== undefined && background !== undefined && !batch[0]!.main) {
      const moved = background.moved();
      if (moved > incoming.deletedUpTo) {
        const { changes } = incoming.deleteMoved.run(moved, DELETE_LIMIT);
        rows += changes;
        if (changes < DELETE_LIMIT) deleted = moved;
      }
    }
    background?.wrote(rows);
  });
  // Set by a commit of events that deleted every moved row.
  let deleted: number | undefined;
  const commitPart = (batch: GroupedWrite[]): void => {
    // Deferred: the events lock the incoming file only. Immediate: the end of a turn reads before
    // it writes, and a transaction that read first fails at once if another connection wrote
    // meanwhile. The ends of turns write the database file, which a move may be holding.
    const mode = incoming !== undefined && !batch[0]!.main ? 'deferred' : 'immediate';
    const run = mode === 'immediate' ? onDatabaseFile : now;
    run(() => {
      commitGroup[mode](batch);
      if (incoming !== undefined && deleted !== undefined) incoming.deletedUpTo = deleted;
      commitStaged();
      catchUp();
    }).then(
      () => {
        for (const entry of batch) entry.resolve();
      },
      (error: unknown) => {
        beginStaging();
        // A constraint (a duplicate seq) is one write's fault: each is retried alone. Anything
        // else (a lock held past the busy timeout, a full disk) would fail each of them again,
        // each after its own wait, so they all fail now.
        if (String((error as { code?: unknown }).code).startsWith('SQLITE_CONSTRAINT')) {
          for (const entry of batch) {
            const alone = run(() => {
              commitOne[mode](entry);
              commitStaged();
            });
            alone.then(entry.resolve, (failure: unknown) => entry.reject(storeError(entry.what, failure)));
          }
        } else {
          for (const entry of batch) entry.reject(storeError(entry.what, error));
        }
      },
    );
  };
  const commitWaiting = (): void => {
    const batch = group;
    group = [];
    if (batch.length === 0) return;
    if (incoming === undefined) return commitPart(batch);
    const appends = batch.filter((entry) => !entry.main);
    const ends = batch.filter((entry) => entry.main);
    if (appends.length > 0) commitPart(appends);
    if (ends.length > 0) commitPart(ends);
  };
  const flushGroup = (): void => {
    groupOpen = false;
    commitWaiting();
  };
  const grouped = (what: string, rows: number, main: boolean, run: () => void): Promise<void> => {
    if (!groupOpen) {
      groupOpen = true;
      setImmediate(flushGroup);
    }
    const written = new Promise<void>((resolve, reject) => void group.push({ run, rows, what, main, resolve, reject }));
    // A full group is written now: under load a loop turn is long, and the writes that arrived
    // early in it would otherwise wait for all that came after them.
    if (group.length >= GROUP_LIMIT) commitWaiting();
    return written;
  };

  /** Runs a write, turning SQLite's errors into `StoreError` (domain errors pass through). */
  const write = <T>(what: string, action: () => T): Promise<T> => now(action).catch((error: unknown) => Promise.reject(storeError(what, error)));

  /** The conversation's last stored seq, wherever it is stored. */
  const lastSeqOf = (conversationId: string): number => {
    catchUp();
    return Math.max(statements.lastSeq.get(conversationId)?.seq ?? 0, incoming?.waiting.get(conversationId)?.lastSeq ?? 0);
  };
  const listEvents = (conversationId: string, afterSeq: number, limit: number): ConversationEvent[] => {
    catchUp();
    if (incoming === undefined || !incoming.waiting.has(conversationId)) {
      return statements.listEvents.all(conversationId, afterSeq, limit).map(fromRow);
    }
    // Both files, in one statement: only this connection deletes from the incoming file, and only
    // what is already in the database file, so no event falls between the two. An event moved
    // but not yet deleted is in both, the same row twice, which UNION keeps once. The incoming
    // file has no index but its ids: this scans it, which holds about a second of events.
    const key = statements.conversationKey.get(conversationId)?.key;
    if (key === undefined) return [];
    return incoming.listEvents.all(key, afterSeq, key, afterSeq, limit).map((row) => fromRow({ ...row, conversation_id: conversationId }));
  };

  return {
    // IMMEDIATE: the transaction reads before it writes, and a deferred one would then fail at
    // once, without waiting, whenever another connection (a turn thread's) wrote in between.
    beginTurn: (input) =>
      onDatabaseFile(() => beginTurn.immediate(input)).catch((error: unknown) => Promise.reject(storeError('start the turn', error))),
    turnContext: (conversationId, turn): Promise<TurnContext> =>
      write('read the conversation', () => ({
        history: statements.historyBefore.all(conversationId, turn),
        lastSeq: lastSeqOf(conversationId),
      })),
    appendEvents: (events) => grouped('store the events', events.length, false, () => insertEvents(events)),
    endTurn: ({ event, assistantText }) => grouped('end the turn', 4, true, () => finishTurn(event, assistantText)),
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
          lastSeq: lastSeqOf(conversationId),
          createdAt: row.created_at,
          updatedAt: row.updated_at,
          turns,
          messages: statements.listMessages.all(conversationId),
        };
      }),
    listEvents: (conversationId, afterSeq, limit = -1) => write('read the events', () => listEvents(conversationId, afterSeq, limit)),
    requestCancel: (conversationId) =>
      write('request cancellation', () => statements.requestCancel.run(conversationId).changes > 0),
    isCancelRequested: (conversationId, turn) =>
      write('read the conversation', () => statements.getConversation.get(conversationId)?.cancel_requested_turn === turn),
    listRunningTurns: () =>
      write('list running turns', (): RunningTurn[] =>
        statements.runningTurns.all().map((row) => ({
          conversationId: row.id,
          turn: row.turn,
          lastSeq: lastSeqOf(row.id),
        })),
      ),
    deleteConversation: (conversationId) =>
      write('delete the conversation', () => {
        running.delete(conversationId);
        // Its events still in the incoming file are dropped by the move, which finds no conversation.
        incoming?.waiting.delete(conversationId);
        return statements.deleteConversation.run(conversationId).changes > 0;
      }),
    pruneConversations: (updatedBefore) =>
      write('prune conversations', () => {
        running.clear();
        return statements.pruneConversations.run(updatedBefore).changes;
      }),
    close: async () => {
      if (group.length > 0 && database.open) flushGroup();
      while (trying.size > 0) await Promise.all(trying);
      await background?.stop();
      if (!database.open) return;
      // Whatever the background thread left (it failed, or was stopped mid-move).
      if (incoming !== undefined) {
        try {
          moveIncoming(database);
        } catch {
          // The events stay in the incoming file; the next start moves them.
        }
      }
      database.close();
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
