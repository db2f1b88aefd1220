/**
 * The AppSync long-running-invocation pattern's test script (`test/test.ts` in the serverless
 * pattern: subscribe, start a conversation, print the chunks as they arrive, Ctrl+C to stop),
 * written with longrun's SDK, which makes it really work: the subscription is acknowledged before
 * the conversation starts, nothing is lost or repeated when the connection drops, and Ctrl+C
 * cancels the turn on the server.
 *
 *   npx tsx examples/seed-client.ts ["prompt"]
 *
 * LONGRUN_URL (default http://127.0.0.1:4000/graphql, a local `longrun serve`) and LONGRUN_API_KEY
 * (default: the local gateway's key in .longrun/api-key) point it at a gateway or an AppSync API.
 */
import { readFileSync } from 'node:fs';
import { createClient } from '../src/client/index.js';

const url = process.env.LONGRUN_URL ?? 'http://127.0.0.1:4000/graphql';
const apiKey = process.env.LONGRUN_API_KEY ?? readLocalKey();
const prompt = process.argv.slice(2).join(' ') || 'Tell me a joke';

const client = createClient({ url, apiKey });

console.log('Starting subscription...');
const stream = client.chat(prompt);

process.on('SIGINT', () => {
  console.log('\nCancelling the conversation...');
  stream.cancel().catch(() => stream.close());
  // A second Ctrl+C leaves at once.
  process.once('SIGINT', () => stream.close());
});

console.log('Starting conversation...');
stream.started.then(
  () => console.log('StartConversation response:', { conversationId: stream.conversationId, status: 'STARTED' }),
  () => undefined,
);

try {
  for await (const event of stream) {
    if (event.type === 'CHUNK') console.log('Received chunk:', { conversationId: event.conversationId, chunk: event.chunk });
  }
  const result = await stream.result;
  console.log(`Stream ${result.status}:`, { conversationId: result.conversationId, usage: result.usage, error: result.error });
  process.exitCode = result.status === 'COMPLETE' ? 0 : 1;
} catch (error) {
  console.error('Stream failed:', error instanceof Error ? error.message : error);
  process.exitCode = 1;
} finally {
  client.close();
}

function readLocalKey(): string {
  try {
    return readFileSync('.longrun/api-key', 'utf8').trim();
  } catch {
    console.error('No API key: set LONGRUN_API_KEY, or start the local gateway (npm start) so it writes .longrun/api-key.');
    process.exit(1);
  }
}
