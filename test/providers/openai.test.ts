/**
 * The OpenAI-compatible provider with the real `openai` SDK against a fake server that speaks
 * the Chat Completions Server-Sent Events format (`fake-openai.ts`).
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createProvider } from '../../src/providers/index.js';
import { createOpenAIProvider, DEFAULT_OPENAI_MODEL_ID } from '../../src/providers/openai.js';
import type { ModelProvider, StreamPart } from '../../src/providers/types.js';
import { answerSteps, completionChunk, startFakeOpenAI, type FakeOpenAI } from './fake-openai.js';
import { collect, describeProviderConformance, textOf, type ConformanceRequest } from './provider.suite.js';

const fixtureBody = readFileSync(new URL('../fixtures/openai-chat-stream.sse', import.meta.url), 'utf8');
const fixture = JSON.parse(readFileSync(new URL('../fixtures/openai-chat-stream.expected.json', import.meta.url), 'utf8')) as {
  text: string;
  stopReason: string;
  usage: { inputTokens: number; outputTokens: number };
};

const question: ConformanceRequest = { messages: [{ role: 'user', content: 'Tell me about the fox.' }] };
type ErrorPart = Extract<StreamPart, { type: 'error' }>;

function signal(): AbortSignal {
  return new AbortController().signal;
}

describeProviderConformance('openai', {
  async setup() {
    const fake = await startFakeOpenAI();
    const provider = createOpenAIProvider({ baseUrl: fake.baseUrl, maxRetries: 2, retryBaseMs: 1 });
    return {
      provider,
      async normalAnswer() {
        fake.enqueue({ steps: [{ raw: fixtureBody }] });
        return { request: question, text: fixture.text, usage: fixture.usage };
      },
      async multiByteAnswer() {
        // A ZWJ emoji split between two chunks, CJK split between chunks, and the body cut inside
        // every multi-byte character, so no character arrives in one read.
        const deltas = ['Fox ', '🦊', ' and astronaut ', '👩\u200D', '🚀', ' under 星', '空; ', '川の流れ', ' — naïve café ✓'];
        fake.enqueue({ steps: answerSteps(deltas), splitInsideCharacters: true });
        return { request: question, text: deltas.join('') };
      },
      async slowAnswer() {
        fake.enqueue({
          steps: [
            { data: completionChunk('one ') },
            { data: completionChunk('two ') },
            { data: completionChunk('three ') },
            { data: completionChunk('four '), delayMs: 5 },
            { stall: true },
          ],
        });
        return { request: question, connectionClosed: () => fake.requests[fake.requests.length - 1]!.clientClosed };
      },
      async failureMidStream() {
        fake.enqueue({
          steps: [
            { data: completionChunk('Partial ') },
            { data: completionChunk('answer ') },
            { data: { error: { message: 'model runner has unexpectedly stopped', type: 'server_error' } } },
          ],
        });
        return { request: question, textBefore: 'Partial answer ' };
      },
      async failureBeforeText() {
        fake.enqueue({ status: 401, message: 'Incorrect API key provided.', type: 'invalid_request_error' });
        return { request: question };
      },
      async close() {
        await fake.close();
      },
    };
  },
});

describe('openai provider', () => {
  let fake: FakeOpenAI;
  let provider: ModelProvider;

  beforeEach(async () => {
    fake = await startFakeOpenAI();
    provider = createOpenAIProvider({ baseUrl: fake.baseUrl, maxRetries: 2, retryBaseMs: 1 });
  });
  afterEach(async () => {
    await fake.close();
  });

  describe('answers', () => {
    it('replays a recorded Ollama stream: exact text, finish reason and usage from the usage chunk', async () => {
      fake.enqueue({ steps: [{ raw: fixtureBody }] });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe(fixture.text);
      expect(parts[parts.length - 1]).toEqual({ type: 'finish', stopReason: 'stop', usage: { inputTokens: 31, outputTokens: 22 } });
    });

    it('reports finish_reason length as the stop reason', async () => {
      fake.enqueue({ steps: answerSteps(['cut'], { finishReason: 'length' }) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts[parts.length - 1]).toMatchObject({ type: 'finish', stopReason: 'length' });
    });

    it('finishes without usage when the server sends no usage chunk', async () => {
      fake.enqueue({ steps: [{ data: completionChunk('hi') }, { data: completionChunk('', 'stop') }, { data: '[DONE]' }] });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toEqual([
        { type: 'text-delta', delta: 'hi' },
        { type: 'finish', stopReason: 'stop', usage: undefined },
      ]);
    });

    it('reads SSE with CRLF line endings, comment lines and events cut every 3 bytes', async () => {
      // Chunks as small as servers may send them, so that cutting every 3 bytes stays quick.
      const chunk = (content: string, finishReason: string | null = null): string =>
        JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: finishReason }] });
      const body = [
        ': ping\r\n\r\n',
        `data: ${chunk('日本')}\r\n\r\n`,
        ': keep-alive\r\n\r\n',
        `data: ${chunk('語 🦊')}\r\n\r\n`,
        `data: ${chunk('', 'stop')}\r\n\r\n`,
        `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } })}\r\n\r\n`,
        'data: [DONE]\r\n\r\n',
      ].join('');
      fake.enqueue({ steps: [{ raw: body }], chunkBytes: 3 });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('日本語 🦊');
      expect(parts[parts.length - 1]).toEqual({ type: 'finish', stopReason: 'stop', usage: { inputTokens: 3, outputTokens: 2 } });
    });

    it('ends with IncompleteStream when the server ends the stream without a finish reason', async () => {
      fake.enqueue({ steps: [{ data: completionChunk('half an ') }, { data: completionChunk('answer') }] });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('half an answer');
      expect(parts[parts.length - 1]).toMatchObject({ type: 'error', code: 'IncompleteStream', message: expect.stringMatching(/cut short/) });
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('requests', () => {
    it('sends the system prompt, the whole history, the sampling settings and asks for usage', async () => {
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
      expect(recorded?.path).toBe('/v1/chat/completions');
      expect(recorded?.body).toEqual({
        model: DEFAULT_OPENAI_MODEL_ID,
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: 'First question' },
          { role: 'assistant', content: 'First answer' },
          { role: 'user', content: 'Second question 🦊' },
        ],
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 256,
        temperature: 0.2,
        top_p: 0.9,
      });
      // Local servers ignore the key, but the SDK needs one: a placeholder is sent.
      expect(recorded?.headers.authorization).toBe('Bearer not-needed');
    });

    it('leaves out the system message and the sampling settings when the turn sets none', async () => {
      fake.enqueue({ steps: answerSteps(['ok']) });
      await collect(provider.stream({ ...question, signal: signal() }));
      expect(fake.requests[0]?.body).toEqual({
        model: 'llama3.2',
        messages: [{ role: 'user', content: 'Tell me about the fox.' }],
        stream: true,
        stream_options: { include_usage: true },
      });
    });

    it("sends the configured API key, and uses the request's model over the provider's", async () => {
      const keyed = createOpenAIProvider({ baseUrl: `${fake.baseUrl}/`, apiKey: 'sk-test-123', modelId: 'qwen2.5:7b' });
      expect(keyed.defaultModelId).toBe('qwen2.5:7b');
      fake.enqueue({ steps: answerSteps(['a']) }, { steps: answerSteps(['b']) });
      await collect(keyed.stream({ ...question, signal: signal() }));
      await collect(keyed.stream({ ...question, modelId: 'mistral', signal: signal() }));
      expect(fake.requests.map((request) => [request.path, request.body.model, request.headers.authorization])).toEqual([
        ['/v1/chat/completions', 'qwen2.5:7b', 'Bearer sk-test-123'],
        ['/v1/chat/completions', 'mistral', 'Bearer sk-test-123'],
      ]);
    });

    it('uses the fetch it is given', async () => {
      const seen: string[] = [];
      const counting: typeof fetch = (input, init) => {
        seen.push(String(input instanceof Request ? input.url : input));
        return fetch(input, init);
      };
      const withFetch = createOpenAIProvider({ baseUrl: fake.baseUrl, fetch: counting });
      fake.enqueue({ steps: answerSteps(['through the given fetch']) });
      const parts = await collect(withFetch.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('through the given fetch');
      expect(seen).toEqual([`${fake.baseUrl}/chat/completions`]);
    });
  });

  describe('HTTP errors before the stream', () => {
    it('401: says the API key was refused and names OPENAI_API_KEY; not retried', async () => {
      fake.enqueue({ status: 401, message: 'Incorrect API key provided.', type: 'invalid_request_error' });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'AuthenticationError', isRetryable: false });
      expect((parts[0] as ErrorPart).message).toMatch(/refused the API key \(401: Incorrect API key provided\).*OPENAI_API_KEY/);
      expect(fake.requests).toHaveLength(1);
    });

    it('403: a key problem too; not retried', async () => {
      fake.enqueue({ status: 403, message: 'You are not allowed to use this model.', type: 'permission_error' });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toEqual([expect.objectContaining({ type: 'error', code: 'PermissionDeniedError', isRetryable: false })]);
      expect((parts[0] as ErrorPart).message).toMatch(/OPENAI_API_KEY/);
      expect(fake.requests).toHaveLength(1);
    });

    it('404 for a model Ollama does not have: suggests ollama pull; not retried', async () => {
      fake.enqueue({ status: 404, message: 'model "llama3.2" not found, try pulling it first', type: 'api_error' });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'NotFoundError', isRetryable: false });
      const message = (parts[0] as ErrorPart).message;
      expect(message).toContain('model "llama3.2" not found, try pulling it first');
      expect(message).toContain('ollama pull llama3.2');
      expect(message).toContain(fake.baseUrl);
      expect(fake.requests).toHaveLength(1);
    });

    it('400: the request was rejected; not retried', async () => {
      fake.enqueue({ status: 400, message: "'temperature' must be between 0 and 2", type: 'invalid_request_error' });
      const parts = await collect(provider.stream({ ...question, temperature: 7, signal: signal() }));
      expect(parts).toEqual([expect.objectContaining({ type: 'error', code: 'BadRequestError', isRetryable: false })]);
      expect((parts[0] as ErrorPart).message).toMatch(/rejected the request.*temperature/);
      expect(fake.requests).toHaveLength(1);
    });

    it('429 then 503 are retried, and the third attempt delivers the answer', async () => {
      fake.enqueue(
        { status: 429, message: 'Rate limit reached', type: 'rate_limit_error' },
        { status: 503, message: 'server busy', type: 'server_error' },
        { steps: answerSteps(['third ', 'time']) },
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('third time');
      expect(parts.filter((part) => part.type === 'error')).toEqual([]);
      expect(fake.requests).toHaveLength(3);
    });

    it('gives up on a 500 after maxRetries and says how often it tried', async () => {
      fake.enqueue(...Array.from({ length: 5 }, () => ({ status: 500, message: 'out of memory', type: 'server_error' })));
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'InternalServerError', isRetryable: true });
      expect((parts[0] as ErrorPart).message).toMatch(/HTTP 500 \(out of memory\).*Tried 3 times/);
      expect(fake.requests).toHaveLength(3); // maxRetries: 2
    });

    it('429 that persists ends as RateLimitError', async () => {
      const once = createOpenAIProvider({ baseUrl: fake.baseUrl, maxRetries: 0 });
      fake.enqueue({ status: 429, message: 'Rate limit reached', type: 'rate_limit_error' });
      const parts = await collect(once.stream({ ...question, signal: signal() }));
      expect(parts).toEqual([expect.objectContaining({ type: 'error', code: 'RateLimitError', isRetryable: true })]);
      expect((parts[0] as ErrorPart).message).toMatch(/rate limiting/);
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('failures in the stream', () => {
    it('an error event after the first token is one ModelFailure part, not retried', async () => {
      fake.enqueue(
        { steps: [{ data: completionChunk('Some text') }, { data: { error: { message: 'model runner has unexpectedly stopped', type: 'server_error' } } }] },
        { steps: answerSteps(['never']) },
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(2);
      expect(parts[1]).toMatchObject({ type: 'error', code: 'ModelFailure' });
      expect((parts[1] as ErrorPart).message).toMatch(/failed while streaming its answer \(model runner has unexpectedly stopped\)/);
      expect(fake.requests).toHaveLength(1);
    });

    it('an error event before the first token is retried', async () => {
      fake.enqueue(
        { steps: [{ data: { error: { message: 'model is loading', type: 'server_error' } } }] },
        { steps: answerSteps(['loaded']) },
      );
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('loaded');
      expect(fake.requests).toHaveLength(2);
    });

    it('a connection reset after the first token is one ConnectionReset part, not retried', async () => {
      fake.enqueue({ steps: [{ data: completionChunk('before the reset') }, { reset: true, delayMs: 5 }] }, { steps: answerSteps(['never']) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('before the reset');
      expect(parts).toHaveLength(2);
      expect(parts[1]).toMatchObject({ type: 'error', code: 'ConnectionReset', isRetryable: true });
      expect((parts[1] as ErrorPart).message).toMatch(/was cut before the answer finished/);
      expect(fake.requests).toHaveLength(1);
    });

    it('a connection reset before the first token is retried', async () => {
      fake.enqueue({ steps: [{ reset: true }] }, { steps: answerSteps(['second ', 'try']) });
      const parts = await collect(provider.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('second try');
      expect(fake.requests).toHaveLength(2);
    });
  });

  describe('connections', () => {
    it('a server that is not running: ConnectionRefused, saying the server at the base URL is not reachable', async () => {
      const baseUrl = `http://127.0.0.1:${await closedPort()}/v1`;
      const refused = createOpenAIProvider({ baseUrl, maxRetries: 1, retryBaseMs: 1 });
      const parts = await collect(refused.stream({ ...question, signal: signal() }));
      expect(parts).toHaveLength(1);
      expect(parts[0]).toMatchObject({ type: 'error', code: 'ConnectionRefused', isRetryable: true });
      const message = (parts[0] as ErrorPart).message;
      expect(message).toContain(`The model server at ${baseUrl} is not reachable`);
      expect(message).toMatch(/ECONNREFUSED.*ollama serve.*OPENAI_BASE_URL.*Tried 2 times/s);
    });

    it('a slow stream cancelled midway stops reading and the server sees the connection closed', async () => {
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

    it('a consumer that stops reading (break) also closes the connection', async () => {
      fake.enqueue({ steps: [{ data: completionChunk('first ') }, { data: completionChunk('second ') }, { stall: true }] });
      for await (const part of provider.stream({ ...question, signal: signal() })) {
        expect(part).toEqual({ type: 'text-delta', delta: 'first ' });
        break;
      }
      await fake.requests[0]!.clientClosed;
    });

    it('an abort during the backoff ends the stream at once, with no error part and no further request', async () => {
      const patient = createOpenAIProvider({ baseUrl: fake.baseUrl, maxRetries: 3, retryBaseMs: 60_000 });
      fake.enqueue({ status: 503, message: 'busy', type: 'server_error' }, { steps: answerSteps(['too late']) });
      const abort = new AbortController();
      const stream = collect(patient.stream({ ...question, signal: abort.signal }));
      await vi.waitFor(() => expect(fake.requests).toHaveLength(1));
      abort.abort('cancel');
      expect(await stream).toEqual([]);
      expect(fake.requests).toHaveLength(1);
    });
  });

  describe('createProvider', () => {
    it('builds the OpenAI-compatible provider from the configuration', async () => {
      const configured = await createProvider({
        name: 'openai',
        modelId: 'qwen2.5:0.5b',
        simulated: { ttftMs: 0, tokensPerSecond: 0 },
        openai: { baseUrl: fake.baseUrl, apiKey: 'sk-from-config' },
        bedrock: { region: undefined },
      });
      expect(configured.name).toBe('openai');
      expect(configured.defaultModelId).toBe('qwen2.5:0.5b');
      fake.enqueue({ steps: answerSteps(['configured']) });
      const parts = await collect(configured.stream({ ...question, signal: signal() }));
      expect(textOf(parts)).toBe('configured');
      expect(fake.requests[0]?.body.model).toBe('qwen2.5:0.5b');
      expect(fake.requests[0]?.headers.authorization).toBe('Bearer sk-from-config');
    });

    it('defaults to a local Ollama and llama3.2', async () => {
      const configured = await createProvider({
        name: 'openai',
        modelId: undefined,
        simulated: { ttftMs: 0, tokensPerSecond: 0 },
        openai: { baseUrl: undefined, apiKey: undefined },
        bedrock: { region: undefined },
      });
      expect(configured.defaultModelId).toBe('llama3.2');
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
