/**
 * The Bedrock provider with the real `@aws-sdk/client-bedrock-runtime` against a fake Bedrock
 * runtime that speaks HTTP/2 and AWS event-stream frames (`fake-bedrock.ts`).
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { createBedrockProvider, DEFAULT_BEDROCK_MODEL_ID, type BedrockProvider } from '../../src/providers/bedrock.js';
import { createProvider } from '../../src/providers/index.js';
import type { StreamPart } from '../../src/providers/types.js';
import { answerSteps, startFakeBedrock, type BedrockEventType, type BedrockExceptionType, type BedrockStep, type FakeBedrock } from './fake-bedrock.js';
import { collect, describeProviderConformance, textOf, type ConformanceRequest } from './provider.suite.js';

interface BedrockFixture {
  modelId: string;
  text: string;
  stopReason: string;
  usage: { inputTokens: number; outputTokens: number };
  latencyMs: number;
  events: Array<{ event: string; body: Record<string, unknown> }>;
}

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/bedrock-converse-stream.json', import.meta.url), 'utf8'),
) as BedrockFixture;
const fixtureSteps: BedrockStep[] = fixture.events.map(({ event, body }) => ({ event: event as BedrockEventType, body }));

const question: ConformanceRequest = { messages: [{ role: 'user', content: 'Write a haiku about autumn rain.' }] };

function signal(): AbortSignal {
  return new AbortController().signal;
}

describeProviderConformance('bedrock', {
  async setup() {
    const fake = await startFakeBedrock();
    const provider = createBedrockProvider({ client: fake.client(), maxRetries: 2, retryBaseMs: 1 });
    return {
      provider,
      async normalAnswer() {
        fake.enqueue({ steps: fixtureSteps });
        return { request: question, text: fixture.text, usage: fixture.usage };
      },
      async multiByteAnswer() {
        // A ZWJ emoji split between two events, CJK split between events, and the encoded frames
        // cut every 64 bytes and inside every multi-byte character, so no frame and no character
        // arrives in one read.
        const deltas = ['Fox ', '🦊', ' and astronaut ', '👩\u200D', '🚀', ' under 星', '空; ', '川の流れ', ' — naïve café ✓'];
        fake.enqueue({ steps: answerSteps(deltas), chunkBytes: 64, splitInsideCharacters: true });
        return { request: question, text: deltas.join('') };
      },
      async slowAnswer() {
        fake.enqueue({
          steps: [
            ...answerSteps(['one ', 'two ', 'three ']).slice(0, 4),
            { event: 'contentBlockDelta', body: { contentBlockIndex: 0, delta: { text: 'four ' } }, delayMs: 5 },
            { stall: true },
          ],
        });
        return { request: question, connectionClosed: () => fake.requests[fake.requests.length - 1]!.clientClosed };
      },
      async failureMidStream() {
        fake.enqueue({
          steps: [
            ...answerSteps(['Partial ', 'answer ']).slice(0, 3),
            {
              exception: 'modelStreamErrorException',
              body: { message: 'Model stream error', originalStatusCode: 500, originalMessage: 'upstream model crashed' },
            },
          ],
        });
        return { request: question, textBefore: 'Partial answer ' };
      },
      async failureBeforeText() {
        fake.enqueue({ status: 403, errorType: 'AccessDeniedException', message: "You don't have access to the model with the specified model ID." });
        return { request: question };
      },
      async close() {
        await fake.close();
      },
    };
  },
});

describe('bedrock provider', () => {
  let fake: FakeBedrock;
  let provider: BedrockProvider;

  beforeEach(async () => {
    fake = await startFakeBedrock();
    provider = createBedrockProvider({ client: fake.client(), maxRetries: 2, retryBaseMs: 1 });
  });
  afterEach(async () => {
    await fake.close();
  });

  describe('answers', () => {
    it('replays a recorded Claude answer: exact text, stop reason, usage and Bedrock latency', async () => {
      fake.enqueue({ steps: fixtureSteps });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe(fixture.text);
      expect(parts[parts.length - 1]).toEqual({
        type: 'finish',
        stopReason: 'end_turn',
        usage: { inputTokens: 24, outputTokens: 61 },
        latencyMs: 1712,
      });
    });

    it('reports max_tokens as the stop reason when Bedrock does', async () => {
      fake.enqueue({ steps: answerSteps(['cut'], { stopReason: 'max_tokens' }) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts[parts.length - 1]).toMatchObject({ type: 'finish', stopReason: 'max_tokens' });
    });

    it('finishes at the end of the stream, without usage, when no metadata event comes', async () => {
      fake.enqueue({ steps: answerSteps(['no metadata']).slice(0, -1) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toEqual([
        { type: 'text-delta', delta: 'no metadata' },
        { type: 'finish', stopReason: 'end_turn', usage: undefined, latencyMs: undefined },
      ]);
    });

    it('ends with IncompleteStream when the stream ends before messageStop', async () => {
      fake.enqueue({ steps: answerSteps(['half an ', 'answer']).slice(0, 3) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('half an answer');
      expect(parts[parts.length - 1]).toMatchObject({ type: 'error', code: 'IncompleteStream', message: expect.stringMatching(/cut short/) });
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('requests', () => {
    it('sends the whole history, the system prompt and the inference settings, signed with SigV4', async () => {
      fake.enqueue({ steps: answerSteps(['ok']) });
      await collect(
        provider.stream({
          system: 'You are terse.',
          messages: [
            { role: 'user', content: 'First question' },
            { role: 'assistant', content: 'First answer' },
            { role: 'user', content: 'Second question 🦊' },
          ],
          maxTokens: 256,
          temperature: 0.2,
          topP: 0.9,
          signal: signal(),
        }),
      );
      const [recorded] = fake.requests;
      expect(recorded?.modelId).toBe(DEFAULT_BEDROCK_MODEL_ID);
      expect(recorded?.body).toEqual({
        messages: [
          { role: 'user', content: [{ text: 'First question' }] },
          { role: 'assistant', content: [{ text: 'First answer' }] },
          { role: 'user', content: [{ text: 'Second question 🦊' }] },
        ],
        system: [{ text: 'You are terse.' }],
        inferenceConfig: { maxTokens: 256, temperature: 0.2, topP: 0.9 },
      });
      expect(String(recorded?.headers.authorization)).toMatch(
        /^AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCKTEST\/\d{8}\/us-east-1\/bedrock\/aws4_request/,
      );
    });

    it('leaves out system and inferenceConfig when the turn sets none', async () => {
      fake.enqueue({ steps: answerSteps(['ok']) });
      await collect(provider.stream({ ...question, signal: signal() }));
      expect(fake.requests[0]?.body).toEqual({ messages: [{ role: 'user', content: [{ text: 'Write a haiku about autumn rain.' }] }] });
    });

    it("uses the request's modelId over the provider's, and the provider's over the default", async () => {
      const configured = createBedrockProvider({ client: fake.client(), modelId: 'eu.anthropic.claude-3-7-sonnet-20250219-v1:0' });
      expect(configured.defaultModelId).toBe('eu.anthropic.claude-3-7-sonnet-20250219-v1:0');
      fake.enqueue({ steps: answerSteps(['a']) }, { steps: answerSteps(['b']) });
      await collect(configured.stream({ ...question, signal: signal() }));
      await collect(configured.stream({ ...question, modelId: 'amazon.nova-pro-v1:0', signal: signal() }));
      expect(fake.requests.map((request) => request.modelId)).toEqual([
        'eu.anthropic.claude-3-7-sonnet-20250219-v1:0',
        'amazon.nova-pro-v1:0',
      ]);
    });
  });

  describe('exception events in the stream', () => {
    const cases: Array<{ exception: BedrockExceptionType; code: string; advice: RegExp; isRetryable: boolean }> = [
      { exception: 'throttlingException', code: 'ThrottlingException', advice: /quota/i, isRetryable: true },
      { exception: 'modelStreamErrorException', code: 'ModelStreamErrorException', advice: /failed while streaming/, isRetryable: true },
      { exception: 'validationException', code: 'ValidationException', advice: /LONGRUN_MODEL_ID/, isRetryable: false },
      { exception: 'serviceUnavailableException', code: 'ServiceUnavailableException', advice: /temporarily unavailable/, isRetryable: true },
      { exception: 'internalServerException', code: 'InternalServerException', advice: /internal error.*Try again/, isRetryable: true },
    ];

    it.each(cases)('$exception after the first token: one $code error part, not retried', async ({ exception, code, advice, isRetryable }) => {
      fake.enqueue({
        steps: [...answerSteps(['Some text']).slice(0, 2), { exception, body: { message: `Fake ${exception} message` } }],
      });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(2);
      expect(parts[0]).toEqual({ type: 'text-delta', delta: 'Some text' });
      const error = parts[1] as Extract<StreamPart, { type: 'error' }>;
      expect(error).toMatchObject({ type: 'error', code, isRetryable });
      expect(error.message).toMatch(advice);
      expect(error.message).toContain(`Fake ${exception} message`);
      expect(error.message).toContain(DEFAULT_BEDROCK_MODEL_ID);
      // Never retried after the first token: the text is already out.
      expect(fake.requests).toHaveLength(1);
    });

    it('includes the model\'s own status and message of a modelStreamErrorException', async () => {
      fake.enqueue({
        steps: [
          ...answerSteps(['x']).slice(0, 2),
          { exception: 'modelStreamErrorException', body: { message: 'stream error', originalStatusCode: 424, originalMessage: 'the model crashed' } },
        ],
      });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect((parts[1] as Extract<StreamPart, { type: 'error' }>).message).toMatch(/status 424: the model crashed/);
    });

    it('retries a throttlingException that comes before the first token, then delivers the answer', async () => {
      fake.enqueue(
        { steps: [answerSteps([])[0]!, { exception: 'throttlingException', body: { message: 'Too many tokens, please wait before trying again.' } }] },
        { steps: answerSteps(['after ', 'the retry']) },
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('after the retry');
      expect(parts[parts.length - 1]?.type).toBe('finish');
      expect(fake.requests).toHaveLength(2);
    });

    it('does not retry a validationException before the first token', async () => {
      fake.enqueue({ steps: [{ exception: 'validationException', body: { message: 'The provided model identifier is invalid.' } }] });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'ValidationException', message: expect.stringMatching(/LONGRUN_MODEL_ID/) });
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('HTTP errors before the stream', () => {
    it('403 AccessDeniedException: says to enable model access and which IAM permission is needed; not retried', async () => {
      fake.enqueue({ status: 403, errorType: 'AccessDeniedException', message: "You don't have access to the model with the specified model ID." });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      const error = parts[0] as Extract<StreamPart, { type: 'error' }>;
      expect(error).toMatchObject({ type: 'error', code: 'AccessDeniedException', isRetryable: false });
      expect(error.message).toContain("You don't have access to the model with the specified model ID");
      expect(error.message).toMatch(/Model catalog.*use-case details/);
      expect(error.message).toMatch(/bedrock:InvokeModelWithResponseStream/);
      expect(error.message).toMatch(/us-east-1/);
      expect(fake.requests).toHaveLength(1);
    });

    it('404 ResourceNotFoundException: points at LONGRUN_MODEL_ID and the region prefix; not retried', async () => {
      fake.enqueue({ status: 404, errorType: 'ResourceNotFoundException', message: 'Model not found' });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'ResourceNotFoundException', isRetryable: false });
      expect((parts[0] as Extract<StreamPart, { type: 'error' }>).message).toMatch(/LONGRUN_MODEL_ID.*"us\."/s);
      expect(fake.requests).toHaveLength(1);
    });

    it('400 ValidationException for on-demand throughput: suggests the inference profile ID', async () => {
      fake.enqueue({
        status: 400,
        errorType: 'ValidationException',
        message:
          "Invocation of model ID anthropic.claude-3-5-sonnet-20241022-v2:0 with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
      });
      const parts = await collect(provider.stream({ ...question, modelId: 'anthropic.claude-3-5-sonnet-20241022-v2:0', signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'ValidationException', isRetryable: false });
      expect((parts[0] as Extract<StreamPart, { type: 'error' }>).message).toContain('"us.anthropic.claude-3-5-sonnet-20241022-v2:0"');
      expect(fake.requests).toHaveLength(1);
    });

    it('429 then 503 are retried, and the third attempt delivers the answer', async () => {
      fake.enqueue(
        { status: 429, errorType: 'ThrottlingException', message: 'Too many requests, please wait before trying again.' },
        { status: 503, errorType: 'ServiceUnavailableException', message: 'Bedrock is unable to process your request.' },
        { steps: answerSteps(['third ', 'time']) },
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('third time');
      expect(parts.filter((part) => part.type === 'error')).toEqual([]);
      expect(parts[parts.length - 1]?.type).toBe('finish');
      expect(fake.requests).toHaveLength(3);
    });

    it('gives up after maxRetries and says how often it tried', async () => {
      fake.enqueue(
        ...Array.from({ length: 5 }, () => ({ status: 429, errorType: 'ThrottlingException', message: 'Too many requests, please wait before trying again.' })),
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'ThrottlingException', isRetryable: true });
      expect((parts[0] as Extract<StreamPart, { type: 'error' }>).message).toMatch(/quota.*Tried 3 times/s);
      expect(fake.requests).toHaveLength(3); // maxRetries: 2
    });

    it('retries a 500 InternalServerException before the first token', async () => {
      fake.enqueue({ status: 500, errorType: 'InternalServerException', message: 'Internal server error' }, { steps: answerSteps(['fine']) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('fine');
      expect(fake.requests).toHaveLength(2);
    });

    it('makes exactly one request when maxRetries is 0', async () => {
      const once = createBedrockProvider({ client: fake.client(), maxRetries: 0 });
      fake.enqueue({ status: 503, errorType: 'ServiceUnavailableException', message: 'Bedrock is unable to process your request.' });
      const parts = await collect(once.stream({ ...question, signal: signal() }));
      expect(parts).toEqual([expect.objectContaining({ type: 'error', code: 'ServiceUnavailableException' })]);
      expect((parts[0] as Extract<StreamPart, { type: 'error' }>).message).not.toMatch(/Tried/);
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('connections', () => {
    it('a connection reset after the first token is one ConnectionReset error part, not retried', async () => {
      fake.enqueue({ steps: [...answerSteps(['before the reset']).slice(0, 2), { reset: true, delayMs: 5 }] }, { steps: answerSteps(['never']) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('before the reset');
      expect(parts).toHaveLength(2);
      expect(parts[1]).toMatchObject({ type: 'error', code: 'ConnectionReset', isRetryable: true });
      expect((parts[1] as Extract<StreamPart, { type: 'error' }>).message).toMatch(/was cut before the answer .* finished/);
      expect(fake.requests).toHaveLength(1);
    });

    it('a connection reset before the first token is retried', async () => {
      fake.enqueue({ steps: [answerSteps([])[0]!, { reset: true }] }, { steps: answerSteps(['second ', 'try']) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('second try');
      expect(fake.requests).toHaveLength(2);
    });

    it('an endpoint that refuses connections gives ConnectionRefused naming the settings to check', async () => {
      const port = await closedPort();
      const client = new BedrockRuntimeClient({
        region: 'us-west-2',
        endpoint: `http://127.0.0.1:${port}`,
        credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'fake' },
        maxAttempts: 1,
      });
      try {
        const refused = createBedrockProvider({ client, maxRetries: 1, retryBaseMs: 1 });
        const parts = await collect(refused.stream({ ...question, signal: signal() }));
        expect(parts).toHaveLength(1);
        expect(parts[0]).toMatchObject({ type: 'error', code: 'ConnectionRefused' });
        expect((parts[0] as Extract<StreamPart, { type: 'error' }>).message).toMatch(/not reachable.*AWS_ENDPOINT_URL_BEDROCK_RUNTIME.*Tried 2 times/s);
      } finally {
        client.destroy();
      }
    });

    it('a slow stream cancelled midway stops reading and the server sees the stream closed', async () => {
      const deltas = Array.from({ length: 200 }, (_, index) => `token${index} `);
      fake.enqueue({ steps: answerSteps(deltas, { delayMs: 3 }) });
      const abort = new AbortController();
      const received: StreamPart[] = [];
      for await (const part of provider.stream({ ...question, signal: abort.signal })) {
        received.push(part);
        if (received.length === 5) abort.abort('cancel');
      }
      expect(textOf(received)).toBe(deltas.slice(0, 5).join(''));
      await fake.requests[0]!.clientClosed;
      expect(fake.requests[0]!.completed).toBe(false);
    });

    it('a consumer that stops reading (break) also closes the stream', async () => {
      fake.enqueue({ steps: [...answerSteps(['first ', 'second ']).slice(0, 3), { stall: true }] });
      for await (const part of provider.stream({ ...question, signal: signal() })) {
        expect(part).toEqual({ type: 'text-delta', delta: 'first ' });
        break;
      }
      await fake.requests[0]!.clientClosed;
    });

    it('an abort during the backoff ends the stream at once, with no error part and no further request', async () => {
      const patient = createBedrockProvider({ client: fake.client(), maxRetries: 3, retryBaseMs: 60_000 });
      fake.enqueue({ status: 429, errorType: 'ThrottlingException', message: 'Too many requests' }, { steps: answerSteps(['too late']) });
      const abort = new AbortController();
      const stream = collect(patient.stream({ ...question, signal: abort.signal }));
      await vi.waitFor(() => expect(fake.requests).toHaveLength(1));
      abort.abort('cancel');
      expect(await stream).toEqual([]);
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('createProvider', () => {
    afterEach(() => {
      vi.unstubAllEnvs();
    });

    it("builds the Bedrock provider from the configuration, using the SDK's default client settings (HTTP/2 to AWS_ENDPOINT_URL_BEDROCK_RUNTIME)", async () => {
      vi.stubEnv('AWS_ENDPOINT_URL_BEDROCK_RUNTIME', fake.url);
      vi.stubEnv('AWS_REGION', 'eu-west-1');
      vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMENVIRONMENT');
      vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'secret-from-environment');
      vi.stubEnv('AWS_SESSION_TOKEN', '');
      vi.stubEnv('AWS_PROFILE', '');
      const configured = await createProvider({
        name: 'bedrock',
        modelId: 'eu.amazon.nova-lite-v1:0',
        simulated: { ttftMs: 0, tokensPerSecond: 0 },
        openai: { baseUrl: undefined, apiKey: undefined },
        bedrock: { region: 'eu-west-1' },
      });
      try {
        expect(configured.name).toBe('bedrock');
        expect(configured.defaultModelId).toBe('eu.amazon.nova-lite-v1:0');
        fake.enqueue({ steps: answerSteps(['from ', 'the default client']) });
        const parts = await collect(configured.stream({ ...question, signal: signal() }));
        expect(textOf(parts)).toBe('from the default client');
        expect(fake.requests[0]?.modelId).toBe('eu.amazon.nova-lite-v1:0');
        expect(String(fake.requests[0]?.headers.authorization)).toMatch(/Credential=AKIDFROMENVIRONMENT\/\d{8}\/eu-west-1\/bedrock\//);
      } finally {
        (configured as BedrockProvider).close();
      }
    });
  });
});

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
