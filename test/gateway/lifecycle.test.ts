/**
 * Turn lifecycle through the gateway: cancel aborts the provider's stream, the invoker bounds
 * concurrency and queues in order, turn time-outs end with ERROR, and shutdown closes running turns,
 * whether turns run on the gateway's thread or on turn threads.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createSimulatedProvider } from '../../src/providers/simulated.js';
import type { ModelProvider, StreamPart } from '../../src/providers/types.js';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { EVENTS_QUERY, ON_EVENT_SUBSCRIPTION, START_MUTATION, startTestGateway, TURN_PLACES, type TestGateway } from '../helpers/gateway.js';

/** Wraps the simulated model to observe what the gateway does to the provider's stream. */
function observedProvider(inner: ModelProvider = createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 200 })) {
  const observed = { yielded: 0, aborted: 0, finished: 0, running: 0, maxRunning: 0 };
  const provider: ModelProvider = {
    name: 'observed',
    defaultModelId: inner.defaultModelId,
    async *stream(request) {
      observed.running += 1;
      observed.maxRunning = Math.max(observed.maxRunning, observed.running);
      request.signal.addEventListener('abort', () => (observed.aborted += 1), { once: true });
      try {
        for await (const part of inner.stream(request) as AsyncIterable<StreamPart>) {
          observed.yielded += 1;
          yield part;
        }
      } finally {
        observed.running -= 1;
        observed.finished += 1;
      }
    },
  };
  return { provider, observed };
}

const CANCEL = 'mutation($id: ID!) { cancelConversation(conversationId: $id) { conversationId status } }';

let test: TestGateway | undefined;
afterEach(async () => {
  await test?.stop();
  test = undefined;
});

describe('cancel', () => {
  it('ends the turn with CANCELLED and stops the provider producing', async () => {
    const { provider, observed } = observedProvider();
    test = await startTestGateway({}, { provider });
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'a very long story [tokens=100000]', conversationId } });
    await client.until(() => (client.data('s').length >= 3 ? true : undefined));

    const cancelled = await test.graphql(CANCEL, { id: conversationId });
    expect(cancelled.body.data.cancelConversation).toEqual({ conversationId, status: 'CANCELLING' });
    const events = await eventsUntilEnd(client, 's');
    const last = events[events.length - 1];
    expect(last).toMatchObject({ type: 'CANCELLED', turn: 1, seq: events.length });
    expect(observed.aborted).toBe(1);
    await client.until(() => (observed.finished === 1 ? true : undefined));
    const yieldedAtEnd = observed.yielded;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(observed.yielded).toBe(yieldedAtEnd);
    expect(yieldedAtEnd).toBeLessThan(1000);

    // Stored events equal what was delivered, and the turn is closed.
    const stored = await test.graphql(EVENTS_QUERY, { conversationId });
    expect(stored.body.data.conversationEvents).toEqual(events);
    const again = await test.graphql(CANCEL, { id: conversationId });
    expect(again.body.data.cancelConversation.status).toBe('CANCELLED');
    client.close();
  });
});

describe('the Event-mode invoker', () => {
  it('runs at most LONGRUN_MAX_CONCURRENT_TURNS turns and queues the rest in order', async () => {
    const { provider, observed } = observedProvider(createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 500 }));
    test = await startTestGateway({ LONGRUN_MAX_CONCURRENT_TURNS: '2' }, { provider });
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const ids = Array.from({ length: 5 }, () => randomUUID());
    for (const id of ids) await client.subscribe(id, ON_EVENT_SUBSCRIPTION, { conversationId: id });
    for (const id of ids) {
      const started = await test.graphql(START_MUTATION, { input: { prompt: 'queued [tokens=150]', conversationId: id } });
      expect(started.body.data.startConversation.status).toBe('STARTED');
    }
    expect(test.gateway.services.invoker.queued).toBe(3);
    const ends: number[] = [];
    for (const id of ids) {
      const events = await eventsUntilEnd(client, id);
      expect(events[events.length - 1].type).toBe('COMPLETE');
      ends.push(events[events.length - 1].createdAt);
    }
    expect(observed.maxRunning).toBe(2);
    // First in, first started: the first two finish before the last starts.
    expect(Math.max(ends[0]!, ends[1]!)).toBeLessThanOrEqual(ends[4]!);
    client.close();
  });
});

describe.each(TURN_PLACES)('$name', (place) => {
  it('cancel ends a running turn with CANCELLED, keeping the text sent before it', async () => {
    test = await startTestGateway(place.environment());
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'a very long story [rate=200] [tokens=100000]', conversationId } });
    await client.until(() => (client.data('s').length >= 3 ? true : undefined));
    const cancelled = await test.graphql(CANCEL, { id: conversationId });
    expect(cancelled.body.data.cancelConversation).toEqual({ conversationId, status: 'CANCELLING' });
    const events = await eventsUntilEnd(client, 's');
    expect(events[events.length - 1]).toMatchObject({ type: 'CANCELLED', turn: 1, seq: events.length });
    const stored = await test.graphql(EVENTS_QUERY, { conversationId });
    expect(stored.body.data.conversationEvents).toEqual(events);
    client.close();
  });

  it('cancels a queued turn at once', async () => {
    test = await startTestGateway({ ...place.environment(), LONGRUN_MAX_CONCURRENT_TURNS: '1' });
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const [busy, waiting] = [randomUUID(), randomUUID()];
    await client.subscribe('waiting', ON_EVENT_SUBSCRIPTION, { conversationId: waiting });
    await test.graphql(START_MUTATION, { input: { prompt: 'hog [rate=10] [tokens=1000]', conversationId: busy } });
    await test.graphql(START_MUTATION, { input: { prompt: 'waits', conversationId: waiting } });
    await test.graphql(CANCEL, { id: waiting });
    const events = await eventsUntilEnd(client, 'waiting', 2000);
    expect(events).toEqual([expect.objectContaining({ type: 'CANCELLED', seq: 1 })]);
    await test.graphql(CANCEL, { id: busy });
    client.close();
  });

  it('ends a turn that runs past LONGRUN_TURN_TIMEOUT_MS with ERROR TurnTimeout, keeping its text', async () => {
    test = await startTestGateway({ ...place.environment(), LONGRUN_TURN_TIMEOUT_MS: '300' });
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'endless [rate=50] [tokens=100000]', conversationId } });
    const events = await eventsUntilEnd(client, 's');
    const last = events[events.length - 1];
    expect(last).toMatchObject({ type: 'ERROR', errorCode: 'TurnTimeout' });
    expect(last.error).toContain('LONGRUN_TURN_TIMEOUT_MS');
    expect(events.filter((event) => event.type === 'CHUNK').length).toBeGreaterThan(0);
    const conversation = await test.graphql('query($id: ID!) { conversation(conversationId: $id) { status messages { role content } } }', { id: conversationId });
    expect(conversation.body.data.conversation.status).toBe('ERROR');
    expect(conversation.body.data.conversation.messages[1].content).toBe(
      events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join(''),
    );
    client.close();
  });

  it('turns a model failure into an ERROR event with its message', async () => {
    test = await startTestGateway(place.environment());
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'fails [fail-after=7]', conversationId } });
    const events = await eventsUntilEnd(client, 's');
    expect(events[events.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'ModelFailure' });
    expect(events[events.length - 1].error).toContain('[fail-after=7]');
    client.close();
  });

  it('closes running turns as interrupted, tells subscribers, and stops answering', async () => {
    test = await startTestGateway(place.environment());
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const conversationId = randomUUID();
    await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'long [rate=50] [tokens=100000]', conversationId } });
    await client.until(() => (client.data('s').length >= 2 ? true : undefined));
    const { graphqlUrl } = test.endpoints;
    await test.stop();
    test = undefined;
    const events = client.data('s').map((data) => data.onConversationEvent);
    expect(events[events.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'Interrupted' });
    expect(await client.closed()).toBe(1001);
    await expect(fetch(graphqlUrl.replace('/graphql', '/healthz'))).rejects.toThrow();
  });
});
