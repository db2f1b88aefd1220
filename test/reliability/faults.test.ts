/**
 * The reliability suite: injects each fault and asserts what the client received and what the store
 * holds. (Restarts after `kill -9` are in test/gateway/restart.test.ts; publisher retries in
 * test/publisher/appsync.test.ts.)
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { createSqliteStore } from '../../src/store/sqlite.js';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { EVENTS_QUERY, ON_EVENT_SUBSCRIPTION, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { answerSteps, startFakeOpenAI } from '../providers/fake-openai.js';

const folder = mkdtempSync(join(tmpdir(), 'longrun-faults-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/** Subscribes, starts a turn, and returns what the subscriber received and what the store holds. */
async function runTurn(test: TestGateway, prompt: string, during?: (client: RawAppSyncClient) => Promise<void>) {
  const conversationId = randomUUID();
  const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
  await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
  await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
  await during?.(client);
  const received = await eventsUntilEnd(client, 's', 30_000);
  client.close();
  const stored = (await test.graphql(EVENTS_QUERY, { conversationId })).body.data?.conversationEvents;
  return { conversationId, received, stored };
}

const chunksOf = (events: Array<{ type: string; chunk: string | null }>) => events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');

describe('faults', () => {
  it('a model that stops sending ends the turn with ERROR StallTimeout; the text so far stays stored', async () => {
    const test = await startTestGateway({ LONGRUN_STALL_TIMEOUT_MS: '200' });
    try {
      const { received, stored } = await runTurn(test, 'goes quiet [stall-after=25] [tokens=100]');
      expect(received[received.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'StallTimeout' });
      expect(chunksOf(received).length).toBeGreaterThan(0);
      expect(stored).toEqual(received);
    } finally {
      await test.stop();
    }
  });

  it('a provider connection reset mid-stream ends the turn with ERROR; the text already sent stays stored', async () => {
    const fake = await startFakeOpenAI();
    const test = await startTestGateway({ LONGRUN_PROVIDER: 'openai', OPENAI_BASE_URL: fake.baseUrl });
    try {
      fake.enqueue({ steps: [...answerSteps(['first part, ', 'second part']).slice(0, 2), { reset: true, delayMs: 20 }] });
      const { received, stored } = await runTurn(test, 'reset me');
      expect(chunksOf(received)).toBe('first part, second part');
      expect(received[received.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'ConnectionReset' });
      expect(stored).toEqual(received);
    } finally {
      await test.stop();
      await fake.close();
    }
  });

  it('a locked database fails the turn with ERROR StoreError, leaves no half-written event, and the gateway keeps serving', async () => {
    const path = join(folder, 'locked.db');
    const test = await startTestGateway({ LONGRUN_DB: path, LONGRUN_SIM_TOKENS_PER_SEC: '200' });
    // The file the gateway appends events to (the database file holds them a second later).
    const intruder = new Database(`${path}-incoming`);
    try {
      const { received } = await runTurn(test, 'long [tokens=100000]', async (client) => {
        await client.until(() => (client.data('s').length >= 3 ? true : undefined));
        // Another process takes the write lock and holds it past the gateway's busy timeout (2 s).
        intruder.exec('BEGIN EXCLUSIVE');
        setTimeout(() => intruder.exec('COMMIT'), 3000);
      });
      const last = received[received.length - 1];
      expect(last).toMatchObject({ type: 'ERROR', errorCode: 'StoreError' });
      expect(last.error).toContain('database is locked');
      // Everything the client received is stored, nothing more, and the ERROR was stored once the
      // lock was released.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const after = (await test.graphql(EVENTS_QUERY, { conversationId: received[0].conversationId })).body.data.conversationEvents;
      expect(after).toEqual(received);
      const healthy = await runTurn(test, 'after the lock [tokens=20]');
      expect(healthy.received[healthy.received.length - 1].type).toBe('COMPLETE');
    } finally {
      intruder.close();
      await test.stop();
    }
  });

  it('an unexpected error reaches the client as "internal error" with an id the log carries', async () => {
    const lines: string[] = [];
    const store = createSqliteStore({ path: ':memory:' });
    const broken = { ...store, getConversation: async () => Promise.reject(new Error('secret detail of a bug')) };
    const test = await startTestGateway({}, { store: broken, logger: createLogger('info', (line) => lines.push(line)) });
    try {
      const result = await test.graphql('query { conversation(conversationId: "x") { status } }');
      const error = result.body.errors[0];
      expect(error.errorType).toBe('InternalFailure');
      expect(error.message).toMatch(/^internal error \(id [0-9a-f-]{36}\)$/);
      expect(JSON.stringify(result.body)).not.toContain('secret detail');
      const id = /id ([0-9a-f-]{36})/.exec(error.message)![1];
      const logged = lines.map((line) => JSON.parse(line)).find((record) => record.errorId === id);
      expect(logged).toMatchObject({ level: 'error', event: 'unexpected-error' });
      expect(JSON.stringify(logged)).toContain('secret detail of a bug');
    } finally {
      await test.stop();
    }
  });
});

describe('logs', () => {
  it('are one JSON object per line, with conversation id and turn, and no prompt text unless asked', async () => {
    for (const logPrompts of ['false', 'true']) {
      const lines: string[] = [];
      const test = await startTestGateway({ LONGRUN_LOG_PROMPTS: logPrompts }, { logger: createLogger('info', (line) => lines.push(line)) });
      try {
        const { conversationId } = await runTurn(test, 'a private prompt about zebras [tokens=5]');
        const records = lines.map((line) => JSON.parse(line));
        expect(lines.every((line) => line.endsWith('\n') && !line.slice(0, -1).includes('\n'))).toBe(true);
        const started = records.find((record) => record.event === 'turn-started' && record.conversationId === conversationId);
        const ended = records.find((record) => record.event === 'turn-ended' && record.conversationId === conversationId);
        expect(started).toMatchObject({ turn: 1, level: 'info' });
        expect(ended).toMatchObject({ turn: 1, type: 'COMPLETE' });
        expect(lines.join('').includes('zebras')).toBe(logPrompts === 'true');
      } finally {
        await test.stop();
      }
    }
  });
});

describe('retention', () => {
  it('prunes conversations older than LONGRUN_RETENTION_DAYS at start, keeping recent ones', async () => {
    const path = join(folder, 'retention.db');
    const day = 24 * 60 * 60 * 1000;
    const past = await startTestGateway({ LONGRUN_DB: path, LONGRUN_RETENTION_DAYS: '0' }, { clock: () => Date.now() - 3 * day });
    const old = await runTurn(past, 'old [tokens=3]');
    await past.stop();
    const present = await startTestGateway({ LONGRUN_DB: path, LONGRUN_RETENTION_DAYS: '0' });
    const recent = await runTurn(present, 'recent [tokens=3]');
    await present.stop();

    const pruning = await startTestGateway({ LONGRUN_DB: path, LONGRUN_RETENTION_DAYS: '2' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const gone = await pruning.graphql(EVENTS_QUERY, { conversationId: old.conversationId });
      expect(gone.body.errors[0].errorType).toBe('NotFoundException');
      const kept = await pruning.graphql(EVENTS_QUERY, { conversationId: recent.conversationId });
      expect(kept.body.data.conversationEvents).toEqual(recent.received);
    } finally {
      await pruning.stop();
    }
  });
});
