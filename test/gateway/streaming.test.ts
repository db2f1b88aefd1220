/**
 * The whole pattern over real sockets: a raw AppSync-protocol client and the graphql-ws client
 * subscribe, start a conversation, and receive every event, byte for byte.
 */
import { randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { eventsUntilEnd, RawAppSyncClient, type AuthStyle } from '../helpers/appsync-client.js';
import {
  EVENTS_QUERY,
  ON_CHUNK_SUBSCRIPTION,
  ON_EVENT_SUBSCRIPTION,
  START_MUTATION,
  startTestGateway,
  TURN_PLACES,
  type TestGateway,
} from '../helpers/gateway.js';

const expectedText = (prompt: string, history: Array<{ role: 'user' | 'assistant'; content: string }> = []): string =>
  simulatedAnswer({ messages: [...history, { role: 'user', content: prompt }] }).tokens.join('');

describe.each(TURN_PLACES)('$name', (place) => {
  let test: TestGateway;
  beforeAll(async () => {
    // Twenty conversations at once, from one key: above the default per-caller limit of 16.
    test = await startTestGateway({ ...place.environment(), LONGRUN_MAX_TURNS_PER_PRINCIPAL: '32' });
  });
  afterAll(async () => {
    await test.stop();
  });

  describe.each<AuthStyle>(['query', 'subprotocol'])('AppSync real-time protocol, auth in the %s', (style) => {
    it('streams a conversation to onConversationEvent and onReceiveChunk, exactly and in order', async () => {
      const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey, style);
      const ack = client.messages.find((message) => message.type === 'connection_ack');
      expect(ack?.payload.connectionTimeoutMs).toBe(300_000);
      const conversationId = randomUUID();
      expect((await client.subscribe('events', ON_EVENT_SUBSCRIPTION, { conversationId }, test.apiKey)).type).toBe('start_ack');
      expect((await client.subscribe('chunks', ON_CHUNK_SUBSCRIPTION, { conversationId }, test.apiKey)).type).toBe('start_ack');

      const prompt = 'Tell me a long story [tokens=400]';
      const started = await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
      expect(started).toEqual({ status: 200, body: { data: { startConversation: { conversationId, status: 'STARTED' } } } });

      const events = await eventsUntilEnd(client, 'events');
      const text = events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
      expect(text).toBe(expectedText(prompt));
      expect(text).toContain('\n');
      expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
      const last = events[events.length - 1];
      expect(last).toMatchObject({ type: 'COMPLETE', turn: 1, stopReason: 'end_turn', usage: { outputTokens: 400 } });
      expect(last.usage.inputTokens).toBeGreaterThan(0);

      const replay = await test.graphql(EVENTS_QUERY, { conversationId, afterSeq: 0 });
      expect(replay.body.data.conversationEvents).toEqual(events);

      await client.until(() => {
        const chunks = client.data('chunks').map((data) => data.onReceiveChunk.chunk).join('');
        return chunks.length === text.length ? chunks : undefined;
      });
      expect(client.data('chunks').map((data) => data.onReceiveChunk)).toEqual(
        events.filter((event) => event.type === 'CHUNK').map((event) => ({ conversationId, chunk: event.chunk })),
      );
      client.close();
    });
  });

  it('continues a conversation with its history, numbering events across turns', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'first [tokens=30]', conversationId } });
    const first = await eventsUntilEnd(client, 's');
    const firstText = first.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');

    await test.graphql(START_MUTATION, { input: { prompt: 'second [tokens=20]', conversationId } });
    await client.until(() => (client.data('s').filter((data) => data.onConversationEvent.type === 'COMPLETE').length === 2 ? true : undefined));
    const all = client.data('s').map((data) => data.onConversationEvent);
    expect(all.map((event) => event.seq)).toEqual(all.map((_, index) => index + 1));
    const second = all.slice(first.length);
    expect(second.every((event) => event.turn === 2)).toBe(true);
    const secondText = second.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
    expect(secondText).toBe(
      expectedText('second [tokens=20]', [
        { role: 'user', content: 'first [tokens=30]' },
        { role: 'assistant', content: firstText },
      ]),
    );

    const conversation = await test.graphql(
      `query($id: ID!) { conversation(conversationId: $id) { conversationId status lastSeq turns { turn status } messages { turn role content } } }`,
      { id: conversationId },
    );
    expect(conversation.body.data.conversation).toEqual({
      conversationId,
      status: 'COMPLETE',
      lastSeq: all.length,
      turns: [
        { turn: 1, status: 'COMPLETE' },
        { turn: 2, status: 'COMPLETE' },
      ],
      messages: [
        { turn: 1, role: 'user', content: 'first [tokens=30]' },
        { turn: 1, role: 'assistant', content: firstText },
        { turn: 2, role: 'user', content: 'second [tokens=20]' },
        { turn: 2, role: 'assistant', content: secondText },
      ],
    });
    client.close();
  });

  it('streams to the graphql-ws client at /graphql', async () => {
    const client = createClient({
      url: test.endpoints.graphqlWsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { 'x-api-key': test.apiKey },
      retryAttempts: 0,
    });
    const conversationId = randomUUID();
    const prompt = 'graphql-ws please [tokens=150]';
    const received: any[] = [];
    const done = new Promise<void>((resolve, reject) => {
      client.subscribe<{ onConversationEvent: any }>(
        { query: ON_EVENT_SUBSCRIPTION, variables: { conversationId } },
        {
          next: (result) => {
            if (result.errors) reject(new Error(JSON.stringify(result.errors)));
            received.push(result.data!.onConversationEvent);
            if (result.data!.onConversationEvent.type !== 'CHUNK') resolve();
          },
          error: reject,
          complete: () => undefined,
        },
      );
    });
    // graphql-ws has no start_ack; a query on the same socket is answered after the subscribe is registered.
    await new Promise<void>((resolve, reject) =>
      client.subscribe({ query: `query($id: ID!) { conversation(conversationId: $id) { status } }`, variables: { id: conversationId } }, {
        next: () => undefined,
        error: reject,
        complete: resolve,
      }),
    );
    await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
    await done;
    expect(received.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(expectedText(prompt));
    expect(received.map((event) => event.seq)).toEqual(received.map((_, index) => index + 1));
    expect(received[received.length - 1].type).toBe('COMPLETE');
    await client.dispose();
  });

  it('keeps twenty concurrent conversations apart', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversations = Array.from({ length: 20 }, (_, index) => ({ id: randomUUID(), prompt: `story number ${index} [tokens=${50 + index}]` }));
    for (const conversation of conversations) {
      expect((await client.subscribe(conversation.id, ON_EVENT_SUBSCRIPTION, { conversationId: conversation.id })).type).toBe('start_ack');
    }
    const started = await Promise.all(
      conversations.map((conversation) => test.graphql(START_MUTATION, { input: { prompt: conversation.prompt, conversationId: conversation.id } })),
    );
    expect(started.map((response) => response.body.data?.startConversation?.status)).toEqual(conversations.map(() => 'STARTED'));
    for (const conversation of conversations) {
      const events = await eventsUntilEnd(client, conversation.id);
      expect(events.every((event) => event.conversationId === conversation.id)).toBe(true);
      expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
      expect(events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(expectedText(conversation.prompt));
    }
    client.close();
  });

  it('stops a subscription on stop, answering complete', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('gone', ON_EVENT_SUBSCRIPTION, { conversationId });
    await client.subscribe('kept', ON_EVENT_SUBSCRIPTION, { conversationId });
    client.send({ type: 'stop', id: 'gone' });
    await client.waitFor((message) => message.type === 'complete' && message.id === 'gone');
    await test.graphql(START_MUTATION, { input: { prompt: 'short [tokens=5]', conversationId } });
    await eventsUntilEnd(client, 'kept');
    expect(client.data('gone')).toEqual([]);
    client.close();
  });

  it('sends keep-alives after connection_ack', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    await client.until(() => (client.messages.filter((message) => message.type === 'ka').length >= 2 ? true : undefined), 5000);
    client.close();
  });

  it('answers /healthz', async () => {
    const response = await fetch(test.endpoints.graphqlUrl.replace('/graphql', '/healthz'));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('serves subscriptions with fragments through graphql-js execution, alongside compiled ones', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    const fragment = `subscription($id: ID!) { onConversationEvent(conversationId: $id) { ...Fields } } fragment Fields on ConversationEvent { seq type chunk }`;
    await client.subscribe('fragment', fragment, { id: conversationId });
    await client.subscribe('plain', `subscription($id: ID!) { onConversationEvent(conversationId: $id) { seq type chunk } }`, { id: conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'fragments [tokens=40]', conversationId } });
    const plain = await eventsUntilEnd(client, 'plain');
    await client.until(() => (client.data('fragment').length === plain.length ? true : undefined));
    expect(client.data('fragment').map((data) => data.onConversationEvent)).toEqual(plain);
    client.close();
  });
});
