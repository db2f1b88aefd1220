/**
 * `longrun replay ID`: prints a stored conversation — its messages turn by turn, or with `--json`
 * its events, one JSON object per line, exactly as they were delivered live (for a turn still
 * running, the events follow it to its end).
 */
import { parseArgs } from 'node:util';
import { createClient, type LongrunClient } from '../client/index.js';
import {
  CONNECTION_OPTIONS,
  CONNECTION_USAGE,
  ExitCode,
  flushed,
  parsing,
  processContext,
  reportConnection,
  reportFailure,
  resolveConnection,
  UsageError,
  write,
  type CommandContext,
  type Connection,
} from './arguments.js';

/** The help of `longrun replay`. */
export const REPLAY_USAGE = `Usage: longrun replay [options] CONVERSATION_ID

Prints a stored conversation: its messages, turn by turn, or with --json its events.

Options:
  --json              print every event as one line of JSON (a running turn is followed to its end)
${CONNECTION_USAGE}

Exit status: 0 when printed, 1 when the conversation does not exist or the server cannot be read, 2 for bad usage.`;

/** Runs `longrun replay` with `argv` (after "replay"); resolves with the exit status. */
export async function replay(argv: string[], context: CommandContext = processContext()): Promise<number> {
  let connection: Connection | undefined;
  let client: LongrunClient | undefined;
  try {
    const { values, positionals } = parsing(() =>
      parseArgs({ args: argv, allowPositionals: true, strict: true, options: { ...CONNECTION_OPTIONS, json: { type: 'boolean' } } }),
    );
    if (values.help) {
      context.stdout.write(`${REPLAY_USAGE}\n`);
      return ExitCode.Ok;
    }
    const [conversationId, ...extra] = positionals;
    if (conversationId === undefined || extra.length > 0) throw new UsageError('give exactly one conversation id, e.g. longrun replay 3f6c…');
    connection = resolveConnection(values, context);
    client = createClient(connection);
    const status = (line: string): void => {
      if (!values.quiet) context.stderr.write(`${line}\n`);
    };
    reportConnection(client, status);

    if (values.json) {
      const stream = client.resume(conversationId, { afterSeq: 0 });
      let count = 0;
      for await (const event of stream) {
        await write(context.stdout, `${JSON.stringify(event)}\n`);
        count += 1;
      }
      const result = await stream.result;
      status(`conversation ${conversationId} · ${result.status} · ${count} events`);
      return ExitCode.Ok;
    }

    const conversation = await client.conversation(conversationId);
    if (conversation === null) {
      context.stderr.write(`longrun: conversation ${conversationId} was not found\n`);
      return ExitCode.Failed;
    }
    const statusOfTurn = new Map(conversation.turns.map((turn) => [turn.turn, turn.status]));
    for (const message of conversation.messages) {
      const heading =
        message.role === 'assistant'
          ? `## Turn ${message.turn} · assistant (${statusOfTurn.get(message.turn) ?? 'unknown'})`
          : `## Turn ${message.turn} · ${message.role}`;
      await write(context.stdout, `${heading}\n\n${message.content}\n\n`);
    }
    status(
      `conversation ${conversationId} · ${conversation.status} · ${conversation.turns.length} turn${conversation.turns.length === 1 ? '' : 's'} · ${conversation.lastSeq} events`,
    );
    return ExitCode.Ok;
  } catch (error) {
    return reportFailure(context, 'replay', error, connection);
  } finally {
    client?.close();
    await flushed(context.stdout);
  }
}
