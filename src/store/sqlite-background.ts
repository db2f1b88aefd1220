/**
 * The SQLite store's background thread: it copies the write-ahead logs into the database files
 * (checkpoints), and moves the events that the store appends to the incoming file into the events
 * table of the database file. It has its own connection, so neither runs on the event loop.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface BackgroundOptions {
  /** The database file. */
  path: string;
  /** The incoming file whose events the thread moves into the database file; none: it only checkpoints. */
  incomingPath?: string;
  /** The columns of an event row, in the events table as in the incoming file. */
  eventColumns: string;
  /** How often the thread moves the events that came in since it last did (ms). */
  moveIntervalMs: number;
  /** How often the thread looks at how much was written (ms). */
  intervalMs: number;
  /** Rows written since the last checkpoint that make the next look checkpoint. */
  rows: number;
  /** A checkpoint also runs when anything was written and this long passed since the last (ms). */
  maxIntervalMs: number;
  /** Pages in a write-ahead log past which a RESTART follows the PASSIVE checkpoint. */
  restartPages: number;
}

export interface Background {
  /** Counts rows committed on the store's own connection. */
  wrote(rows: number): void;
  /** The highest id of the incoming file whose event is known to be in the database file. */
  moved(): number;
  /**
   * Asks the thread to leave the database file's write lock free between its move transactions
   * while the store writes that file (`true`), or lets it go on (`false`). Calls nest.
   */
  yieldLock(wanted: boolean): void;
  /** Moves what is left, runs a last checkpoint and stops the thread. */
  stop(): Promise<void>;
}

// Checkpoints. SQLite's automatic checkpoint would run inside a commit on the event loop, fsync
// included, and stall every stream for tens of milliseconds; here it runs beside it. A checkpoint
// still disturbs the commits that run meanwhile (its fsync competes with their writes), so it runs
// only once enough was written: the store counts the rows it commits in a shared counter, and the
// thread adds the rows it moves.
//
// A PASSIVE checkpoint never waits for writers, but under a steady stream of commits it never
// catches up either: the log starts over only when a write begins with every page of it copied,
// and each commit made during the copy leaves some behind. The log then grows without end (1.4 GB
// in 15 s at 20,000 events/s), and every page read searches a longer index of it, so each insert
// costs more the longer the load lasts. So once the log holds restartPages, a RESTART follows the
// PASSIVE one: it holds new writes back while it copies the little written since, and the next
// write starts the log over. A RESTART also waits for every reader of the log, holding writes back
// meanwhile, so it is tried only when no reader is behind, and waits 20 ms at most.
//
// Moves. The store appends events to the incoming file, a table with no index but its rowid, where
// a commit writes the one or two pages at its end. Inserted straight into the events table, keyed
// by conversation, the events of 1,000 turns at once each dirty a page of their own, and every
// commit writes all of them. Here, a second's worth is read at once, sorted by conversation, and
// inserted in transactions of a thousand rows, where a turn's twenty events share one page.
// An insert of a row that is already there (a move cut short by a crash, then done again) is
// ignored; a row whose conversation was deleted is dropped. The thread then publishes the highest
// id it moved, and the store deletes from the incoming file up to it: only the store writes that
// file, so its appends never wait for the thread.
//
// It is CommonJS because `eval` workers are.
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const written = new Int32Array(workerData.written);
const moved = new BigInt64Array(workerData.moved);
const wanted = new Int32Array(workerData.wanted);
// Below the event loop's thread (nice 10, where the system lets a thread lower itself: Linux keeps
// a nice value per thread): a move or a checkpoint can wait for a quiet moment; the next event of a
// stream cannot.
try {
  const thread = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
  if (Number.isInteger(thread) && thread > 0) require('node:os').setPriority(thread, 10);
} catch {}
const database = new Database(workerData.path);
const schemas = ['main'];
let move = () => 0;
if (workerData.incomingPath !== undefined) {
  database.prepare('ATTACH DATABASE ? AS incoming').run(workerData.incomingPath);
  schemas.push('incoming');
  const columns = workerData.eventColumns;
  const newest = database.prepare('SELECT MAX(id) FROM incoming.events').pluck().safeIntegers();
  // The rows of a move, sorted, in a table in memory, so that each transaction inserts a run of
  // them without the rows passing through JavaScript.
  database.pragma('temp_store = MEMORY');
  database.exec('CREATE TEMP TABLE moving (' + columns + ')');
  const gather = database.prepare(
    'INSERT INTO temp.moving SELECT ' + columns + ' FROM incoming.events WHERE id > ? AND id <= ? ORDER BY conversation_key, seq',
  );
  // A row whose conversation is gone (deleted since it came in) is dropped. Each run is a
  // transaction of its own that locks the database file only, never the incoming file the store
  // appends to (the rows come from the temporary table).
  const insertRun = database.prepare(
    'INSERT OR IGNORE INTO main.events (' + columns + ') SELECT ' + columns + ' FROM temp.moving m WHERE m.rowid > ? AND m.rowid <= ? ' +
      'AND EXISTS (SELECT 1 FROM main.conversation_keys k WHERE k.key = m.conversation_key)',
  );
  const clear = database.prepare('DELETE FROM temp.moving');
  move = () => {
    const from = Atomics.load(moved, 0);
    const to = newest.get();
    if (to === null || to <= from) return 0;
    clear.run();
    const count = gather.run(from, to).changes;
    // In transactions of moveBatch rows: each holds the database file's write lock for a few
    // milliseconds. Between them, the thread stands aside while the store wants the lock (a turn
    // starts or ends), for 200 ms at most, so that the store's write never waits for more than one.
    for (let start = 0; start < count; start += workerData.moveBatch) {
      const waitUntil = Date.now() + 200;
      for (let current = Atomics.load(wanted, 0); current > 0 && Date.now() < waitUntil; current = Atomics.load(wanted, 0)) {
        Atomics.wait(wanted, 0, current, 5);
      }
      insertRun.run(start, start + workerData.moveBatch);
    }
    clear.run();
    Atomics.store(moved, 0, to);
    return count;
  };
}
let checkpointedAt = Date.now();
let checkpointedRows = 0;
let movedRows = 0;
const checkpoint = () => {
  checkpointedRows = (Atomics.load(written, 0) + movedRows) | 0;
  checkpointedAt = Date.now();
  // Only a RESTART waits for other connections (a PASSIVE checkpoint never does), and new writes wait
  // while it does: it may wait for a commit in progress, not for more.
  database.pragma('busy_timeout = 20');
  for (const schema of schemas) {
    try {
      const [passive] = database.pragma(schema + '.wal_checkpoint(PASSIVE)');
      // Not while a reader holds an older snapshot (the PASSIVE one then stops short of the end): the
      // log cannot start over before that reader is done.
      if (passive.log >= workerData.restartPages && passive.checkpointed === passive.log) database.pragma(schema + '.wal_checkpoint(RESTART)');
    } catch {}
  }
  // A move waits for the store's own writes to the database file, as those wait for it.
  database.pragma('busy_timeout = 2000');
};
const moveSafely = () => {
  try {
    movedRows = (movedRows + move()) | 0;
  } catch {
    // A full disk, a lock held too long: the events stay in the incoming file, for the next try.
  }
};
database.pragma('busy_timeout = 2000');
let movedAt = Date.now();
const timer = setInterval(() => {
  if (Date.now() - movedAt >= workerData.moveIntervalMs) {
    movedAt = Date.now();
    moveSafely();
  }
  const rows = (Atomics.load(written, 0) + movedRows - checkpointedRows) | 0;
  if (rows > 0 && (rows >= workerData.rows || Date.now() - checkpointedAt >= workerData.maxIntervalMs)) checkpoint();
}, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  moveSafely();
  checkpoint();
  database.close();
  parentPort.close();
});
`;

/**
 * Rows one move transaction inserts. The rows of a whole move are sorted first, so a transaction of
 * any size takes whole runs of its turns' events; this one holds the database file's write lock for
 * a few milliseconds, which is as long as the store's own writes to it (turns starting and ending)
 * may have to wait.
 */
const MOVE_BATCH = 1000;

/** Starts the background thread. */
export function startBackground(options: BackgroundOptions): Background {
  const written = new Int32Array(new SharedArrayBuffer(4));
  const moved = new BigInt64Array(new SharedArrayBuffer(8));
  // How many of the store's writes to the database file are waiting or running.
  const wanted = new Int32Array(new SharedArrayBuffer(4));
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  let closing = false;
  let worker: Worker;
  let exited: Promise<void>;
  const start = (): void => {
    worker = new Worker(SOURCE, {
      eval: true,
      // Not the process's own options: under \`--input-type=module\` this source would be a module,
      // where \`require\` does not exist.
      execArgv: [],
      workerData: { ...options, written: written.buffer, moved: moved.buffer, wanted: wanted.buffer, moveBatch: MOVE_BATCH, module },
    });
    // Not holding the process open on its own: the store's close() ends it.
    worker.unref();
    exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.on('error', () => undefined);
    // A thread that dies (it cannot open the file, it runs out of memory) is started again, a
    // second later: meanwhile the events wait in the incoming file.
    worker.once('exit', () => {
      if (!closing) setTimeout(() => closing || start(), 1000).unref();
    });
  };
  start();
  return {
    // Wraps around after 2^32 rows; the thread compares differences, so that is harmless.
    wrote: (rows) => void Atomics.add(written, 0, rows),
    moved: () => Number(Atomics.load(moved, 0)),
    yieldLock: (wanting) => {
      Atomics.add(wanted, 0, wanting ? 1 : -1);
      if (!wanting) Atomics.notify(wanted, 0);
    },
    stop: async () => {
      closing = true;
      // Held while closing: an unreferenced worker would let the process exit before its last checkpoint.
      worker.ref();
      worker.postMessage('close');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      await worker.terminate();
    },
  };
}
