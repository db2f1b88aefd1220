/**
 * The worker Lambda end to end, on this machine: `createHandler` runs a turn with the real
 * DynamoDB store (DynamoDB Local), the real Bedrock provider (the SDK against the fake Bedrock
 * runtime) and the real AppSync publisher, whose SigV4-signed mutations go to the local gateway in
 * its AWS_IAM mode; a raw AppSync real-time client subscribed there must receive the whole answer.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import {
  createHandler,
  parseDeletion,
  parseInvocation,
  readLambdaEnvironment,
  type LambdaDependencies,
  type TurnResult,
} from '../../src/lambda/handler.js';
import { createBedrockProvider } from '../../src/providers/bedrock.js';
import { createAppSyncPublisher } from '../../src/publisher/appsync.js';
import { createDynamoDbStore } from '../../src/store/dynamodb.js';
import type { Store } from '../../src/store/types.js';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { createLongrunTables, dynamoDbLocalUnavailable, startDynamoDbLocal, type DynamoDbLocal } from '../helpers/dynamodb-local.js';
import { ON_CHUNK_SUBSCRIPTION, ON_EVENT_SUBSCRIPTION, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { answerSteps, startFakeBedrock, type FakeBedrock } from '../providers/fake-bedrock.js';

const worker = { accessKeyId: 'AKIDLAMBDAWORKER', secretAccessKey: 'lambda-worker-secret' };

describe('parseInvocation', () => {
  it('reads the raw InvocationEvent and the AppSync arguments shape alike', () => {
    const raw = { conversationId: 'c', turn: 2, prompt: 'p', system: 's', maxTokens: 10, temperature: 0.5, topP: 0.9, modelId: 'm' };
    expect(parseInvocation(raw)).toEqual(raw);
    expect(parseInvocation({ arguments: { input: { prompt: 'p', system: 's', maxTokens: 10 } }, conversationId: 'c', turn: 2 })).toEqual({
      conversationId: 'c',
      turn: 2,
      prompt: 'p',
      system: 's',
      maxTokens: 10,
      modelId: undefined,
      temperature: undefined,
      topP: undefined,
    });
  });

  it('tells a deletion request from a turn', () => {
    expect(parseDeletion({ operation: 'deleteConversation', conversationId: 'c' })).toEqual({ conversationId: 'c' });
    expect(parseDeletion({ conversationId: 'c', turn: 1, prompt: 'p' })).toBeUndefined();
    expect(() => parseDeletion({ operation: 'deleteConversation' })).toThrow(/"conversationId"/);
  });

  it('names the bad field', () => {
    expect(() => parseInvocation('x')).toThrow(BadRequestError);
    expect(() => parseInvocation({ conversationId: 'c', prompt: 'p' })).toThrow(/"turn"/);
    expect(() => parseInvocation({ conversationId: 'c', turn: 1.5, prompt: 'p' })).toThrow(/"turn"/);
    expect(() => parseInvocation({ conversationId: 'c', turn: 1 })).toThrow(/"prompt"/);
    expect(() => parseInvocation({ conversationId: 'c', turn: 1, prompt: 'p', maxTokens: '5' })).toThrow(/"maxTokens" must be a whole number/);
  });
});

describe('readLambdaEnvironment', () => {
  const valid = {
    LONGRUN_CONVERSATIONS_TABLE: 'conversations',
    LONGRUN_EVENTS_TABLE: 'events',
    LONGRUN_GRAPHQL_URL: 'https://abc.appsync-api.us-east-1.amazonaws.com/graphql',
    AWS_REGION: 'us-east-1',
  };

  it('reads the tables, URL, region and defaults', () => {
    expect(readLambdaEnvironment({ ...valid, LONGRUN_FLUSH_MS: '80', LONGRUN_RETENTION_DAYS: '30' })).toEqual({
      conversationsTable: 'conversations',
      eventsTable: 'events',
      graphqlUrl: valid.LONGRUN_GRAPHQL_URL,
      region: 'us-east-1',
      modelId: 'us.anthropic.claude-3-5-sonnet-20241022-v2:0',
      retentionDays: 30,
      worker: { flushMs: 80, cancelPollMs: 1000 },
      logLevel: 'info',
    });
  });

  it('lists every missing or bad variable by name', () => {
    const read = () => readLambdaEnvironment({ LONGRUN_GRAPHQL_URL: 'ftp://x', LONGRUN_FLUSH_MS: '-1' });
    expect(read).toThrow(/LONGRUN_CONVERSATIONS_TABLE is required/);
    expect(read).toThrow(/LONGRUN_EVENTS_TABLE is required/);
    expect(read).toThrow(/AWS_REGION is required/);
    expect(read).toThrow(/LONGRUN_GRAPHQL_URL must be an https:\/\/ URL/);
    expect(read).toThrow(/LONGRUN_FLUSH_MS must be a whole number from 0 to 60000; got "-1"/);
  });
});

const unavailable = dynamoDbLocalUnavailable();

describe.skipIf(unavailable !== undefined)(`worker Lambda end to end${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let dynamo: DynamoDbLocal;
  let bedrock: FakeBedrock;
  let gateway: TestGateway;
  let store: Store;
  let handler: ReturnType<typeof createHandler>;
  const runTurn = async (...args: Parameters<typeof handler>) => (await handler(...args)) as TurnResult;

  beforeAll(async () => {
    [dynamo, bedrock, gateway] = await Promise.all([
      startDynamoDbLocal(),
      startFakeBedrock(),
      startTestGateway({ LONGRUN_WORKER_ACCESS_KEY_ID: worker.accessKeyId, LONGRUN_WORKER_SECRET_ACCESS_KEY: worker.secretAccessKey }),
    ]);
    store = createDynamoDbStore({ client: dynamo.client, tables: await createLongrunTables(dynamo.client) });
    const dependencies: LambdaDependencies = {
      store,
      publisher: createAppSyncPublisher({ url: gateway.endpoints.graphqlUrl, region: 'us-east-1', credentials: worker, retryBaseMs: 1 }),
      provider: createBedrockProvider({ client: bedrock.client(), modelId: 'us.anthropic.claude-3-5-sonnet-20241022-v2:0' }),
      options: { flushMs: 10, cancelPollMs: 50 },
      logger: silentLogger,
    };
    handler = createHandler(() => dependencies);
  });

  afterAll(async () => {
    await store?.close();
    await Promise.all([dynamo?.stop(), bedrock?.close(), gateway?.stop()]);
  });

  it('streams a Bedrock answer to AppSync subscribers and stores it, turn after turn', async () => {
    const conversationId = randomUUID();
    const client = await RawAppSyncClient.ready(gateway.endpoints.realtimeUrl, gateway.apiKey);
    expect((await client.subscribe('events', ON_EVENT_SUBSCRIPTION, { conversationId }, gateway.apiKey)).type).toBe('start_ack');
    expect((await client.subscribe('chunks', ON_CHUNK_SUBSCRIPTION, { conversationId }, gateway.apiKey)).type).toBe('start_ack');

    const deltas = ['Once ', 'upon a "time"\n', 'a fox 🦊 ', 'saw 星空', ' — the end.'];
    bedrock.enqueue({ steps: answerSteps(deltas, { inputTokens: 7, outputTokens: 5, latencyMs: 42, delayMs: 5 }) });
    // What the startConversation resolver does before it invokes the Lambda.
    const turn = await store.beginTurn({ conversationId, prompt: 'Tell me a story', now: Date.now() });
    const result = await runTurn(
      { arguments: { input: { prompt: 'Tell me a story', system: 'Be brief.', maxTokens: 300 } }, conversationId, turn },
      { getRemainingTimeInMillis: () => 15 * 60_000, awsRequestId: 'request-1' },
    );
    expect(result).toMatchObject({ conversationId, turn: 1, status: 'COMPLETE' });

    const events = await eventsUntilEnd(client, 'events');
    const text = deltas.join('');
    expect(events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(text);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.at(-1)).toMatchObject({ type: 'COMPLETE', seq: result.seq, stopReason: 'end_turn', usage: { inputTokens: 7, outputTokens: 5 }, latencyMs: 42 });
    await client.until(() => (client.data('chunks').map((data) => data.onReceiveChunk.chunk).join('') === text ? true : undefined));

    expect(await store.listEvents(conversationId, 0)).toEqual(events);
    expect(await store.getConversation(conversationId)).toMatchObject({
      status: 'COMPLETE',
      lastSeq: result.seq,
      messages: [
        { turn: 1, role: 'user', content: 'Tell me a story' },
        { turn: 1, role: 'assistant', content: text },
      ],
    });
    expect(bedrock.requests.at(-1)!.body).toMatchObject({
      system: [{ text: 'Be brief.' }],
      inferenceConfig: { maxTokens: 300 },
      messages: [{ role: 'user', content: [{ text: 'Tell me a story' }] }],
    });

    // The second turn, with the raw payload: Bedrock sees the first turn as history.
    bedrock.enqueue({ steps: answerSteps(['Again.']) });
    const second = await store.beginTurn({ conversationId, prompt: 'More', now: Date.now() });
    expect(await handler({ conversationId, turn: second, prompt: 'More' })).toMatchObject({ turn: 2, status: 'COMPLETE', seq: result.seq + 2 });
    expect(bedrock.requests.at(-1)!.body.messages?.map((message) => message.content[0]?.text)).toEqual(['Tell me a story', text, 'More']);
    await client.until(() => (client.data('events').length === events.length + 2 ? true : undefined));
    client.close();
  });

  it('ends the turn CANCELLED when cancellation is requested in DynamoDB (as cancelConversation does)', async () => {
    const conversationId = randomUUID();
    bedrock.enqueue({ steps: [...answerSteps(['partial ']).slice(0, 2), { stall: true }] });
    const turn = await store.beginTurn({ conversationId, prompt: 'p', now: Date.now() });
    const running = handler({ conversationId, turn, prompt: 'p' });
    await expect.poll(async () => (await store.listEvents(conversationId, 0)).length, { timeout: 10_000 }).toBe(1);
    expect(await store.requestCancel(conversationId)).toBe(true);
    expect(await running).toMatchObject({ status: 'CANCELLED', seq: 2 });
    expect(await store.getConversation(conversationId)).toMatchObject({
      status: 'CANCELLED',
      messages: [
        { role: 'user', content: 'p' },
        { role: 'assistant', content: 'partial ' },
      ],
    });
    await bedrock.requests.at(-1)!.clientClosed;
  });

  it("ends the turn before Lambda's deadline instead of leaving it RUNNING", async () => {
    const conversationId = randomUUID();
    bedrock.enqueue({ steps: [{ stall: true }] });
    const turn = await store.beginTurn({ conversationId, prompt: 'p', now: Date.now() });
    // 21 s left, 20 s of which are kept back for the terminal event: the turn gets 1 s.
    const result = await runTurn({ conversationId, turn, prompt: 'p' }, { getRemainingTimeInMillis: () => 21_000 });
    expect(result.status).toBe('ERROR');
    expect((await store.listEvents(conversationId, 0)).at(-1)).toMatchObject({ type: 'ERROR', errorCode: 'TurnTimeout' });
    expect((await store.getConversation(conversationId))?.status).toBe('ERROR');
  });

  it('deletes a conversation when the deleteConversation resolver asks, synchronously', async () => {
    const conversationId = randomUUID();
    bedrock.enqueue({ steps: answerSteps(['bye']) });
    const turn = await store.beginTurn({ conversationId, prompt: 'p', now: Date.now() });
    await runTurn({ conversationId, turn, prompt: 'p' });
    expect(await handler({ operation: 'deleteConversation', conversationId })).toEqual({ conversationId, deleted: true });
    expect(await store.getConversation(conversationId)).toBeNull();
    expect(await store.listEvents(conversationId, 0)).toEqual([]);
    expect(await handler({ operation: 'deleteConversation', conversationId })).toEqual({ conversationId, deleted: false });
  });

  it('rejects a payload that is not an invocation, touching nothing', async () => {
    await expect(handler({ hello: 'world' })).rejects.toBeInstanceOf(BadRequestError);
  });
});
