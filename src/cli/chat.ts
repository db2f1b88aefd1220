/**
 * `longrun chat "prompt"`: starts a turn and writes the answer to stdout as it is written, with
 * the SDK, so the text survives dropped connections. stdout holds the text alone (or, with
 * `--json`, one event per line), so it can be piped; status (conversation id, time to first token,
 * tokens per second) and errors go to stderr. Ctrl+C cancels the turn on the server.
 */
import { parseArgs } from 'node:util';
import { createClient, type LongrunClient } from '../client/index.js';
import {
  CONNECTION_OPTIONS,
  CONNECTION_USAGE,
  describeFailure,
  ExitCode,
  flushed,
  parsing,
  processContext,
  readAll,
  reportConnection,
  reportFailure,
  resolveConnection,
  UsageError,
  write,
  type CommandContext,
  type Connection,
} from './arguments.js';

/** The help of `longrun chat`. */
export const CHAT_USAGE = `Usage: longrun chat [options] "prompt"      ("-" reads the prompt from stdin)

Starts a turn and writes the answer to stdout as it arrives; status goes to stderr.

Options:
  --conversation ID   continue this conversation (a new one otherwise)
  --system TEXT       system prompt for this turn
  --model ID          model for this turn (the gateway's default otherwise)
  --max-tokens N      at most N output tokens
  --temperature T     sampling temperature, 0 to 2
  --json              print every event as one line of JSON instead of the text
${CONNECTION_USAGE}

Exit status: 0 when the turn completes, 1 when it fails or is cancelled elsewhere, 2 for bad usage,
130 after Ctrl+C (which cancels the turn on the server; press it twice to quit at once).`;

/** How long Ctrl+C waits for the server to confirm the cancel before leaving anyway. */
const CANCEL_GRACE_MS = 5_000;

/** Runs `longrun chat` with `argv` (after "chat"); resolves with the exit status. */
export async function chat(argv: string[], context: CommandContext = processContext()): Promise<number> {
  let quiet = false;
  const status = (line: string): void => {
    if (!quiet) context.stderr.write(`${line}\n`);
  };
  let connection: Connection | undefined;
  let client: LongrunClient | undefined;
  try {
    const { values, positionals } = parsing(() =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          ...CONNECTION_OPTIONS,
          conversation: { type: 'string' },
          system: { type: 'string' },
          model: { type: 'string' },
          'max-tokens': { type: 'string' },
          temperature: { type: 'string' },
          json: { type: 'boolean' },
        },
      }),
    );
    if (values.help) {
      context.stdout.write(`${CHAT_USAGE}\n`);
      return ExitCode.Ok;
    }
    quiet = values.quiet ?? false;
    let prompt = positionals.join(' ');
    if (prompt === '-') prompt = await readAll(context.stdin);
    if (prompt.trim() === '') throw new UsageError('give the prompt, e.g. longrun chat "Tell me a story"');
    const maxTokens = values['max-tokens'] === undefined ? undefined : wholeNumber('--max-tokens', values['max-tokens']);
    const temperature = values.temperature === undefined ? undefined : decimal('--temperature', values.temperature);
    connection = resolveConnection(values, context);
    client = createClient(connection);
    reportConnection(client, status);
    return await run(client, prompt, {
      conversationId: values.conversation,
      system: values.system,
      modelId: values.model,
      maxTokens,
      temperature,
      json: values.json ?? false,
      context,
      status,
      connection,
    });
  } catch (error) {
    return reportFailure(context, 'chat', error, connection);
  } finally {
    client?.close();
    await flushed(context.stdout);
  }
}

interface RunOptions {
  conversationId: string | undefined;
  system: string | undefined;
  modelId: string | undefined;
  maxTokens: number | undefined;
  temperature: number | undefined;
  json: boolean;
  context: CommandContext;
  status: (line: string) => void;
  connection: Connection;
}

async function run(client: LongrunClient, prompt: string, options: RunOptions): Promise<number> {
  const { context, status } = options;
  const began = performance.now();
  const stream = client.chat(prompt, {
    ...(options.conversationId !== undefined && { conversationId: options.conversationId }),
    ...(options.system !== undefined && { system: options.system }),
    ...(options.modelId !== undefined && { modelId: options.modelId }),
    ...(options.maxTokens !== undefined && { maxTokens: options.maxTokens }),
    ...(options.temperature !== undefined && { temperature: options.temperature }),
  });
  // Said once the server accepted the turn: a refused key or a dead URL leaves only the error line.
  stream.started.then(
    () => status(`conversation ${stream.conversationId}`),
    () => undefined,
  );

  let interrupted = false;
  let forceTimer: ReturnType<typeof setTimeout> | undefined;
  const stopListening = context.onInterrupt(() => {
    if (interrupted) {
      stream.close();
      return;
    }
    interrupted = true;
    status('cancelling the turn (Ctrl+C again to quit at once)');
    // The stream ends when the CANCELLED event arrives; if the server cannot be told, or does
    // not confirm in time, stop waiting.
    forceTimer = setTimeout(() => stream.close(), CANCEL_GRACE_MS);
    stream.cancel().catch((error: unknown) => {
      status(`longrun: could not cancel the turn: ${describeFailure(error, options.connection)}`);
      stream.close();
    });
  });

  let firstChunkAt: number | undefined;
  try {
    for await (const event of stream) {
      if (event.type === 'CHUNK') firstChunkAt ??= performance.now();
      if (options.json) await write(context.stdout, `${JSON.stringify(event)}\n`);
      else if (event.type === 'CHUNK' && event.chunk) await write(context.stdout, event.chunk);
    }
    const result = await stream.result;
    // A terminal prompt should start on its own line; a pipe gets the text exactly as stored.
    if (!options.json && context.stdout.isTTY && result.text !== '' && !result.text.endsWith('\n')) context.stdout.write('\n');

    const finishedAt = performance.now();
    const parts: string[] = [result.status];
    if (firstChunkAt !== undefined) parts.push(`first token after ${Math.round(firstChunkAt - began)} ms`);
    if (result.usage && firstChunkAt !== undefined) {
      const seconds = Math.max(finishedAt - firstChunkAt, 1) / 1000;
      parts.push(`${result.usage.outputTokens} tokens in ${seconds.toFixed(1)} s (${(result.usage.outputTokens / seconds).toFixed(1)} tokens/s)`);
    }
    status(parts.join(' · '));

    if (interrupted) return ExitCode.Interrupted;
    if (result.status === 'COMPLETE') return ExitCode.Ok;
    if (result.status === 'ERROR') {
      context.stderr.write(`longrun: the turn failed: ${result.error?.message ?? 'no reason given'} (${result.error?.code ?? 'UnknownError'})\n`);
    } else {
      context.stderr.write('longrun: the turn was cancelled\n');
    }
    return ExitCode.Failed;
  } catch (error) {
    if (interrupted) return ExitCode.Interrupted;
    throw error;
  } finally {
    clearTimeout(forceTimer);
    stopListening();
  }
}

function wholeNumber(name: string, value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new UsageError(`${name} must be a whole number of 1 or more; got "${value}"`);
  return parsed;
}

function decimal(name: string, value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed)) throw new UsageError(`${name} must be a number; got "${value}"`);
  return parsed;
}
