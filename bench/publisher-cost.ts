/**
 * Publisher cost, run as a child of `bench/run.ts`: what the worker Lambda's AppSync publisher
 * (`src/publisher/appsync.ts`) sends for one turn, against the gateway acting as AppSync (SigV4
 * verified with LONGRUN_WORKER_* credentials). The turn runs through `runInvocation` with the
 * simulated model, a throw-away SQLite store and the AppSync publisher, as in the Lambda; a
 * subscriber on the gateway checks that every event arrived. Requests are counted here (the
 * publisher's `fetch`) and, by the runner, at the gateway.
 *
 * Beside it: what the AppSync long-running-invocation pattern's Lambda would send for the same
 * text. Its rule (aws-samples/serverless-patterns, appsync-lambda-bedrock-async-stream-subscription-cdk):
 * append each delta to a buffer; when the buffer holds 100 characters or more, or a sentence end
 * (`[.!?]` then white space), await one `sendChunk` request; at the end send the rest, then await
 * one `completeStream` request.
 */
import WebSocket from 'ws';
import { simulatedAnswer, createSimulatedProvider } from '../src/providers/simulated.js';
import { createAppSyncPublisher } from '../src/publisher/appsync.js';
import { createSqliteStore } from '../src/store/sqlite.js';
import { runInvocation } from '../src/worker/run-invocation.js';
import { now, ON_EVENT_SUBSCRIPTION, toRunner, withTimeout, type ControlMessage, type ServerReady } from './common.js';

/** One measurement. */
export interface PublisherSpec {
  tokens: number;
  /** Tokens per second of the simulated model. */
  rate: number;
  /** The worker's LONGRUN_FLUSH_MS. */
  flushMs: number;
  credentials: { accessKeyId: string; secretAccessKey: string };
  runId: string;
}

/** What it found. */
export interface PublisherResult {
  tokens: number;
  rate: number;
  flushMs: number;
  characters: number;
  /** HTTP requests the AppSync publisher made (counted at its `fetch`). */
  requests: number;
  /** Events published (CHUNK and the terminal one). */
  events: number;
  requestsPer1000Tokens: number;
  /** The pattern's requests for the same text (sendChunk per buffer flush, plus completeStream). */
  patternRequests: number;
  patternRequestsPer1000Tokens: number;
  /** Events the subscriber received, and whether they matched the model's text exactly. */
  received: number;
  exact: boolean;
  /** Mean time of one publish request, in ms. */
  meanRequestMs: number;
  turnMs: number;
}

process.on('message', (message: ControlMessage) => {
  if (message.type !== 'run') return;
  run(message.spec as PublisherSpec, message.target).then(
    (result) => toRunner({ type: 'result', result }),
    (error: unknown) => toRunner({ type: 'failed', message: (error as Error).stack ?? String(error) }),
  );
});
process.on('disconnect', () => process.exit(0));

/** What the pattern's Lambda sends for `deltas`: one request per flushed buffer, and completeStream. */
export function patternRequests(deltas: readonly string[]): number {
  const chunkSize = 100;
  // The pattern "sanitises" chunks (newlines to spaces, trimmed) and skips empty ones.
  const sendable = (text: string): boolean => text.replace(/[\n\r\t]/g, ' ').trim().length > 0;
  let buffer = '';
  let requests = 0;
  for (const delta of deltas) {
    buffer += delta;
    if (buffer.length >= chunkSize || /[.!?]\s/.test(buffer)) {
      if (sendable(buffer)) requests += 1;
      buffer = '';
    }
  }
  if (buffer && sendable(buffer)) requests += 1;
  return requests + 1;
}

async function run(spec: PublisherSpec, target: ServerReady): Promise<PublisherResult> {
  const conversationId = `${spec.runId}-publisher`;
  const prompt = `[tokens=${spec.tokens}][rate=${spec.rate}][ttft=0] publisher cost ${spec.runId}`;
  const expected = simulatedAnswer({ messages: [{ role: 'user', content: prompt }] }).tokens;

  const header = Buffer.from(JSON.stringify({ host: '127.0.0.1', 'x-api-key': target.apiKey })).toString('base64');
  const socket = new WebSocket(`${target.wsUrl}?header=${header}&payload=e30=`, ['graphql-ws']);
  const events: Array<{ seq: number; type: string; chunk: string | null }> = [];
  let acknowledged: (() => void) | undefined;
  let ended: (() => void) | undefined;
  socket.on('message', (data: Buffer) => {
    const message = JSON.parse(data.toString()) as { type: string; payload?: { data?: { onConversationEvent?: (typeof events)[number] } } };
    if (message.type === 'connection_ack' || message.type === 'start_ack') acknowledged?.();
    const event = message.payload?.data?.onConversationEvent;
    if (message.type === 'data' && event) {
      events.push(event);
      if (event.type !== 'CHUNK') ended?.();
    }
  });
  await withTimeout(new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject)), 10_000, 'subscriber did not connect');
  await withTimeout(new Promise<void>((resolve) => { acknowledged = resolve; socket.send('{"type":"connection_init"}'); }), 10_000, 'no connection_ack');
  await withTimeout(
    new Promise<void>((resolve) => {
      acknowledged = resolve;
      socket.send(
        JSON.stringify({
          id: 'publisher',
          type: 'start',
          payload: {
            data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: { conversationId } }),
            extensions: { authorization: { host: '127.0.0.1', 'x-api-key': target.apiKey } },
          },
        }),
      );
    }),
    10_000,
    'no start_ack',
  );
  const allReceived = new Promise<void>((resolve) => (ended = resolve));

  let requests = 0;
  let requestMs = 0;
  const countingFetch: typeof fetch = async (input, init) => {
    requests += 1;
    const started = now();
    try {
      return await fetch(input, init);
    } finally {
      requestMs += now() - started;
    }
  };
  const store = createSqliteStore({ path: ':memory:' });
  const publisher = createAppSyncPublisher({ url: target.httpUrl, region: 'us-east-1', credentials: spec.credentials, fetch: countingFetch });
  const turn = await store.beginTurn({ conversationId, prompt, now: Date.now() });
  const started = now();
  const outcome = await runInvocation(
    { conversationId, turn, prompt },
    { provider: createSimulatedProvider({ ttftMs: 0 }), store, publisher, options: { flushMs: spec.flushMs } },
  );
  await publisher.close?.();
  const turnMs = now() - started;
  await withTimeout(allReceived, 10_000, 'the subscriber did not receive the terminal event').catch(() => undefined);
  socket.terminate();
  await store.close();

  const text = events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
  const exact =
    outcome.status === 'COMPLETE' &&
    text === expected.join('') &&
    events.every((event, index) => event.seq === index + 1);
  const pattern = patternRequests(expected);
  return {
    tokens: expected.length,
    rate: spec.rate,
    flushMs: spec.flushMs,
    characters: expected.join('').length,
    requests,
    events: outcome.event.seq,
    requestsPer1000Tokens: (requests / expected.length) * 1000,
    patternRequests: pattern,
    patternRequestsPer1000Tokens: (pattern / expected.length) * 1000,
    received: events.length,
    exact,
    meanRequestMs: requests > 0 ? requestMs / requests : 0,
    turnMs,
  };
}
