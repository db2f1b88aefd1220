/**
 * The load generator, run as a child of `bench/run.ts` for each measurement, against one server
 * (the gateway or a baseline) over real sockets on 127.0.0.1. It speaks the server's protocol:
 * the AppSync real-time protocol (`graphql-ws` subprotocol, as AppSync clients do) or
 * `graphql-transport-ws` (the graphql-ws server behind yoga), with the same subscription document
 * and the same `startConversation` request bodies for all.
 *
 * For every subscription it checks what a user would notice: every event's `seq` follows the last
 * (gaps and duplicates are counted), every token arrives byte for byte in order (compared with the
 * simulated model's own answer), and each turn ends with COMPLETE. Latencies, all in ms:
 *
 * - token latency: a token's `[stamp]` (when the model emitted it) → received here; includes the
 *   gateway's coalescing wait (LONGRUN_FLUSH_MS).
 * - delivery latency: the event's `createdAt` (when the server made the event) → received here;
 *   what the transport adds, coalescing excluded.
 * - schedule lag: received here − (first token's stamp + index / rate): how far behind the model's
 *   own pace a token arrives, which also catches a server too busy to run the model on time.
 */
import { Agent, request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { simulatedAnswer } from '../src/providers/simulated.js';
import {
  LatencyHistogram,
  mapConcurrently,
  now,
  ON_EVENT_SUBSCRIPTION,
  START_MUTATION,
  toRunner,
  withTimeout,
  type ControlMessage,
  type LatencySummary,
  type ServerReady,
} from './common.js';

/** One measurement, as the runner asks for it. */
export interface LoadSpec {
  /** Distinct conversations, each started once. */
  conversations: number;
  /** Subscribers per conversation, each on its own connection. */
  subscribersPerConversation: number;
  /** Tokens per conversation. */
  tokens: number;
  /** Tokens per second per conversation. */
  rate: number;
  /** Conversations' first tokens are spread over this many ms, so they do not all tick together. */
  spreadMs: number;
  /** Connect and subscribe only, then wait for the runner (idle memory). */
  idle: boolean;
  /** Compare each conversation's stored lastSeq with what was received (the gateway only). */
  checkStore: boolean;
  /** Give up waiting for the turns' ends this long after every turn has started (plus their time to first token). */
  deadlineMs: number;
  /** Names the conversations of this run. */
  runId: string;
  /** Tokens of the warm-up conversation run before measuring (`WARM_UP_TOKENS` by default). */
  warmUpTokens?: number;
}

/** What one measurement found. */
export interface LoadResult {
  connections: number;
  connectErrors: number;
  conversations: number;
  startFailures: number;
  expectedTokens: number;
  deliveredTokens: number;
  /** Expected tokens that never arrived. */
  lostTokens: number;
  /** Subscriptions whose text (stamps removed) differs from the model's answer, byte for byte. */
  corruptSubscriptions: number;
  duplicateEvents: number;
  seqGaps: number;
  /** Subscriptions whose turn did not end with COMPLETE before the deadline. */
  incomplete: number;
  protocolErrors: number;
  firstProtocolError: string | undefined;
  messages: number;
  bytes: number;
  /** Conversations whose stored lastSeq differs from the last seq received; null when not checked. */
  storeMismatches: number | null;
  tokenLatency: LatencySummary;
  deliveryLatency: LatencySummary;
  scheduleLag: LatencySummary;
  /** First token received → last token received, in seconds. */
  windowSeconds: number;
  /**
   * Steady-state rates: tokens and messages received between the moments 10 % and 90 % of all
   * tokens had arrived, over that interval (so the ramp-up of starting turns and the tail of the
   * last ones do not dilute them).
   */
  tokensPerSecond: number;
  messagesPerSecond: number;
  /** CPU of this load generator over the measurement, in % of one core. */
  loadCpuPercent: number;
  connectMs: number;
  /** Time taken to start every turn, and how long tokens were already arriving meanwhile (0: none were). */
  startMs: number;
  startOverlapMs: number;
  runMs: number;
}

interface Conversation {
  id: string;
  prompt: string;
  /** Tokens the model answers with. */
  tokenCount: number;
  /** FNV-1a of the model's whole answer: what every subscriber's text must hash to. */
  textHash: number;
  intervalMs: number;
  subscriptions: Subscription[];
}

interface Subscription {
  conversation: Conversation;
  lastSeq: number;
  tokenIndex: number;
  /** FNV-1a of the text received so far (stamps removed), continued token by token. */
  textHash: number;
  firstStamp: number;
  done: boolean;
}

const FNV_OFFSET = 0x811c9dc5;

/** Continues a 32-bit FNV-1a hash over `text`'s UTF-16 code units. */
function fnv1a(hash: number, text: string): number {
  let value = hash;
  for (let index = 0; index < text.length; index += 1) {
    value ^= text.charCodeAt(index);
    value = Math.imul(value, 0x01000193);
  }
  return value >>> 0;
}

const OPEN_BRACKET = 0x27e6; // ⟦

let target: ServerReady;
let spec: LoadSpec;
let continueWaiter: (() => void) | undefined;

const tokenLatency = new LatencyHistogram();
const deliveryLatency = new LatencyHistogram();
const scheduleLag = new LatencyHistogram();
const counters = {
  deliveredTokens: 0,
  duplicateEvents: 0,
  seqGaps: 0,
  protocolErrors: 0,
  messages: 0,
  bytes: 0,
  done: 0,
  firstReceipt: Number.POSITIVE_INFINITY,
  lastReceipt: 0,
};
/** Tokens and messages received per 10 ms, from `measureStartedAt`. */
const BUCKET_MS = 10;
const tokenBuckets: number[] = [];
const messageBuckets: number[] = [];
let measureStartedAt = Number.POSITIVE_INFINITY;

function countArrival(buckets: number[], receivedAt: number, amount: number): void {
  const bucket = Math.max(0, Math.floor((receivedAt - measureStartedAt) / BUCKET_MS));
  while (buckets.length <= bucket) buckets.push(0);
  buckets[bucket]! += amount;
}

/** Rates between the moments 10 % and 90 % of the tokens had arrived. */
function steadyRates(): { tokensPerSecond: number; messagesPerSecond: number } {
  const total = tokenBuckets.reduce((sum, value) => sum + value, 0);
  if (total === 0) return { tokensPerSecond: 0, messagesPerSecond: 0 };
  let cumulative = 0;
  let low = -1;
  let high = -1;
  for (let index = 0; index < tokenBuckets.length; index += 1) {
    cumulative += tokenBuckets[index]!;
    if (low < 0 && cumulative >= total * 0.1) low = index;
    if (high < 0 && cumulative >= total * 0.9) high = index;
  }
  const seconds = ((high - low + 1) * BUCKET_MS) / 1000;
  const sum = (buckets: number[]): number => buckets.slice(low, high + 1).reduce((acc, value) => acc + value, 0);
  return { tokensPerSecond: sum(tokenBuckets) / seconds, messagesPerSecond: sum(messageBuckets) / seconds };
}
let firstProtocolError: string | undefined;
let onAllDone: (() => void) | undefined;
let subscriptionCount = 0;

process.on('message', (message: ControlMessage) => {
  if (message.type === 'run') {
    target = message.target;
    spec = message.spec as LoadSpec;
    run().then(
      (result) => toRunner({ type: 'result', result }),
      (error: unknown) => toRunner({ type: 'failed', message: (error as Error).stack ?? String(error) }),
    );
  } else if (message.type === 'continue') {
    continueWaiter?.();
  } else if (message.type === 'clock') {
    toRunner({ type: 'clock', requestId: message.requestId, now: now() });
  } else if (message.type === 'stop') {
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));

/** Tells the runner a phase was reached and waits until it has read the server's figures. */
function phase(name: string): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      continueWaiter = resolve;
      toRunner({ type: 'phase', name });
    }),
    60_000,
    `the runner did not answer phase ${name}`,
  );
}

function protocolError(text: string): void {
  counters.protocolErrors += 1;
  firstProtocolError ??= text.slice(0, 400);
}

function onEvent(subscription: Subscription, event: any, receivedAt: number): void {
  if (event === null || typeof event !== 'object') return protocolError(`event without onConversationEvent`);
  counters.messages += 1;
  countArrival(messageBuckets, receivedAt, 1);
  const seq: number = event.seq;
  if (seq <= subscription.lastSeq) {
    counters.duplicateEvents += 1;
    return;
  }
  if (seq !== subscription.lastSeq + 1) counters.seqGaps += seq - subscription.lastSeq - 1;
  subscription.lastSeq = seq;
  deliveryLatency.record(receivedAt - event.createdAt);
  const { conversation } = subscription;
  if (event.type === 'CHUNK') {
    const chunk: string = event.chunk ?? '';
    const tokensBefore = subscription.tokenIndex;
    let position = 0;
    while (position < chunk.length) {
      if (chunk.charCodeAt(position) !== OPEN_BRACKET) {
        protocolError(`a chunk does not start with a stamp: ${chunk.slice(position, position + 80)}`);
        subscription.textHash = fnv1a(subscription.textHash, chunk.slice(position));
        break;
      }
      const close = chunk.indexOf('⟧', position + 1);
      const next = chunk.indexOf('⟦', close + 1);
      const end = next < 0 ? chunk.length : next;
      const stamp = Number(chunk.slice(position + 1, close));
      const token = chunk.slice(close + 1, end);
      subscription.textHash = fnv1a(subscription.textHash, token);
      if (subscription.tokenIndex === 0) subscription.firstStamp = stamp;
      tokenLatency.record(receivedAt - stamp);
      scheduleLag.record(receivedAt - (subscription.firstStamp + subscription.tokenIndex * conversation.intervalMs));
      subscription.tokenIndex += 1;
      counters.deliveredTokens += 1;
      position = end;
    }
    countArrival(tokenBuckets, receivedAt, subscription.tokenIndex - tokensBefore);
    if (receivedAt < counters.firstReceipt) counters.firstReceipt = receivedAt;
    counters.lastReceipt = receivedAt;
  } else if (!subscription.done) {
    if (event.type !== 'COMPLETE') protocolError(`turn ended with ${event.type}: ${event.errorCode} ${event.error}`);
    subscription.done = true;
    counters.done += 1;
    if (counters.done === subscriptionCount) onAllDone?.();
  }
}

/**
 * Messages are stamped as they arrive and read (parsed, checked, counted) in the check phase that
 * follows the loop's I/O. This one process plays every client: a message read before the next one
 * is stamped would charge that next message with the reading of every message before it in the
 * same turn of the loop, hundreds when a server writes a loop turn's worth at once. That is the
 * load generator's work, not the server's, and real clients each read their own.
 */
let arrivals: Array<{ read: (data: Buffer, receivedAt: number) => void; data: Buffer; receivedAt: number }> = [];
let readScheduled = false;

function arrive(read: (data: Buffer, receivedAt: number) => void, data: Buffer): void {
  arrivals.push({ read, data, receivedAt: now() });
  if (!readScheduled) {
    readScheduled = true;
    setImmediate(readArrivals);
  }
}

function readArrivals(): void {
  readScheduled = false;
  const batch = arrivals;
  arrivals = [];
  for (const { read, data, receivedAt } of batch) read(data, receivedAt);
}

/** Opens one connection and its one subscription; resolves once the server has registered it. */
async function connect(
  subscription: Subscription,
  index: number,
  handle: (subscription: Subscription, event: any, receivedAt: number) => void = onEvent,
): Promise<WebSocket> {
  const appsync = target.protocol === 'appsync';
  const url = appsync
    ? `${target.wsUrl}?header=${Buffer.from(JSON.stringify({ host: '127.0.0.1', 'x-api-key': target.apiKey })).toString('base64')}&payload=e30=`
    : target.wsUrl;
  const socket = new WebSocket(url, appsync ? ['graphql-ws'] : ['graphql-transport-ws'], {
    perMessageDeflate: false,
    skipUTF8Validation: true,
  });
  const dataType = appsync ? 'data' : 'next';
  let waiter: { type: string; resolve: () => void } | undefined;
  const expect = (type: string): Promise<void> =>
    withTimeout(new Promise<void>((resolve) => (waiter = { type, resolve })), 30_000, `no ${type} on connection ${index}`);

  const read = (data: Buffer, receivedAt: number): void => {
    let message: any;
    try {
      message = JSON.parse(data.toString());
    } catch {
      return protocolError(`not JSON: ${data.toString().slice(0, 200)}`);
    }
    const type = message.type;
    if (type === dataType) return handle(subscription, message.payload?.data?.onConversationEvent, receivedAt);
    if (type === 'ka') return;
    const pending = waiter;
    if (pending !== undefined && pending.type === type) {
      waiter = undefined;
      return pending.resolve();
    }
    if (type === 'error' || type === 'connection_error' || (type === 'complete' && !subscription.done)) protocolError(data.toString());
  };
  socket.on('message', (data: Buffer) => {
    counters.bytes += data.length;
    arrive(read, data);
  });
  socket.on('error', (error) => protocolError(`socket error: ${error.message}`));

  await withTimeout(
    new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    }),
    30_000,
    `connection ${index} did not open`,
  );
  const acknowledged = expect('connection_ack');
  socket.send(appsync ? '{"type":"connection_init"}' : '{"type":"connection_init","payload":{}}');
  await acknowledged;
  const id = `s${index}`;
  const request = { query: ON_EVENT_SUBSCRIPTION, variables: { conversationId: subscription.conversation.id } };
  if (appsync) {
    const started = expect('start_ack');
    socket.send(
      JSON.stringify({
        id,
        type: 'start',
        payload: { data: JSON.stringify(request), extensions: { authorization: { host: '127.0.0.1', 'x-api-key': target.apiKey } } },
      }),
    );
    await started;
  } else {
    // graphql-transport-ws has no subscribe acknowledgement; a ping sent after the subscribe is
    // answered once the server has read it (the runner also waits before starting turns).
    const ponged = expect('pong');
    socket.send(JSON.stringify({ id, type: 'subscribe', payload: request }));
    socket.send('{"type":"ping"}');
    await ponged;
  }
  return socket;
}

// node:http with keep-alive rather than fetch: on this kind of machine undici's fetch made the
// start of a thousand turns take seconds, which is the load generator's cost, not the server's.
const agent = new Agent({ keepAlive: true, maxSockets: 32 });

/** POSTs a GraphQL request to the server with its API key; resolves with the status and parsed body. */
function postGraphQL(body: unknown): Promise<{ status: number; body: any }> {
  const payload = JSON.stringify(body);
  return withTimeout(
    new Promise((resolve, reject) => {
      const request = httpRequest(
        target.httpUrl,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-api-key': target.apiKey },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            try {
              resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) });
            } catch {
              resolve({ status: response.statusCode ?? 0, body: text });
            }
          });
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      request.end(payload);
    }),
    30_000,
    'HTTP request timed out',
  );
}

async function startConversation(conversation: Conversation): Promise<boolean> {
  try {
    const response = await postGraphQL({ query: START_MUTATION, variables: { input: { prompt: conversation.prompt, conversationId: conversation.id } } });
    if (response.body?.data?.startConversation?.status === 'STARTED') return true;
    protocolError(`startConversation: HTTP ${response.status} ${JSON.stringify(response.body).slice(0, 300)}`);
  } catch (error) {
    protocolError(`startConversation: ${(error as Error).message}`);
  }
  return false;
}

async function storedLastSeq(conversationId: string): Promise<number | undefined> {
  const response = await postGraphQL({ query: 'query Last($id: ID!) { conversation(conversationId: $id) { lastSeq } }', variables: { id: conversationId } });
  return response.body?.data?.conversation?.lastSeq;
}

/**
 * Tokens of the warm-up conversation, unless the spec says otherwise. With 200, S1 measured a
 * gateway whose token path ran mostly unoptimised: V8 optimised 83 of its functions in the whole
 * run (`--trace-opt`), 31 of them during the ten measured seconds, as 100 tokens a second slowly
 * made them hot. With 3,000 it optimised 137, 113 of them by the end of the warm-up, and S1's
 * token p50 fell from 0.42–0.45 ms to 0.30–0.44 ms (three runs each).
 */
const WARM_UP_TOKENS = 3000;

/**
 * Runs one conversation with its own subscriber before measuring (1,000 tokens a second), so that
 * neither the server nor this process is measured while its JIT compiler is still warming up.
 */
async function warmUp(index: number): Promise<void> {
  const tokens = spec.warmUpTokens ?? WARM_UP_TOKENS;
  const prompt = `[stamp][tokens=${tokens}][rate=1000][ttft=0] warm-up ${spec.runId}`;
  const conversation: Conversation = {
    id: `${spec.runId}-warm-up`,
    prompt,
    tokenCount: tokens,
    textHash: FNV_OFFSET,
    intervalMs: 1,
    subscriptions: [],
  };
  const subscription: Subscription = { conversation, lastSeq: 0, tokenIndex: 0, textHash: FNV_OFFSET, firstStamp: Number.NaN, done: false };
  let warmUpDone: (() => void) | undefined;
  const ended = new Promise<void>((resolve) => (warmUpDone = resolve));
  // The warm-up's events are not counted; only its end is awaited.
  const socket = await connect(subscription, index, (_subscription, event) => {
    if (event?.type !== 'CHUNK') warmUpDone?.();
  });
  if (await startConversation(conversation)) await withTimeout(ended, 20_000, 'warm-up').catch(() => undefined);
  socket.terminate();
}

async function run(): Promise<LoadResult> {
  // Every turn is started before the first token is due (its time to first token covers the time
  // the starts take), so the start requests neither disturb this process while it measures nor
  // show up as latency: what is measured is streaming. `startOverlapMs` reports when that failed.
  const startBudgetMs = 300 + 3 * spec.conversations;
  const conversations: Conversation[] = Array.from({ length: Math.max(1, spec.conversations) }, (_, index) => {
    const ttft = startBudgetMs + (spec.conversations > 1 ? Math.floor((spec.spreadMs * index) / spec.conversations) : 0);
    const prompt = `[stamp][tokens=${spec.tokens}][rate=${spec.rate}][ttft=${ttft}] benchmark ${spec.runId} conversation ${index}`;
    return {
      id: `${spec.runId}-${index}`,
      prompt,
      tokenCount: spec.idle ? 0 : spec.tokens,
      // Computed once and dropped: holding every expected token of a large run would take GBs.
      textHash: spec.idle ? FNV_OFFSET : fnv1a(FNV_OFFSET, simulatedAnswer({ messages: [{ role: 'user', content: prompt }] }).tokens.join('')),
      intervalMs: spec.rate > 0 ? 1000 / spec.rate : 0,
      subscriptions: [],
    };
  });
  const subscriptions: Subscription[] = [];
  for (const conversation of conversations) {
    for (let index = 0; index < spec.subscribersPerConversation; index += 1) {
      const subscription = { conversation, lastSeq: 0, tokenIndex: 0, textHash: FNV_OFFSET, firstStamp: Number.NaN, done: false };
      conversation.subscriptions.push(subscription);
      subscriptions.push(subscription);
    }
  }
  subscriptionCount = subscriptions.length;

  const connectStarted = now();
  let connectErrors = 0;
  const sockets = (
    await mapConcurrently(subscriptions, 64, (subscription, index) =>
      connect(subscription, index).catch((error: unknown) => {
        connectErrors += 1;
        protocolError(`connect: ${(error as Error).message}`);
        return undefined;
      }),
    )
  ).filter((socket): socket is WebSocket => socket !== undefined);
  const connectMs = now() - connectStarted;
  if (connectErrors > 0) throw new Error(`${connectErrors} of ${subscriptions.length} connections failed; first: ${firstProtocolError}`);
  // Lets graphql-ws finish registering the last subscriptions (its subscribe is asynchronous).
  await new Promise((resolve) => setTimeout(resolve, 200));
  await phase('subscribed');

  let startFailures = 0;
  let startMs = 0;
  let startOverlapMs = 0;
  let runMs = 0;
  let cpuPercent = 0;
  if (!spec.idle) {
    await warmUp(subscriptions.length);
    const allDone = new Promise<void>((resolve) => {
      onAllDone = resolve;
      if (counters.done === subscriptionCount) resolve();
    });
    const startsBegan = now();
    measureStartedAt = startsBegan;
    const started = await mapConcurrently(conversations, 32, (conversation) => startConversation(conversation));
    startFailures = started.filter((ok) => !ok).length;
    const startsEnded = now();
    startMs = startsEnded - startsBegan;
    startOverlapMs = Math.max(0, startsEnded - counters.firstReceipt);
    // The measured window (the server's CPU, this process's) opens when the first token is due, so
    // that the figures are those of streaming: opened as the starts end, it held the 1-3 s the
    // turns wait for their first token too, and every CPU figure read about 15 % low.
    const firstDue = startsBegan + startBudgetMs;
    if (!spec.idle && now() < firstDue) await new Promise((resolve) => setTimeout(resolve, firstDue - now()));
    await phase('measure-start');
    const cpuBefore = process.cpuUsage();
    const runStarted = now();
    await withTimeout(allDone, spec.deadlineMs + startBudgetMs, 'deadline').catch(() => undefined);
    runMs = now() - runStarted;
    const cpu = process.cpuUsage(cpuBefore);
    cpuPercent = ((cpu.user + cpu.system) / 1000 / runMs) * 100;
    await phase('measure-end');
  }

  let storeMismatches: number | null = null;
  if (spec.checkStore && !spec.idle) {
    const stored = await mapConcurrently(conversations, 16, (conversation) => storedLastSeq(conversation.id).catch(() => undefined));
    storeMismatches = conversations.filter((conversation, index) =>
      conversation.subscriptions.some((subscription) => subscription.lastSeq !== stored[index]),
    ).length;
  }
  for (const socket of sockets) socket.terminate();
  agent.destroy();

  const expectedTokens = spec.idle ? 0 : subscriptions.reduce((sum, subscription) => sum + subscription.conversation.tokenCount, 0);
  const lostTokens = subscriptions.reduce((sum, subscription) => sum + Math.max(0, subscription.conversation.tokenCount - subscription.tokenIndex), 0);
  const corruptSubscriptions = spec.idle
    ? 0
    : subscriptions.filter((subscription) => subscription.textHash !== subscription.conversation.textHash).length;
  const windowSeconds = counters.lastReceipt > counters.firstReceipt ? (counters.lastReceipt - counters.firstReceipt) / 1000 : 0;
  return {
    connections: sockets.length,
    connectErrors,
    conversations: spec.idle ? 0 : conversations.length,
    startFailures,
    expectedTokens,
    deliveredTokens: counters.deliveredTokens,
    lostTokens: spec.idle ? 0 : lostTokens,
    corruptSubscriptions,
    duplicateEvents: counters.duplicateEvents,
    seqGaps: counters.seqGaps,
    incomplete: spec.idle ? 0 : subscriptions.filter((subscription) => !subscription.done).length,
    protocolErrors: counters.protocolErrors,
    firstProtocolError,
    messages: counters.messages,
    bytes: counters.bytes,
    storeMismatches,
    tokenLatency: tokenLatency.summary(),
    deliveryLatency: deliveryLatency.summary(),
    scheduleLag: scheduleLag.summary(),
    windowSeconds,
    ...steadyRates(),
    loadCpuPercent: cpuPercent,
    connectMs,
    startMs,
    startOverlapMs,
    runMs,
  };
}
