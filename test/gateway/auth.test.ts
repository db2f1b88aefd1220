/**
 * Only the worker may publish: the publish mutations take AWS_IAM (SigV4 from the worker's
 * credentials) and refuse API keys with AppSync's error.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawAppSyncClient } from '../helpers/appsync-client.js';
import { EVENT_FIELDS, ON_CHUNK_SUBSCRIPTION, ON_EVENT_SUBSCRIPTION, postGraphQL, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { signedHeaders } from '../helpers/sign.js';

const WORKER = { accessKeyId: 'AKIAWORKERTEST000001', secretAccessKey: 'worker-secret-key-for-tests-only-000000' };

let test: TestGateway;
beforeAll(async () => {
  test = await startTestGateway({
    LONGRUN_WORKER_ACCESS_KEY_ID: WORKER.accessKeyId,
    LONGRUN_WORKER_SECRET_ACCESS_KEY: WORKER.secretAccessKey,
  });
});
afterAll(() => test.stop());

const SEND_CHUNK = `mutation($id: ID!, $chunk: String!) { sendChunk(conversationId: $id, chunk: $chunk) { conversationId chunk } }`;
const PUBLISH = `mutation($event: ConversationEventInput!) { publishEvent(event: $event) { ${EVENT_FIELDS} } }`;

describe('publish mutations with an API key', () => {
  it.each([
    ['sendChunk', SEND_CHUNK, { id: 'c1', chunk: 'injected' }],
    ['completeStream', `mutation { completeStream(conversationId: "c1") { conversationId status } }`, {}],
    ['sendError', `mutation { sendError(conversationId: "c1", error: "x") { conversationId error } }`, {}],
    [
      'publishEvent',
      PUBLISH,
      { event: { conversationId: 'c1', turn: 1, seq: 1, type: 'CHUNK', chunk: 'injected', createdAt: 1 } },
    ],
  ])('%s is refused with AppSync\'s Not Authorized error and reaches no subscriber', async (field, query, variables) => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    await client.subscribe('chunks', ON_CHUNK_SUBSCRIPTION, { conversationId: 'c1' });
    await client.subscribe('events', ON_EVENT_SUBSCRIPTION, { conversationId: 'c1' });
    const result = await test.graphql(query, variables);
    expect(result.status).toBe(200);
    // sendChunk, completeStream and sendError are non-null (the pattern's shapes), so their
    // refusal nulls the whole data object; publishEvent is nullable. Both as graphql-js and AppSync do.
    expect(result.body.data).toEqual(field === 'publishEvent' ? { publishEvent: null } : null);
    expect(result.body.errors).toHaveLength(1);
    expect(result.body.errors[0]).toMatchObject({
      errorType: 'Unauthorized',
      message: `Not Authorized to access ${field} on type Mutation`,
      path: [field],
    });
    // A ping on the same connection proves the socket is live and nothing was delivered before it.
    await client.subscribe('ping', ON_EVENT_SUBSCRIPTION, { conversationId: 'other' });
    expect(client.data('chunks')).toEqual([]);
    expect(client.data('events')).toEqual([]);
    client.close();
  });
});

describe('publish mutations signed with SigV4', () => {
  it('deliver to subscribers when signed with the worker credentials', async () => {
    const conversationId = randomUUID();
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    await client.subscribe('chunks', ON_CHUNK_SUBSCRIPTION, { conversationId });
    await client.subscribe('events', ON_EVENT_SUBSCRIPTION, { conversationId });
    const event = {
      conversationId,
      turn: 1,
      seq: 1,
      type: 'CHUNK',
      chunk: 'line\n"quoted" \\ 🦊',
      error: null,
      errorCode: null,
      stopReason: null,
      usage: null,
      latencyMs: null,
      createdAt: 1_700_000_000_000,
    };
    for (const [query, variables] of [
      [SEND_CHUNK, { id: conversationId, chunk: event.chunk }],
      [PUBLISH, { event }],
    ] as const) {
      const body = JSON.stringify({ query, variables });
      const result = await postGraphQL(test.endpoints.graphqlUrl, body, await signedHeaders(test.endpoints.graphqlUrl, body, WORKER));
      expect(result.status).toBe(200);
      expect(result.body.errors).toBeUndefined();
    }
    await client.until(() => (client.data('events').length === 1 && client.data('chunks').length === 1 ? true : undefined));
    expect(client.data('chunks')).toEqual([{ onReceiveChunk: { conversationId, chunk: event.chunk } }]);
    expect(client.data('events')).toEqual([{ onConversationEvent: event }]);
    client.close();
  });

  it('is refused for a wrong secret, a tampered body and a stale date', async () => {
    const body = JSON.stringify({ query: SEND_CHUNK, variables: { id: 'c2', chunk: 'x' } });
    const wrongSecret = await signedHeaders(test.endpoints.graphqlUrl, body, { ...WORKER, secretAccessKey: 'not-the-secret' });
    const good = await signedHeaders(test.endpoints.graphqlUrl, body, WORKER);
    const stale = await signedHeaders(test.endpoints.graphqlUrl, body, WORKER, new Date(Date.now() - 10 * 60 * 1000));
    const unknownKey = await signedHeaders(test.endpoints.graphqlUrl, body, { ...WORKER, accessKeyId: 'AKIAUNKNOWN' });
    const cases: Array<[string, Record<string, string>, string]> = [
      ['wrong secret', wrongSecret, 'the secret key is wrong'],
      ['tampered body', good, 'changed after signing'],
      ['stale date', stale, 'is more than 300 s from the server'],
      ['unknown key', unknownKey, 'The access key AKIAUNKNOWN is not accepted here'],
    ];
    for (const [name, headers, message] of cases) {
      const sent = name === 'tampered body' ? body.replace('"x"', '"y"') : body;
      const result = await postGraphQL(test.endpoints.graphqlUrl, sent, headers);
      expect(result.status, name).toBe(403);
      expect(result.body.errors[0].errorType, name).toBe('InvalidSignatureException');
      expect(result.body.errors[0].message, name).toContain(message);
    }
  });

  it('a signed caller cannot start conversations (API_KEY fields refuse AWS_IAM)', async () => {
    const body = JSON.stringify({ query: `mutation { startConversation(input: { prompt: "hi" }) { conversationId } }` });
    const result = await postGraphQL(test.endpoints.graphqlUrl, body, await signedHeaders(test.endpoints.graphqlUrl, body, WORKER));
    expect(result.body.errors[0].message).toBe('Not Authorized to access startConversation on type Mutation');
  });
});

it('refuses IAM signatures when no worker credentials are configured', async () => {
  const plain = await startTestGateway();
  try {
    const body = JSON.stringify({ query: SEND_CHUNK, variables: { id: 'c', chunk: 'x' } });
    const result = await postGraphQL(plain.endpoints.graphqlUrl, body, await signedHeaders(plain.endpoints.graphqlUrl, body, WORKER));
    expect(result.status).toBe(403);
    expect(result.body.errors[0].message).toContain('LONGRUN_WORKER_ACCESS_KEY_ID');
  } finally {
    await plain.stop();
  }
});
