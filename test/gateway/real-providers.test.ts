/**
 * Real providers through the whole gateway: LONGRUN_PROVIDER=bedrock against a local Bedrock
 * event-stream server (AWS_ENDPOINT_URL_BEDROCK_RUNTIME) and LONGRUN_PROVIDER=openai against a
 * local SSE server (OPENAI_BASE_URL), each streaming a multi-turn conversation to a realtime
 * subscriber; each failure reaches the subscriber as an ERROR event and the gateway keeps serving.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { ON_EVENT_SUBSCRIPTION, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { answerSteps as bedrockAnswer, startFakeBedrock, type FakeBedrock } from '../providers/fake-bedrock.js';
import { answerSteps as openAIAnswer, startFakeOpenAI, type FakeOpenAI } from '../providers/fake-openai.js';

/** Runs one turn and returns the events its subscriber received. */
async function turn(test: TestGateway, conversationId: string, prompt: string): Promise<any[]> {
  const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
  try {
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    const started = await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
    expect(started.body.data.startConversation.status).toBe('STARTED');
    const events = await eventsUntilEnd(client, 's');
    const previous = events[0].seq - 1;
    return events.filter((event) => event.seq > previous);
  } finally {
    client.close();
  }
}

const textOf = (events: any[]): string => events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');

describe('LONGRUN_PROVIDER=bedrock', () => {
  let fake: FakeBedrock;
  let test: TestGateway;
  beforeAll(async () => {
    fake = await startFakeBedrock();
    vi.stubEnv('AWS_ENDPOINT_URL_BEDROCK_RUNTIME', fake.url);
    vi.stubEnv('AWS_REGION', 'us-east-1');
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDTESTBEDROCK');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test-secret');
    test = await startTestGateway({ LONGRUN_PROVIDER: 'bedrock' });
  });
  afterAll(async () => {
    await test.stop();
    await fake.close();
    vi.unstubAllEnvs();
  });

  it('streams a multi-turn conversation exactly, sending the history', async () => {
    const conversationId = randomUUID();
    fake.enqueue({ steps: bedrockAnswer(['Hello', ' from "Claude"', ',\nline two 🦊 ', '星空'], { inputTokens: 7, outputTokens: 4, latencyMs: 250 }) });
    const first = await turn(test, conversationId, 'Say hello');
    expect(textOf(first)).toBe('Hello from "Claude",\nline two 🦊 星空');
    expect(first[first.length - 1]).toMatchObject({ type: 'COMPLETE', stopReason: 'end_turn', usage: { inputTokens: 7, outputTokens: 4 }, latencyMs: 250 });

    fake.enqueue({ steps: bedrockAnswer(['Second ', 'answer.']) });
    const second = await turn(test, conversationId, 'And again');
    expect(textOf(second)).toBe('Second answer.');
    expect(second[0].seq).toBe(first.length + 1);
    const body = fake.requests[fake.requests.length - 1]!.body;
    expect(body.messages).toEqual([
      { role: 'user', content: [{ text: 'Say hello' }] },
      { role: 'assistant', content: [{ text: 'Hello from "Claude",\nline two 🦊 星空' }] },
      { role: 'user', content: [{ text: 'And again' }] },
    ]);
    expect(fake.requests[fake.requests.length - 1]!.modelId).toBe('us.anthropic.claude-3-5-sonnet-20241022-v2:0');
  });

  it('delivers a mid-stream exception and an HTTP error as ERROR events, and keeps serving', async () => {
    fake.enqueue({
      steps: [...bedrockAnswer(['partial ']).slice(0, 2), { exception: 'modelStreamErrorException', body: { message: 'model crashed' } }],
    });
    const failed = await turn(test, randomUUID(), 'fail mid-stream');
    expect(textOf(failed)).toBe('partial ');
    expect(failed[failed.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'ModelStreamErrorException' });
    expect(failed[failed.length - 1].error.length).toBeGreaterThan(20);

    fake.enqueue({ status: 403, errorType: 'AccessDeniedException', message: 'You don\'t have access to the model with the specified model ID.' });
    const denied = await turn(test, randomUUID(), 'no access');
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ type: 'ERROR', errorCode: 'AccessDeniedException' });
    expect(denied[0].error).toMatch(/access/i);

    fake.enqueue({ steps: bedrockAnswer(['still ', 'serving']) });
    expect(textOf(await turn(test, randomUUID(), 'after failures'))).toBe('still serving');
  });
});

describe('LONGRUN_PROVIDER=openai', () => {
  let fake: FakeOpenAI;
  let test: TestGateway;
  beforeAll(async () => {
    fake = await startFakeOpenAI();
    test = await startTestGateway({ LONGRUN_PROVIDER: 'openai', OPENAI_BASE_URL: fake.baseUrl, LONGRUN_MODEL_ID: 'qwen2.5:7b' });
  });
  afterAll(async () => {
    await test.stop();
    await fake.close();
  });
  afterEach(() => expect(fake.requests.every((request) => request.body.model === 'qwen2.5:7b')).toBe(true));

  it('streams a multi-turn conversation exactly, sending the history and asking for usage', async () => {
    const conversationId = randomUUID();
    fake.enqueue({ steps: openAIAnswer(['Bonjour', ' «monde» ', '\\ 👩‍🚀'], { promptTokens: 5, completionTokens: 3 }), splitInsideCharacters: true });
    const first = await turn(test, conversationId, 'Greet me');
    expect(textOf(first)).toBe('Bonjour «monde» \\ 👩‍🚀');
    expect(first[first.length - 1]).toMatchObject({ type: 'COMPLETE', stopReason: 'stop', usage: { inputTokens: 5, outputTokens: 3 } });

    fake.enqueue({ steps: openAIAnswer(['Encore.']) });
    const second = await turn(test, conversationId, 'Again');
    expect(textOf(second)).toBe('Encore.');
    const body = fake.requests[fake.requests.length - 1]!.body;
    expect(body.messages).toEqual([
      { role: 'user', content: 'Greet me' },
      { role: 'assistant', content: 'Bonjour «monde» \\ 👩‍🚀' },
      { role: 'user', content: 'Again' },
    ]);
    expect(body.stream_options).toEqual({ include_usage: true });
  });

  it('delivers a connection reset mid-stream and an HTTP error as ERROR events, and keeps serving', async () => {
    fake.enqueue({ steps: [...openAIAnswer(['kept text ']).slice(0, 1), { reset: true, delayMs: 10 }] });
    const reset = await turn(test, randomUUID(), 'reset');
    expect(textOf(reset)).toBe('kept text ');
    expect(reset[reset.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'ConnectionReset' });

    fake.enqueue({ status: 404, message: 'model "qwen2.5:7b" not found, try pulling it first', type: 'not_found_error' });
    const missing = await turn(test, randomUUID(), 'missing model');
    expect(missing[0].type).toBe('ERROR');
    expect(missing[0].error).toContain('ollama pull');

    fake.enqueue({ steps: openAIAnswer(['fine']) });
    expect(textOf(await turn(test, randomUUID(), 'after failures'))).toBe('fine');
  });
});
