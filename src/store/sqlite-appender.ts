/**
 * The SQLite store's appender: a thread with its own connection to the incoming file, which
 * appends the events the store hands it and deletes, behind the background thread, the ones
 * already moved into the database file. It is the incoming file's one writer.
 *
 * An insert and its commit cost the event loop 6 to 10 µs an event when it ran them itself, with
 * 1,000 turns appending at once (a commit of 16 events, 100 to 150 µs, mostly writing the log);
 * handing a group over and taking the answer back costs it about 1 µs an event. The group is
 * acknowledged once committed, so an event is stored, as before, when `append` resolves.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface AppenderOptions {
  /** The incoming file. */
  path: string;
  /** The columns of an event row, in the order of the values `append` gets. */
  eventColumns: string;
  /** The highest id that the background thread has moved into the database file (a BigInt64 in shared memory). */
  moved: SharedArrayBuffer;
  /** How long a commit waits for another connection's lock before it fails with "database is locked" (ms). */
  busyTimeoutMs: number;
  /** Moved rows deleted per commit of events. */
  deleteLimit: number;
}

export interface Appender {
  /**
   * Appends `count` events, given as their values one after the other, in one transaction.
   * Resolves once committed, with the id of the last one (the ids of a group are consecutive);
   * rejects with SQLite's error, and then none of them is stored.
   */
  append(values: unknown[], count: number): Promise<number>;
  /** Waits for the groups handed over, then ends the thread. */
  stop(): Promise<void>;
}

// CommonJS, as `eval` workers are. Messages in: { group, values, count } or 'close'. Out:
// { group, lastId } or { group, error: { message, code } }, in the order the groups came.
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const moved = new BigInt64Array(workerData.moved);
const columns = workerData.eventColumns;
const width = columns.split(',').length;
let database;
let opening;
try {
  database = new Database(workerData.path);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('busy_timeout = ' + workerData.busyTimeoutMs);
  // The background thread checkpoints the file; a commit here never does.
  database.pragma('wal_autocheckpoint = 0');
} catch (error) {
  opening = error;
}
const insert = database && database.prepare('INSERT INTO events (' + columns + ') VALUES (' + new Array(width).fill('?').join(', ') + ')');
const deleteMoved = database && database.prepare('DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)');
let deletedUpTo = 0;
// Deferred: the commit locks this file only when it writes, and only this thread writes it.
const appendGroup = database && database.transaction((values, count) => {
  let lastId = 0;
  for (let row = 0; row < count; row += 1) {
    lastId = Number(insert.run(values.slice(row * width, row * width + width)).lastInsertRowid);
  }
  // Behind the background thread, a few rows at a time, from the other end of the file.
  const upTo = Number(Atomics.load(moved, 0));
  if (upTo > deletedUpTo) {
    const { changes } = deleteMoved.run(upTo, workerData.deleteLimit);
    if (changes < workerData.deleteLimit) deletedUpTo = upTo;
  }
  return lastId;
});
parentPort.on('message', (message) => {
  if (message === 'close') {
    if (database) database.close();
    parentPort.close();
    return;
  }
  try {
    if (opening) throw opening;
    parentPort.postMessage({ group: message.group, lastId: appendGroup(message.values, message.count) });
  } catch (error) {
    parentPort.postMessage({ group: message.group, error: { message: String(error && error.message), code: error && error.code } });
  }
});
`;

/** Starts the appender thread. */
export function startAppender(options: AppenderOptions): Appender {
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  const waiting = new Map<number, { resolve: (lastId: number) => void; reject: (error: unknown) => void }>();
  let nextGroup = 0;
  let worker: Worker | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  const start = (): Worker => {
    const thread = new Worker(SOURCE, {
      eval: true,
      // Not the process's own options: \`--input-type=module\` would make this source a module.
      execArgv: [],
      workerData: { path: options.path, eventColumns: options.eventColumns, moved: options.moved, busyTimeoutMs: options.busyTimeoutMs, deleteLimit: options.deleteLimit, module },
    });
    thread.on('message', (message: { group: number; lastId?: number; error?: { message: string; code?: string } }) => {
      const entry = waiting.get(message.group);
      if (entry === undefined) return;
      waiting.delete(message.group);
      if (message.error === undefined) entry.resolve(message.lastId!);
      else entry.reject(Object.assign(new Error(message.error.message), { code: message.error.code }));
      // Nothing left to answer: the thread does not hold the process open.
      if (waiting.size === 0) thread.unref();
    });
    thread.on('error', () => undefined);
    exited = new Promise<void>((resolve) =>
      thread.once('exit', () => {
        // A thread that died (out of memory, a crash) answers nothing more: what it was given fails,
        // and the next group starts another.
        if (worker === thread) worker = undefined;
        for (const [group, entry] of waiting) {
          waiting.delete(group);
          entry.reject(new Error('the SQLite appender thread stopped'));
        }
        resolve();
      }),
    );
    thread.unref();
    return thread;
  };

  return {
    append(values, count) {
      if (stopped) return Promise.reject(new Error('the store is closed'));
      const thread = (worker ??= start());
      const group = nextGroup++;
      const written = new Promise<number>((resolve, reject) => waiting.set(group, { resolve, reject }));
      // Held open while a group waits for its answer.
      thread.ref();
      thread.postMessage({ group, values, count });
      return written;
    },
    async stop() {
      stopped = true;
      const thread = worker;
      if (thread === undefined) return;
      thread.ref();
      // Messages are handled in order: the groups before it are answered first.
      thread.postMessage('close');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      await thread.terminate();
    },
  };
}
