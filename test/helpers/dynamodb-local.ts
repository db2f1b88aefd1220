/**
 * Starts DynamoDB Local (the jar shipped in `amplify-dynamodb-simulator`) for a test file: in
 * memory, telemetry off, on 127.0.0.1 and a free port, and stops it again.
 *
 * `dynamoDbLocalUnavailable()` says why it cannot run here (no `java`, no jar), so that a suite can
 * skip with that reason instead of failing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { CreateTableCommand, DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { dynamoDbTableDefinitions } from '../../src/store/dynamodb.js';

/** A running DynamoDB Local. */
export interface DynamoDbLocal {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  /** A client for it, with static fake credentials and region us-east-1. */
  client: DynamoDBClient;
  /** Kills the process and waits for it to exit. */
  stop(): Promise<void>;
}

/** Credentials DynamoDB Local accepts (it checks their form, not their value). */
export const fakeCredentials = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret' } as const;

function emulatorFolder(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    return join(dirname(require.resolve('amplify-dynamodb-simulator/package.json')), 'emulator');
  } catch {
    return undefined;
  }
}

/** Why DynamoDB Local cannot start on this machine, or undefined when it can. */
export function dynamoDbLocalUnavailable(): string | undefined {
  const folder = emulatorFolder();
  if (folder === undefined || !existsSync(join(folder, 'DynamoDBLocal.jar'))) {
    return 'DynamoDB Local is not installed (devDependency amplify-dynamodb-simulator ships its jar)';
  }
  const java = spawnSync('java', ['-version'], { stdio: 'ignore' });
  if (java.error !== undefined || java.status !== 0) {
    return 'DynamoDB Local needs a Java runtime (`java` on the PATH, version 11 or later)';
  }
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Starts DynamoDB Local and resolves once it answers `ListTables`. Rejects with the process's
 * output when it exits or does not answer within `timeoutMs` (default 30 s).
 */
export async function startDynamoDbLocal(options: { timeoutMs?: number } = {}): Promise<DynamoDbLocal> {
  const folder = emulatorFolder();
  const unavailable = dynamoDbLocalUnavailable();
  if (folder === undefined || unavailable !== undefined) throw new Error(unavailable);
  const timeoutMs = options.timeoutMs ?? 30_000;

  // A port found free may be taken before the JVM binds it; try a few.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const port = await freePort();
    const child = spawn(
      'java',
      [
        // Start-up flags: the JVM's quick tier and a small GC cut start-up time by a third.
        '-XX:TieredStopAtLevel=1',
        '-XX:+UseSerialGC',
        '-Xmx512m',
        '-Djava.library.path=./DynamoDBLocal_lib',
        '-jar',
        'DynamoDBLocal.jar',
        '-inMemory',
        '-disableTelemetry',
        '-port',
        String(port),
      ],
      { cwd: folder, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout?.on('data', (data: Buffer) => (output += data.toString()));
    child.stderr?.on('data', (data: Buffer) => (output += data.toString()));
    const endpoint = `http://127.0.0.1:${port}`;
    const client = new DynamoDBClient({
      endpoint,
      region: 'us-east-1',
      credentials: fakeCredentials,
      maxAttempts: 1,
    });
    try {
      await waitUntilAnswering(client, child, timeoutMs, () => output);
      return { endpoint, client, stop: () => stopProcess(child, client) };
    } catch (error) {
      lastError = error;
      await stopProcess(child, client);
    }
  }
  throw lastError;
}

async function waitUntilAnswering(
  client: DynamoDBClient,
  child: ChildProcess,
  timeoutMs: number,
  output: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`DynamoDB Local exited (${child.exitCode ?? child.signalCode}) before answering:\n${output()}`);
    }
    try {
      await client.send(new ListTablesCommand({}));
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`DynamoDB Local did not answer within ${timeoutMs} ms:\n${output()}`);
}

async function stopProcess(child: ChildProcess, client: DynamoDBClient): Promise<void> {
  client.destroy();
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Creates the store's two tables under a unique prefix and returns their names. */
export async function createLongrunTables(
  client: DynamoDBClient,
  prefix = `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
): Promise<{ conversations: string; events: string }> {
  const names = { conversations: `${prefix}-conversations`, events: `${prefix}-events` };
  for (const definition of dynamoDbTableDefinitions(names)) {
    await client.send(new CreateTableCommand(definition));
  }
  return names;
}
