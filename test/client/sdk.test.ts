/**
 * The client SDK against a real gateway on port 0, over real sockets: what a user of
 * `longrun/client` sees — the exact text, every seq once and in order, the errors and their codes.
 */
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClient,
  LongrunClientError,
  realtimeUrlFor,
  type ClientOptions,
  type ConversationEvent,
  type ConversationStream,
  type LongrunClient,
} from '../../src/client/index.js';
import { EVENTS_QUERY, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { closedPort, expectedText, instrumentedWebSocket } from './helpers.js';

let test: TestGateway;
const clients: LongrunClient[] = [];

beforeAll(async () => {
  test = await startTestGateway();
});
afterAll(async () => {
  for (const client of clients) client.close();
  await test.stop();
});

function client(options: Partial<ClientOptions> = {}): LongrunClient {
  const created = createClient({ url: test.endpoints.graphqlUrl, apiKey: test.apiKey, WebSocket: instrumentedWebSocket().WebSocket, ...options });
  clients.push(created);
  return created;
}

async function collect(stream: ConversationStream): Promise<ConversationEvent[]> {
  const events: ConversationEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

async function failure(promise: Promise<unknown>): Promise<LongrunClientError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(LongrunClientError);
    return error as LongrunClientError;
  }
  throw new Error('expected a LongrunClientError, but the promise resolved');
}

const textOf = (events: ConversationEvent[]): string =>
  events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');

async function storedEvents(conversationId: string): Promise<ConversationEvent[]> {
  const answer = await test.graphql(EVENTS_QUERY, { conversationId, afterSeq: 0 });
  return answer.body.data.conversationEvents;
}

async function storedConversation(conversationId: string): Promise<any> {
  const answer = await test.graphql(
    `query($id: ID!) { conversation(conversationId: $id) { status lastSeq turns { turn status } messages { turn role content } } }`,
    { id: conversationId },
  );
  return answer.body.data.conversation;
}

describe('chat', () => {
  it('streams a long answer whose text is byte for byte the stored text, each seq once and in order', async () => {
    const prompt = 'Tell me a very long story [tokens=5000] [rate=5000]';
    const stream = client().chat(prompt);
    expect(stream.conversationId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const events = await collect(stream);
    const result = await stream.result;

    expect(events.length).toBeGreaterThan(20);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.every((event) => event.conversationId === stream.conversationId && event.turn === 1)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'COMPLETE', stopReason: 'end_turn', usage: { outputTokens: 5000 } });

    const stored = await storedEvents(stream.conversationId);
    expect(events).toEqual(stored);
    const conversation = await storedConversation(stream.conversationId);
    expect(textOf(events)).toBe(conversation.messages[1].content);
    expect(textOf(events)).toBe(expectedText(prompt));
    expect(result).toEqual({
      conversationId: stream.conversationId,
      turn: 1,
      text: expectedText(prompt),
      status: 'COMPLETE',
      usage: events.at(-1)!.usage,
      stopReason: 'end_turn',
      error: null,
      lastSeq: events.length,
    });
  });

  it('speaks the AppSync real-time protocol: auth header in the query string, graphql-ws, start with extensions', async () => {
    const { WebSocket, record } = instrumentedWebSocket();
    let acknowledgedBeforeStart: boolean | undefined;
    const stream = client({
      WebSocket,
      fetch: (input, init) => {
        if (String(init.body).includes('startConversation')) {
          acknowledgedBeforeStart ??= record.frames.some((frame) => frame.message.type === 'start_ack');
        }
        return fetch(input, init);
      },
    }).chat('short [tokens=5]');
    await stream.result;
    const url = new URL(record.urls[0]!);
    expect(`${url.protocol}//${url.host}${url.pathname}`).toBe(test.endpoints.realtimeUrl);
    expect(url.searchParams.get('payload')).toBe('e30=');
    const host = new URL(test.endpoints.graphqlUrl).host;
    expect(JSON.parse(Buffer.from(url.searchParams.get('header')!, 'base64').toString('utf8'))).toEqual({ host, 'x-api-key': test.apiKey });
    expect(record.protocols[0]).toEqual(['graphql-ws']);
    expect(record.sent[0]!.message).toEqual({ type: 'connection_init' });
    const start = record.sent[1]!.message;
    expect(start).toMatchObject({ type: 'start', payload: { extensions: { authorization: { host, 'x-api-key': test.apiKey } } } });
    expect(JSON.parse(start.payload.data)).toMatchObject({ variables: { conversationId: stream.conversationId } });
    expect(JSON.parse(start.payload.data).query).toContain('onConversationEvent');
    // The turn is started only after the subscription is acknowledged.
    expect(acknowledgedBeforeStart).toBe(true);
    expect(record.sent.at(-1)!.message.type).toBe('stop');
  });

  it('continues a conversation: the second turn carries on the numbering and the history', async () => {
    const sdk = client();
    const first = sdk.chat('first question [tokens=40]');
    const firstEvents = await collect(first);
    const firstResult = await first.result;

    const second = sdk.chat('second question [tokens=30]', { conversationId: first.conversationId });
    const secondEvents = await collect(second);
    const secondResult = await second.result;

    expect(second.conversationId).toBe(first.conversationId);
    expect(secondEvents.map((event) => event.seq)).toEqual(secondEvents.map((_, index) => firstEvents.length + index + 1));
    expect(secondEvents.every((event) => event.turn === 2)).toBe(true);
    expect(secondResult).toMatchObject({ turn: 2, status: 'COMPLETE', lastSeq: firstEvents.length + secondEvents.length });
    expect(secondResult.text).toBe(
      expectedText('second question [tokens=30]', [
        { role: 'user', content: 'first question [tokens=40]' },
        { role: 'assistant', content: firstResult.text },
      ]),
    );
    const conversation = await storedConversation(first.conversationId);
    expect(conversation.messages.map((message: { content: string }) => message.content)).toEqual([
      'first question [tokens=40]',
      firstResult.text,
      'second question [tokens=30]',
      secondResult.text,
    ]);
  });
});

describe('resume', () => {
  it('replays a finished conversation after afterSeq and ends', async () => {
    const sdk = client();
    const chat = sdk.chat('a story to replay [tokens=300]');
    const all = await collect(chat);
    const second = sdk.chat('and another [tokens=50]', { conversationId: chat.conversationId });
    const allSecond = await collect(second);

    const fromFive = sdk.resume(chat.conversationId, { afterSeq: 5 });
    const replayed = await collect(fromFive);
    expect(replayed).toEqual([...all, ...allSecond].slice(5));
    expect(await fromFive.result).toMatchObject({ turn: 2, status: 'COMPLETE', text: (await second.result).text, lastSeq: all.length + allSecond.length });

    const fromStart = sdk.resume(chat.conversationId);
    expect(await collect(fromStart)).toEqual(await storedEvents(chat.conversationId));

    const nothingLeft = sdk.resume(chat.conversationId, { afterSeq: all.length + allSecond.length });
    expect(await collect(nothingLeft)).toEqual([]);
    expect(await nothingLeft.result).toMatchObject({ status: 'COMPLETE', text: '', turn: 2 });
  });

  it('follows a running turn from the first event to its end, as the stream that started it saw it', async () => {
    const sdk = client();
    const chat = sdk.chat('slowly [tokens=200] [rate=400]');
    const chatEvents = collect(chat);
    await chat.started;
    const resumed = client().resume(chat.conversationId, { afterSeq: 0 });
    const resumedEvents = await collect(resumed);
    expect(resumedEvents).toEqual(await chatEvents);
    expect((await resumed.result).text).toBe(expectedText('slowly [tokens=200] [rate=400]'));
  });

  it('fails with NotFoundException for a conversation that does not exist', async () => {
    const error = await failure(collect(client().resume('no-such-conversation')));
    expect(error.code).toBe('NotFoundException');
    expect(error.message).toContain('no-such-conversation');
  });
});

describe('ending a turn early', () => {
  it('cancel() ends the turn on the server with CANCELLED, and the stream with it', async () => {
    const stream = client().chat('a slow and endless answer [tokens=100000] [rate=100]');
    const events: ConversationEvent[] = [];
    for await (const event of stream) {
      events.push(event);
      if (events.length === 2) await stream.cancel();
    }
    const result = await stream.result;
    expect(result.status).toBe('CANCELLED');
    expect(events.at(-1)!.type).toBe('CANCELLED');
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    const conversation = await storedConversation(stream.conversationId);
    expect(conversation.status).toBe('CANCELLED');
    expect(result.text).toBe(conversation.messages[1]?.content ?? '');
    expect(result.text.length).toBeGreaterThan(0);
  });

  it('client.cancel(conversationId) cancels a turn another stream follows', async () => {
    const stream = client().chat('another endless answer [tokens=100000] [rate=100]');
    await stream.started;
    expect(await client().cancel(stream.conversationId)).toEqual({ conversationId: stream.conversationId, status: 'CANCELLING' });
    expect((await stream.result).status).toBe('CANCELLED');
  });

  it('an aborted signal stops the stream locally with Aborted; the turn goes on on the server', async () => {
    const controller = new AbortController();
    const stream = client().chat('keep going [tokens=60] [rate=200]', { signal: controller.signal });
    const events: ConversationEvent[] = [];
    const error = await failure(
      (async () => {
        for await (const event of stream) {
          events.push(event);
          if (events.length === 1) controller.abort();
        }
      })(),
    );
    expect(error.code).toBe('Aborted');
    expect((await failure(stream.result)).code).toBe('Aborted');
    const resumed = client().resume(stream.conversationId, { afterSeq: events.at(-1)!.seq });
    expect((await resumed.result).status).toBe('COMPLETE');
  });

  it('a model failure ends the stream normally, with status ERROR and the error code', async () => {
    const stream = client().chat('fail soon [tokens=50] [fail-after=5]');
    const events = await collect(stream);
    expect(events.at(-1)).toMatchObject({ type: 'ERROR', errorCode: 'ModelFailure' });
    const result = await stream.result;
    expect(result.status).toBe('ERROR');
    expect(result.error).toEqual({ code: 'ModelFailure', message: events.at(-1)!.error });
    const tokens = simulatedAnswer({ messages: [{ role: 'user', content: 'fail soon [tokens=50] [fail-after=5]' }] }).tokens;
    expect(result.text).toBe(tokens.slice(0, 5).join(''));
    expect(textOf(events)).toBe(result.text);
  });
});

describe('errors', () => {
  it('a GraphQL error surfaces with the server errorType as code and its message', async () => {
    const empty = client().chat('   ');
    const error = await failure(collect(empty));
    expect(error.code).toBe('BadRequestException');
    expect(error.message).toContain('input.prompt is empty');
    expect(await failure(empty.result)).toBe(error);
  });

  it('a second turn while one runs gives ConflictException', async () => {
    const sdk = client();
    const running = sdk.chat('long running [tokens=100000] [rate=100]');
    await running.started;
    const conflict = sdk.chat('me too', { conversationId: running.conversationId });
    const error = await failure(conflict.result);
    expect(error.code).toBe('ConflictException');
    expect(error.message).toContain(running.conversationId);
    await running.cancel();
    expect((await running.result).status).toBe('CANCELLED');
  });

  it('a wrong API key fails at once with Unauthorized, without retrying and without starting anything', async () => {
    const { WebSocket, record } = instrumentedWebSocket();
    let requests = 0;
    const sdk = client({
      apiKey: 'da2-wrongwrongwrongwrongwrongwr',
      WebSocket,
      fetch: (input, init) => {
        requests += 1;
        return fetch(input, init);
      },
      reconnect: { initialDelayMs: 1, maxDelayMs: 5 },
    });
    const stream = sdk.chat('hello');
    const error = await failure(collect(stream));
    expect(error.code).toBe('Unauthorized');
    expect(error.message).toMatch(/refused the API key/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(record.opened).toBe(1);
    expect(requests).toBe(0);
    expect(await client().conversation(stream.conversationId)).toBeNull();

    const httpError = await failure(sdk.conversation('anything'));
    expect(httpError.code).toBe('Unauthorized');
    expect(httpError.status).toBe(401);
  });

  it('an unreachable server fails the first connection at once with ConnectionFailed', async () => {
    const port = await closedPort();
    const stream = client({ url: `http://127.0.0.1:${port}/graphql` }).chat('hello');
    const error = await failure(stream.result);
    expect(error.code).toBe('ConnectionFailed');
    expect(error.message).toContain(`127.0.0.1:${port}`);
    expect(error.message).toContain('ECONNREFUSED');
  });

  it('rejects options that cannot work, and calls after close()', async () => {
    expect(() => createClient({ url: 'not a url', apiKey: 'x' })).toThrow(expect.objectContaining({ code: 'InvalidOptions' }));
    expect(() => createClient({ url: 'http://127.0.0.1:1/graphql', apiKey: '' })).toThrow(expect.objectContaining({ code: 'InvalidOptions' }));
    const sdk = client();
    const running = sdk.chat('bye [tokens=100000] [rate=100]');
    await running.started;
    sdk.close();
    expect((await failure(running.result)).code).toBe('Aborted');
    expect(() => sdk.chat('again')).toThrow(expect.objectContaining({ code: 'ClientClosed' }));
    await client().cancel(running.conversationId);
  });
});

describe('realtimeUrlFor', () => {
  it('derives the real-time endpoint as AppSync clients do', () => {
    expect(realtimeUrlFor('https://abc123.appsync-api.eu-west-1.amazonaws.com/graphql')).toBe(
      'wss://abc123.appsync-realtime-api.eu-west-1.amazonaws.com/graphql',
    );
    expect(realtimeUrlFor('https://api.example.com/graphql')).toBe('wss://api.example.com/graphql/realtime');
    expect(realtimeUrlFor('http://127.0.0.1:4000/graphql')).toBe('ws://127.0.0.1:4000/graphql/realtime');
  });
});

it('carries concurrent streams over one connection without mixing them', async () => {
  const { WebSocket, record } = instrumentedWebSocket();
  const sdk = client({ WebSocket });
  const prompts = Array.from({ length: 8 }, (_, index) => `parallel story ${index} [tokens=${100 + index * 10}] [rate=2000]`);
  const streams = prompts.map((prompt) => sdk.chat(prompt));
  const results = await Promise.all(streams.map((stream) => collect(stream)));
  results.forEach((events, index) => {
    expect(events.map((event) => event.seq)).toEqual(events.map((_, position) => position + 1));
    expect(textOf(events)).toBe(expectedText(prompts[index]!));
  });
  expect(record.opened).toBe(1);
});

it('pages the backfill: at most 1000 events per request, until a page is not full', async () => {
  // Without coalescing, every token is an event: a few thousand events in well under a second.
  const unbatched = await startTestGateway({ LONGRUN_FLUSH_MS: '0' });
  const pages: Array<{ afterSeq: number; limit: number; count: number }> = [];
  const sdk = createClient({
    url: unbatched.endpoints.graphqlUrl,
    apiKey: unbatched.apiKey,
    WebSocket: instrumentedWebSocket().WebSocket,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      const request = JSON.parse(String(init.body));
      if (request.query.includes('conversationEvents')) {
        const answer = await response.clone().json();
        pages.push({ afterSeq: request.variables.afterSeq, limit: request.variables.limit, count: answer.data.conversationEvents.length });
      }
      return response;
    },
  });
  try {
    const chat = sdk.chat('many small events [tokens=2500] [rate=0]');
    await chat.result;
    pages.length = 0;
    const events = await collect(sdk.resume(chat.conversationId));
    expect(events.length).toBeGreaterThan(2000);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(textOf(events)).toBe(expectedText('many small events [tokens=2500] [rate=0]'));
    const expectedPages = [];
    for (let afterSeq = 0; ; afterSeq += 1000) {
      const count = Math.min(1000, events.length - afterSeq);
      expectedPages.push({ afterSeq, limit: 1000, count });
      if (count < 1000) break;
    }
    expect(pages).toEqual(expectedPages);
  } finally {
    sdk.close();
    await unbatched.stop();
  }
});

it('bundles for browsers with no Node built-in and without the ws package', async () => {
  const bundled = await build({
    absWorkingDir: PROJECT_ROOT,
    entryPoints: [join(PROJECT_ROOT, 'src', 'client', 'index.ts')],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const inputs = Object.keys(bundled.metafile.inputs);
  expect(inputs.filter((input) => !input.startsWith('src/'))).toEqual([]);
  const code = bundled.outputFiles[0]!.text;
  expect(code).not.toMatch(/from\s*["'](node:[^"']*|ws)["']|import\(\s*["'](node:[^"']*|ws)["']|require\(/);
});
