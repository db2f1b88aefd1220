/**
 * The SDK keeps a stream whole when the network does not: connections cut mid-stream, events
 * published while nobody listened, live events racing the backfill, a silent socket, messages
 * lost in transit, and a server that stays unreachable. A TCP proxy inside the test stands between
 * the SDK and a real gateway; every assertion is about what the caller received.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createClient,
  LongrunClientError,
  type ClientOptions,
  type ConnectionChange,
  type ConversationEvent,
  type ConversationStream,
  type FetchFunction,
  type LongrunClient,
} from '../../src/client/index.js';
import { EVENTS_QUERY, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { expectedText, frameSeq, instrumentedWebSocket, sleep, TcpProxy, until, type SocketRecord } from './helpers.js';

// A stream that never becomes whole hangs; fail it well before the suite-wide 30 s.
vi.setConfig({ testTimeout: 15_000 });

let test: TestGateway;
const cleanUps: Array<() => unknown> = [];

beforeAll(async () => {
  // A short connectionTimeoutMs lets the keep-alive watchdog test run in about a second; the
  // gateway sends `ka` every 100 ms, so healthy connections never come near it.
  test = await startTestGateway({ LONGRUN_CONNECTION_TIMEOUT_MS: '1000', LONGRUN_KEEPALIVE_MS: '100' });
});
afterEach(async () => {
  for (const cleanUp of cleanUps.splice(0)) await cleanUp();
});
afterAll(async () => {
  await test.stop();
});

const fastReconnect = { initialDelayMs: 20, maxDelayMs: 100 };
// Where a test is about reconnection, the gap and idle backfills are pushed out of its way, so
// only the backfill that follows a resubscription can make the stream whole.
const onlyResubscriptionBackfill = { gapMs: 60_000, idleMs: 60_000 };

async function proxy(): Promise<TcpProxy> {
  const started = await TcpProxy.start(test.endpoints.port);
  cleanUps.push(() => started.close());
  return started;
}

function client(options: Partial<ClientOptions>): LongrunClient {
  const created = createClient({ url: test.endpoints.graphqlUrl, apiKey: test.apiKey, reconnect: fastReconnect, ...options });
  cleanUps.push(() => created.close());
  return created;
}

/** Reads every event; `onEvent` runs after each one (it may cut the network). */
async function collect(stream: ConversationStream, onEvent: (events: ConversationEvent[]) => void = () => undefined) {
  const events: ConversationEvent[] = [];
  for await (const event of stream) {
    events.push(event);
    onEvent(events);
  }
  return events;
}

/** What a user would check: the stream equals the store, the text the model's, seq 1..n once each. */
async function expectWhole(stream: ConversationStream, events: ConversationEvent[], prompt: string): Promise<void> {
  expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
  const stored = await test.graphql(EVENTS_QUERY, { conversationId: stream.conversationId, afterSeq: 0 });
  expect(events).toEqual(stored.body.data.conversationEvents);
  const text = events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
  expect(text).toBe(expectedText(prompt));
  expect(events.at(-1)!.type).toBe('COMPLETE');
  expect((await stream.result).text).toBe(text);
}

const dataFrames = (record: SocketRecord, after = 0) =>
  record.frames.filter((frame) => frame.at > after && frameSeq(frame) !== undefined);

describe('a connection cut mid-stream', () => {
  it('reconnects through the same proxy and delivers the whole text, each seq once', async () => {
    const cut = await proxy();
    const { WebSocket, record } = instrumentedWebSocket();
    // Everything (HTTP and WebSocket) goes through the proxy, as it would through a flaky network.
    const sdk = client({ url: cut.url(), WebSocket, backfill: onlyResubscriptionBackfill });
    const prompt = 'a story interrupted twice [tokens=1500] [rate=1500]';
    const stream = sdk.chat(prompt);
    const events = await collect(stream, (received) => {
      if (received.length === 10 || received.length === 40) cut.sever();
    });
    await expectWhole(stream, events, prompt);
    expect(events.length).toBeGreaterThan(40);
    expect(record.opened).toBeGreaterThanOrEqual(3);
  });

  it('recovers events published while disconnected, with live events arriving ahead of the gap before the backfill answers', async () => {
    const cut = await proxy();
    const { WebSocket, record } = instrumentedWebSocket();
    let severedAt: number | undefined;
    const withheld: { pageSeqs: number[]; liveSeqsBeforeRelease: number[] } = { pageSeqs: [], liveSeqsBeforeRelease: [] };
    // The backfill after the reconnection is answered only once live events have arrived on the
    // new connection, so they are ahead of the gap the backfill fills: the race, made certain.
    const withholdingFetch: FetchFunction = async (input, init) => {
      const response = await fetch(input, init);
      if (severedAt === undefined || !String(init.body).includes('ConversationEvents') || withheld.pageSeqs.length > 0) return response;
      const text = await response.text();
      await until(() => dataFrames(record, severedAt).length >= 3, 'live events on the new connection');
      withheld.pageSeqs = JSON.parse(text).data.conversationEvents.map((event: ConversationEvent) => event.seq);
      withheld.liveSeqsBeforeRelease = dataFrames(record, severedAt).map((frame) => frameSeq(frame)!);
      return new Response(text, { status: response.status, headers: response.headers });
    };
    const sdk = client({ realtimeUrl: cut.url('/graphql/realtime', 'ws'), WebSocket, fetch: withholdingFetch, backfill: onlyResubscriptionBackfill });
    const prompt = 'events while nobody listens [tokens=600] [rate=300]';
    const stream = sdk.chat(prompt);
    const events = await collect(stream, (received) => {
      if (received.length !== 5) return;
      cut.mode = 'refuse';
      cut.sever();
      severedAt = Date.now();
      setTimeout(() => (cut.mode = 'forward'), 300);
    });

    await expectWhole(stream, events, prompt);
    const lastBeforeCut = Math.max(...dataFrames(record).filter((frame) => frame.at <= severedAt!).map((frame) => frameSeq(frame)!));
    const firstLiveAfter = Math.min(...withheld.liveSeqsBeforeRelease);
    // A gap existed: events were published while disconnected and did not arrive live...
    expect(firstLiveAfter).toBeGreaterThan(lastBeforeCut + 1);
    // ...the backfill page holds them, and live events beyond them had arrived before it did.
    expect(withheld.pageSeqs[0]).toBe(lastBeforeCut + 1);
    expect(withheld.pageSeqs).toContain(firstLiveAfter - 1);
    expect(withheld.liveSeqsBeforeRelease.length).toBeGreaterThanOrEqual(3);
    expect(record.opened).toBeGreaterThanOrEqual(2);
  });
});

describe('onConnectionChange', () => {
  it('tells how the connection is doing: up, dropped with its reason, back, idle once the stream ends, closed', async () => {
    const cut = await proxy();
    const sdk = client({ url: cut.url(), backfill: onlyResubscriptionBackfill });
    const changes: ConnectionChange[] = [];
    const stopListening = sdk.onConnectionChange((change) => changes.push(change));
    const prompt = 'a story cut once [tokens=300] [rate=1500]';
    const stream = sdk.chat(prompt);
    const events = await collect(stream, (received) => {
      if (received.length === 10) cut.sever();
    });
    await expectWhole(stream, events, prompt);
    // The stream unsubscribed at its end; the SDK then closes the socket.
    await until(() => changes.at(-1)?.status === 'idle', 'the connection to go idle');
    expect(changes.map((change) => change.status)).toEqual(['connecting', 'connected', 'reconnecting', 'connected', 'idle']);
    expect(changes[2]!.reason).toMatch(/^connection closed \(code \d+/);

    stopListening();
    const later: ConnectionChange[] = [];
    sdk.onConnectionChange((change) => later.push(change));
    sdk.close();
    expect(later).toEqual([{ status: 'closed' }]);
    expect(changes.map((change) => change.status)).toEqual(['connecting', 'connected', 'reconnecting', 'connected', 'idle']);
  });

  it('keeps telling the other listeners when one throws, and rethrows its error outside the SDK', async () => {
    // The SDK rethrows a listener's error from a timer of its own (no delay given), so that it
    // reaches the host's error reporting without breaking the connection; those timers are held
    // here instead of run, since vitest fails a run on any uncaught error.
    const rethrows: Array<() => void> = [];
    const realSetTimeout = globalThis.setTimeout;
    const spy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((...args: Parameters<typeof setTimeout>) => {
      if (args.length === 1) {
        rethrows.push(args[0] as () => void);
        return realSetTimeout(() => undefined, 0);
      }
      return realSetTimeout(...args);
    }) as typeof setTimeout);
    cleanUps.push(() => spy.mockRestore());
    const sdk = client({});
    const changes: ConnectionChange[] = [];
    const stopThrowing = sdk.onConnectionChange(() => {
      throw new Error('a broken listener');
    });
    sdk.onConnectionChange((change) => changes.push(change));
    const prompt = 'a listener throws [tokens=40] [rate=2000]';
    const stream = sdk.chat(prompt);
    await expectWhole(stream, await collect(stream), prompt);
    await until(() => changes.at(-1)?.status === 'idle', 'the connection to go idle');
    // Removed before the spy goes: closing the client at the end of the test changes the status once more.
    stopThrowing();
    spy.mockRestore();
    expect(changes.map((change) => change.status)).toEqual(['connecting', 'connected', 'idle']);
    expect(rethrows).toHaveLength(3);
    for (const rethrow of rethrows) expect(rethrow).toThrow('a broken listener');
  });

  it('goes from connecting to idle, saying why, when the first connection cannot be made', async () => {
    const refusing = await proxy();
    refusing.mode = 'refuse';
    const sdk = client({ realtimeUrl: refusing.url('/graphql/realtime', 'ws') });
    const changes: ConnectionChange[] = [];
    sdk.onConnectionChange((change) => changes.push(change));
    const stream = sdk.resume('no-such-conversation-needed');
    await expect(stream.result).rejects.toMatchObject({ code: 'ConnectionFailed' });
    expect(changes.map((change) => change.status)).toEqual(['connecting', 'idle']);
    expect(changes[1]!.reason).toMatch(/^Could not connect to ws:\/\/127\.0\.0\.1:\d+\/graphql\/realtime \(/);
  });
});

it('drops events delivered both live and by the first backfill (published between start_ack and the backfill)', async () => {
  const { WebSocket, record } = instrumentedWebSocket();
  const backfill: { requested: boolean; seqs: number[]; liveBefore: number[] } = { requested: false, seqs: [], liveBefore: [] };
  // The first backfill is sent only after live events arrived: they are stored by then, so the
  // backfill returns them again, and the SDK must not deliver them twice.
  const delayingFetch: FetchFunction = async (input, init) => {
    if (!String(init.body).includes('ConversationEvents') || backfill.requested) return fetch(input, init);
    backfill.requested = true;
    await until(() => dataFrames(record).length >= 3, 'live events before the backfill');
    backfill.liveBefore = dataFrames(record).map((frame) => frameSeq(frame)!);
    const response = await fetch(input, init);
    const text = await response.text();
    backfill.seqs = JSON.parse(text).data.conversationEvents.map((event: ConversationEvent) => event.seq);
    return new Response(text, { status: response.status, headers: response.headers });
  };
  const prompt = 'racing the backfill [tokens=400] [rate=1000] [ttft=0]';
  const stream = client({ WebSocket, fetch: delayingFetch, backfill: onlyResubscriptionBackfill }).chat(prompt);
  const events = await collect(stream);
  await expectWhole(stream, events, prompt);
  expect(backfill.liveBefore.length).toBeGreaterThanOrEqual(3);
  // Every event that came live before the backfill came again in it. (Live delivery may begin
  // after seq 1 on a busy machine, when the first events were stored before the subscription
  // was registered: the backfill is what brings those.)
  expect(backfill.seqs).toEqual(expect.arrayContaining(backfill.liveBefore));
});

it('reconnects when keep-alives stop arriving on a connection that stays open', async () => {
  const silent = await proxy();
  const { WebSocket, record } = instrumentedWebSocket();
  const sdk = client({ realtimeUrl: silent.url('/graphql/realtime', 'ws'), WebSocket, backfill: onlyResubscriptionBackfill });
  const prompt = 'a quiet line [tokens=800] [rate=400]';
  const stream = sdk.chat(prompt);
  const events = await collect(stream, (received) => {
    if (received.length === 5) silent.silence();
  });
  await expectWhole(stream, events, prompt);
  expect(record.opened).toBeGreaterThanOrEqual(2);
  const silenced = silent.pairs[0]!;
  expect(silenced.silenced).toBe(true);
  // The proxy hid the server's close: the client gave up on the socket itself (its watchdog).
  await until(() => silenced.log.includes('client-closed'), 'the client to close the silent socket');
  expect(silenced.log).not.toContain('severed');
});

describe('messages lost in transit', () => {
  it('a lost event is recovered from the store once the gap has lasted gapMs', async () => {
    let droppedOne = false;
    const { WebSocket, record } = instrumentedWebSocket((frame) => {
      if (droppedOne || frameSeq(frame) !== 5) return false;
      droppedOne = true;
      return true;
    });
    const prompt = 'lose one [tokens=300] [rate=600]';
    const stream = client({ WebSocket, backfill: { gapMs: 100 } }).chat(prompt);
    await expectWhole(stream, await collect(stream), prompt);
    expect(record.dropped.map(frameSeq)).toEqual([5]);
  });

  it('a lost terminal event is recovered once nothing has arrived for idleMs', async () => {
    const { WebSocket, record } = instrumentedWebSocket((frame) => frame.message.payload?.data?.onConversationEvent?.type === 'COMPLETE');
    const prompt = 'lose the end [tokens=50]';
    const stream = client({ WebSocket, backfill: { idleMs: 300 } }).chat(prompt);
    await expectWhole(stream, await collect(stream), prompt);
    expect(record.dropped).toHaveLength(1);
  });
});

it('gives up with ConnectionLost after reconnect.maxElapsedMs when the server stays unreachable', async () => {
  const refusing = await proxy();
  const { WebSocket, record } = instrumentedWebSocket();
  const sdk = client({
    realtimeUrl: refusing.url('/graphql/realtime', 'ws'),
    WebSocket,
    reconnect: { maxElapsedMs: 1500, initialDelayMs: 20, maxDelayMs: 100 },
  });
  const stream = sdk.chat('an answer nobody will hear [tokens=100000] [rate=100]');
  cleanUps.push(() => client({}).cancel(stream.conversationId));
  let cutAt = 0;
  const events: ConversationEvent[] = [];
  let error: unknown;
  try {
    await collect(stream, (received) => {
      events.splice(0, events.length, ...received);
      if (received.length === 3) {
        refusing.mode = 'refuse';
        refusing.sever();
        cutAt = Date.now();
      }
    });
  } catch (caught) {
    error = caught;
  }
  const waited = Date.now() - cutAt;
  expect(error).toBeInstanceOf(LongrunClientError);
  expect((error as LongrunClientError).code).toBe('ConnectionLost');
  expect((error as LongrunClientError).message).toMatch(/could not reconnect within 1500 ms \(last failure: .+\)/);
  expect((await stream.result.catch((caught: unknown) => caught)) as LongrunClientError).toBe(error);
  expect(waited).toBeGreaterThanOrEqual(1400);
  expect(waited).toBeLessThan(10_000);
  expect(record.opened).toBeGreaterThan(3);
  expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
  // Nothing more is attempted once it gave up.
  const attempts = record.opened;
  await sleep(300);
  expect(record.opened).toBe(attempts);
});

describe('a startConversation whose answer is lost', () => {
  /** A fetch that lets startConversation through (or not) and then loses the answer. */
  const losingStart = (reachServer: boolean): FetchFunction => async (input, init) => {
    if (typeof init.body === 'string' && init.body.includes('startConversation')) {
      if (reachServer) await fetch(input, init);
      throw new TypeError('fetch failed: the connection was reset');
    }
    return fetch(input, init);
  };

  it('follows the turn when the request reached the server, without starting a second one', async () => {
    const client = createClient({ url: test.endpoints.graphqlUrl, apiKey: test.apiKey, fetch: losingStart(true) });
    cleanUps.push(() => client.close());
    const prompt = 'answer lost in transit [tokens=60]';
    const stream = client.chat(prompt);
    const events: ConversationEvent[] = [];
    for await (const event of stream) events.push(event);
    expect(events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('')).toBe(expectedText(prompt));
    expect(events[events.length - 1]!.type).toBe('COMPLETE');
    const conversation = await client.conversation(stream.conversationId);
    expect(conversation?.turns).toHaveLength(1);
  });

  it('fails with ConnectionFailed when the request never reached the server', async () => {
    const client = createClient({ url: test.endpoints.graphqlUrl, apiKey: test.apiKey, fetch: losingStart(false) });
    cleanUps.push(() => client.close());
    const stream = client.chat('never sent');
    await expect(stream.result).rejects.toMatchObject({ code: 'ConnectionFailed' });
    expect(await client.conversation(stream.conversationId)).toBeNull();
  });
});
