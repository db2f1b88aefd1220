/**
 * What the client commands (`chat`, `replay`) share: argument parsing with `node:util` parseArgs,
 * where the endpoint and the API key come from, the process they talk to (stdout, stderr,
 * SIGINT), and turning any failure into the one line a person reads on stderr.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { LongrunClientError, type LongrunClient } from '../client/index.js';

/**
 * Says through `status` (stderr) when the connection drops while a stream runs, and when it is
 * back: the SDK reconnects and backfills by itself, but a person watching a stalled answer should
 * know why it stalled.
 */
export function reportConnection(client: LongrunClient, status: (line: string) => void): void {
  let dropped = false;
  client.onConnectionChange((change) => {
    if (change.status === 'reconnecting') {
      dropped = true;
      status(`connection lost (${change.reason ?? 'no reason given'}); reconnecting`);
    } else if (change.status === 'connected' && dropped) {
      dropped = false;
      status('reconnected; the answer goes on from the last event received');
    }
  });
}

/** The GraphQL endpoint of a gateway started with `longrun serve` and its defaults. */
export const DEFAULT_URL = 'http://127.0.0.1:4000/graphql';
/** The gateway's default database (LONGRUN_DB); its dev API key is kept beside it, in `api-key`. */
export const DEFAULT_DATABASE = '.longrun/longrun.db';

/** Exit statuses of the client commands. */
export const ExitCode = {
  Ok: 0,
  Failed: 1,
  Usage: 2,
  /** 128 + SIGINT, as shells report a process stopped by Ctrl+C. */
  Interrupted: 130,
} as const;

/** A command line that cannot be run as given; the CLI prints it with the usage and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Where a command reads and writes; `processContext()` is the real process, tests may pass another. */
export interface CommandContext {
  environment: Record<string, string | undefined>;
  /** Folder relative paths (the default key file) are resolved against. */
  cwd: string;
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream;
  /** Calls `listener` on each Ctrl+C (SIGINT) until the returned function is called. */
  onInterrupt(listener: () => void): () => void;
}

/** The running process as a `CommandContext`. */
export function processContext(): CommandContext {
  return {
    environment: process.env,
    cwd: process.cwd(),
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    onInterrupt(listener) {
      process.on('SIGINT', listener);
      return () => process.off('SIGINT', listener);
    },
  };
}

/** The options every client command takes. */
export const CONNECTION_OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** The lines of usage shared by the client commands. */
export const CONNECTION_USAGE = `  --url URL           the GraphQL endpoint (env LONGRUN_URL; default ${DEFAULT_URL})
  --api-key KEY       the API key (env LONGRUN_API_KEY; default: the local gateway's key file,
                      .longrun/api-key, beside LONGRUN_DB)
  -q, --quiet         no status lines on stderr
  -h, --help          this help`;

/**
 * Runs a `node:util` parseArgs call, turning its errors (an unknown option, a missing value) into
 * `UsageError`. Callers pass `strict: true` and `allowPositionals: true` to parseArgs themselves,
 * so its precise result type reaches them.
 */
export function parsing<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** The endpoint and key a command uses. */
export interface Connection {
  url: string;
  apiKey: string;
}

/**
 * The endpoint: `--url`, else LONGRUN_URL, else `DEFAULT_URL`. The key: `--api-key`, else
 * LONGRUN_API_KEY, else the dev key the local gateway keeps in `api-key` beside its database
 * (LONGRUN_DB, default `.longrun/longrun.db`). Throws `UsageError` naming all three when there is none.
 */
export function resolveConnection(values: { url?: string | undefined; 'api-key'?: string | undefined }, context: CommandContext): Connection {
  const { environment } = context;
  const url = values.url ?? nonEmpty(environment.LONGRUN_URL) ?? DEFAULT_URL;
  const given = values['api-key'] ?? nonEmpty(environment.LONGRUN_API_KEY);
  if (given !== undefined) return { url, apiKey: given };
  const database = nonEmpty(environment.LONGRUN_DB) ?? DEFAULT_DATABASE;
  const keyFile = database === ':memory:' ? undefined : resolve(context.cwd, join(dirname(database), 'api-key'));
  const stored = keyFile !== undefined && existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() : '';
  if (stored !== '') return { url, apiKey: stored };
  throw new UsageError(
    `no API key: pass --api-key or set LONGRUN_API_KEY${keyFile ? ` (the local gateway keeps its key in ${keyFile} once "longrun serve" has run; there is none yet)` : ''}`,
  );
}

/** One line for stderr, without a stack trace, saying what failed and what to do about it. */
export function describeFailure(error: unknown, connection: Connection | undefined): string {
  if (error instanceof LongrunClientError) {
    switch (error.code) {
      case 'Unauthorized':
        return `the API key was refused by ${connection?.url ?? 'the server'}; pass the right one with --api-key or LONGRUN_API_KEY (the local gateway keeps its key in .longrun/api-key)`;
      case 'ConnectionFailed':
        return `${oneLine(error.message)} Is the gateway running ("longrun serve")? Check --url or LONGRUN_URL.`;
      case 'ConnectionLost':
      case 'Timeout':
      case 'InvalidOptions':
        return oneLine(error.message);
      default:
        return `${oneLine(error.message)} (${error.code})`;
    }
  }
  if (error instanceof UsageError) return error.message;
  return `unexpected error: ${oneLine(error instanceof Error ? error.message : String(error))}`;
}

/**
 * Reports a command's failure on stderr and gives its exit status: 2 with a pointer to the
 * command's help for a usage error, 1 for anything else.
 */
export function reportFailure(context: Pick<CommandContext, 'stderr'>, command: string, error: unknown, connection: Connection | undefined): number {
  context.stderr.write(`longrun: ${describeFailure(error, connection)}\n`);
  if (error instanceof UsageError) {
    context.stderr.write(`Run "longrun ${command} --help" for the options.\n`);
    return ExitCode.Usage;
  }
  return ExitCode.Failed;
}

/** Writes `text`, waiting when the pipe is full, so a fast answer into a slow reader loses nothing. */
export async function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  if (!stream.write(text)) await new Promise<void>((resolve) => stream.once('drain', () => resolve()));
}

/** Resolves once everything written to `stream` so far has been handed to the system. */
export function flushed(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => stream.write('', () => resolve()));
}

/** Reads all of `stream` as UTF-8 (a prompt given as "-"). */
export async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
