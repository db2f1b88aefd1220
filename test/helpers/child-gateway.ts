/**
 * Starts the gateway in a child process (`longrun serve` from the sources) and reads its printed
 * endpoints, for tests that kill it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TEST_ENVIRONMENT } from './gateway.js';

const ENTRY = fileURLToPath(new URL('./serve-entry.ts', import.meta.url));

export interface ChildGateway {
  child: ChildProcess;
  graphqlUrl: string;
  realtimeUrl: string;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  exited: Promise<number | string>;
}

export async function startChildGateway(environment: Record<string, string>): Promise<ChildGateway> {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY], {
    env: { ...process.env, ...TEST_ENVIRONMENT, ...environment },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (data: Buffer) => (stdout += data.toString()));
  child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const deadline = Date.now() + 20_000;
  while (!/Realtime:\s+\S+/.test(stdout)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`the gateway did not start:\n${stdout}\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    graphqlUrl: /GraphQL:\s+(\S+)/.exec(stdout)![1]!,
    realtimeUrl: /Realtime:\s+(\S+)/.exec(stdout)![1]!,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
  };
}
