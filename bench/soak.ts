/**
 * Soak: hundreds of concurrent conversations for minutes, through a TCP proxy that cuts client
 * connections at random, with clients that also abandon their stream and resume from their last
 * `seq`. At the end every conversation's received events are checked against the store.
 *
 *   npx tsx bench/soak.ts [--conversations 300] [--seconds 180] [--drop-ms 250]
 *
 * Prints events stored (sent), received, lost and duplicated, and writes
 * bench/results/soak-latest.json. Everything runs on 127.0.0.1 and stops by itself.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { createClient, type ConversationEvent, type WebSocketConstructor } from '../src/client/index.js';

const { values } = parseArgs({
  options: {
    conversations: { type: 'string', default: '300' },
    seconds: { type: 'string', default: '180' },
    'drop-ms': { type: 'string', default: '250' },
  },
});
const CONVERSATIONS = Number(values.conversations);
const SECONDS = Number(values.seconds);
const DROP_MS = Number(values['drop-ms']);
const API_KEY = 'da2-soaksoaksoaksoaksoaksoakso';

interface Tally {
  turns: number;
  turnsCompleted: number;
  stored: number;
  received: number;
  lost: number;
  duplicated: number;
  textMismatches: number;
  resumes: number;
  clientErrors: Record<string, number>;
}

async function main(): Promise<void> {
  const folder = mkdtempSync(join(tmpdir(), 'longrun-soak-'));
  const gateway = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/serve-entry.ts'], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      LONGRUN_DB: join(folder, 'soak.db'),
      LONGRUN_API_KEY: API_KEY,
      LONGRUN_LOG_LEVEL: 'warn',
      LONGRUN_SIM_TTFT_MS: '50',
      LONGRUN_SIM_TOKENS_PER_SEC: '30',
      LONGRUN_MAX_CONCURRENT_TURNS: String(CONVERSATIONS * 2),
      LONGRUN_MAX_TURNS_PER_PRINCIPAL: String(CONVERSATIONS * 2),
      LONGRUN_TURNS_PER_MINUTE: '1000000',
      LONGRUN_KEEPALIVE_MS: '5000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stopAll: Array<() => void> = [() => gateway.kill('SIGTERM')];
  const hardStop = setTimeout(() => {
    console.error('soak: time limit passed, stopping');
    for (const stop of stopAll) stop();
    process.exit(2);
  }, (SECONDS + 120) * 1000);
  hardStop.unref();

  try {
    const graphqlUrl = await new Promise<string>((resolve, reject) => {
      let output = '';
      gateway.stdout!.on('data', (data: Buffer) => {
        output += data.toString();
        const match = /GraphQL:\s+(\S+)/.exec(output);
        if (match) resolve(match[1]!);
      });
      gateway.on('exit', () => reject(new Error(`gateway exited:\n${output}`)));
    });
    const gatewayPort = Number(new URL(graphqlUrl).port);

    // The proxy clients connect through; it cuts a random connection every DROP_MS.
    const pairs = new Set<[Socket, Socket]>();
    let drops = 0;
    const proxy = createServer((inbound) => {
      const outbound = connect(gatewayPort, '127.0.0.1');
      const pair: [Socket, Socket] = [inbound, outbound];
      pairs.add(pair);
      inbound.pipe(outbound).pipe(inbound);
      const end = (): void => {
        pairs.delete(pair);
        inbound.destroy();
        outbound.destroy();
      };
      inbound.on('error', end).on('close', end);
      outbound.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyPort = (proxy.address() as { port: number }).port;
    stopAll.push(() => proxy.close());
    const dropper = setInterval(() => {
      const all = [...pairs];
      const victim = all[Math.floor(Math.random() * all.length)];
      if (victim) {
        drops += 1;
        victim[0].destroy();
        victim[1].destroy();
      }
    }, DROP_MS);
    stopAll.push(() => clearInterval(dropper));

    const tally: Tally = { turns: 0, turnsCompleted: 0, stored: 0, received: 0, lost: 0, duplicated: 0, textMismatches: 0, resumes: 0, clientErrors: {} };
    const deadline = Date.now() + SECONDS * 1000;
    const started = Date.now();
    const viaProxy = `http://127.0.0.1:${proxyPort}/graphql`;

    const runConversation = async (index: number): Promise<void> => {
      const client = createClient({
        url: viaProxy,
        apiKey: API_KEY,
        WebSocket: WebSocket as unknown as WebSocketConstructor,
        reconnect: { maxElapsedMs: 60_000, initialDelayMs: 50, maxDelayMs: 1000 },
        backfill: { gapMs: 300, idleMs: 5000 },
      });
      const received = new Map<number, ConversationEvent>();
      let conversationId: string | undefined;
      try {
        while (Date.now() < deadline) {
          tally.turns += 1;
          const prompt = `soak ${index} turn ${tally.turns} [tokens=${100 + Math.floor(Math.random() * 300)}]`;
          const abandon = new AbortController();
          const stream = client.chat(prompt, { ...(conversationId ? { conversationId } : {}), signal: abandon.signal });
          conversationId = stream.conversationId;
          // One turn in four, the client walks away mid-answer and resumes from its last seq.
          const resumeAt = Math.random() < 0.25 ? 5 + Math.floor(Math.random() * 20) : Number.POSITIVE_INFINITY;
          let count = 0;
          let lastSeq = 0;
          let ended = false;
          try {
            for await (const event of stream) {
              record(received, event, tally);
              lastSeq = event.seq;
              count += 1;
              if (event.type !== 'CHUNK') ended = true;
              if (count === resumeAt) {
                abandon.abort();
                break;
              }
            }
          } catch (error) {
            if (!abandon.signal.aborted) throw error;
          }
          if (!ended) {
            tally.resumes += 1;
            for await (const event of client.resume(conversationId, { afterSeq: lastSeq })) record(received, event, tally);
          }
          tally.turnsCompleted += 1;
        }
      } catch (error) {
        const code = (error as { code?: string }).code ?? (error as Error).message;
        tally.clientErrors[code] = (tally.clientErrors[code] ?? 0) + 1;
      } finally {
        client.close();
      }
      if (conversationId) await verify(graphqlUrl, conversationId, received, tally);
    };

    await Promise.all(Array.from({ length: CONVERSATIONS }, (_, index) => runConversation(index)));
    const seconds = (Date.now() - started) / 1000;
    const summary = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
      settings: { conversations: CONVERSATIONS, seconds: SECONDS, dropEveryMs: DROP_MS },
      connectionsCut: drops,
      ...tally,
      elapsedSeconds: Math.round(seconds),
    };
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/soak-latest.json', `${JSON.stringify(summary, null, 2)}\n`);
    console.log(`
| soak | value |
|---|---|
| conversations | ${CONVERSATIONS} |
| duration | ${Math.round(seconds)} s |
| connections cut by the proxy | ${drops} |
| turns started / finished | ${tally.turns} / ${tally.turnsCompleted} |
| streams abandoned and resumed | ${tally.resumes} |
| events stored (sent) | ${tally.stored} |
| events received | ${tally.received} |
| events lost | ${tally.lost} |
| events duplicated | ${tally.duplicated} |
| text mismatches | ${tally.textMismatches} |
| client errors | ${JSON.stringify(tally.clientErrors)} |
`);
    process.exitCode = tally.lost === 0 && tally.duplicated === 0 && tally.textMismatches === 0 ? 0 : 1;
  } finally {
    for (const stop of stopAll) stop();
    rmSync(folder, { recursive: true, force: true });
  }
}

function record(received: Map<number, ConversationEvent>, event: ConversationEvent, tally: Tally): void {
  if (received.has(event.seq)) tally.duplicated += 1;
  else tally.received += 1;
  received.set(event.seq, event);
}

/** Compares what a conversation's client received with what the store holds (read directly, not through the proxy). */
async function verify(graphqlUrl: string, conversationId: string, received: Map<number, ConversationEvent>, tally: Tally): Promise<void> {
  const stored: ConversationEvent[] = [];
  for (let afterSeq = 0; ; ) {
    const response = await fetch(graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
      body: JSON.stringify({
        query: 'query($id: ID!, $after: Int) { conversationEvents(conversationId: $id, afterSeq: $after) { seq type chunk } }',
        variables: { id: conversationId, after: afterSeq },
      }),
    });
    const body = (await response.json()) as { data: { conversationEvents: ConversationEvent[] } | null; errors?: Array<{ errorType: string }> };
    // A conversation whose first start never reached the gateway does not exist: nothing was sent.
    if (body.data === null) return;
    const page = body.data.conversationEvents;
    stored.push(...page);
    if (page.length < 1000) break;
    afterSeq = page[page.length - 1]!.seq;
  }
  // Events of a turn still running when the soak ended were never expected to arrive.
  const lastReceived = Math.max(0, ...received.keys());
  for (const event of stored) {
    if (event.seq > lastReceived) continue;
    tally.stored += 1;
    const got = received.get(event.seq);
    if (!got) tally.lost += 1;
    else if (got.chunk !== event.chunk || got.type !== event.type) tally.textMismatches += 1;
  }
}

await main();
