/**
 * Property-based fuzzing of the realtime protocol and the HTTP endpoint (fast-check, bounded runs):
 * whatever arrives, every answer is a well-formed protocol message or an AppSync error, the server
 * still answers afterwards, and a normal conversation still completes exactly.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { ON_EVENT_SUBSCRIPTION, postGraphQL, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';

let test: TestGateway;
beforeAll(async () => {
  test = await startTestGateway();
});
afterAll(() => test.stop());

const KNOWN_TYPES = ['connection_init', 'start', 'stop', 'ka', 'data', 'subscribe', 'complete', '', 'START'];
const QUERIES = [ON_EVENT_SUBSCRIPTION, 'subscription { onReceiveChunk(conversationId: "x") { chunk } }', '{ __typename }', 'subscription {', 'mutation { cancelConversation(conversationId: "x") { status } }'];

/** Frames that look more or less like protocol messages, and frames that are anything at all. */
const frame = fc.oneof(
  fc.string(),
  fc.json(),
  fc.record(
    {
      type: fc.oneof(fc.constantFrom(...KNOWN_TYPES), fc.string(), fc.integer(), fc.constant(null)),
      id: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
      payload: fc.oneof(
        fc.anything(),
        fc.record({
          data: fc.oneof(
            fc.string(),
            fc.record({ query: fc.oneof(fc.constantFrom(...QUERIES), fc.string()), variables: fc.oneof(fc.anything(), fc.record({ conversationId: fc.oneof(fc.string(), fc.integer()) })) }).map((value) => JSON.stringify(value)),
          ),
          extensions: fc.anything(),
        }),
      ),
    },
    { requiredKeys: [] },
  ).map((value) => JSON.stringify(value)),
);

it('answers any sequence of realtime frames with protocol messages and keeps serving', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 15 }), async (frames) => {
      const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
      try {
        for (const raw of frames) client.send(raw);
        // A final stop with a fresh id is always answered by complete: everything before it was handled.
        const marker = randomUUID();
        client.send({ type: 'stop', id: marker });
        await client.waitFor((message) => message.type === 'complete' && message.id === marker, 5000);
        for (const message of client.messages) {
          expect(['connection_ack', 'ka', 'start_ack', 'error', 'complete', 'data']).toContain(message.type);
          if (message.type === 'error') {
            expect(message.payload.errors[0].errorType).toEqual(expect.any(String));
            expect(message.payload.errors[0].message.length).toBeGreaterThan(0);
          }
        }
        expect(client.closeCode).toBeUndefined();
      } finally {
        client.close();
      }
    }),
    { numRuns: 60 },
  );
});

it('answers any HTTP body with JSON in AppSync\'s shape and keeps serving', async () => {
  const body = fc.oneof(
    fc.string(),
    fc.json(),
    fc.record({ query: fc.oneof(fc.constantFrom(...QUERIES, START_MUTATION), fc.string()), variables: fc.anything(), operationName: fc.anything() }, { requiredKeys: [] }).map((value) => JSON.stringify(value)),
  );
  await fc.assert(
    fc.asyncProperty(body, async (raw) => {
      const result = await postGraphQL(test.endpoints.graphqlUrl, raw, { 'x-api-key': test.apiKey });
      expect([200, 400, 413]).toContain(result.status);
      expect(typeof result.body).toBe('object');
      if (result.status !== 200) expect(result.body.errors[0].message.length).toBeGreaterThan(0);
      for (const error of result.body.errors ?? []) expect(error.message).not.toMatch(/^internal error/);
    }),
    { numRuns: 150 },
  );
});

it('still completes a normal conversation exactly after the fuzzing', async () => {
  const health = await fetch(test.endpoints.graphqlUrl.replace('/graphql', '/healthz'));
  expect(health.status).toBe(200);
  const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
  const conversationId = randomUUID();
  await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
  const prompt = 'after the storm [tokens=80]';
  await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
  const events = await eventsUntilEnd(client, 's');
  expect(events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(
    simulatedAnswer({ messages: [{ role: 'user', content: prompt }] }).tokens.join(''),
  );
  client.close();
});
