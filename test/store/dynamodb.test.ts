/**
 * The DynamoDB store against DynamoDB Local (one JVM for the whole file): the shared conformance
 * suite, then what only this store has (message parts, TTL, the item layout the AppSync resolvers
 * rely on, idempotent retries, races between two `beginTurn`s).
 */
import { randomUUID } from 'node:crypto';
import { GetItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeEvent } from '../../src/domain.js';
import { ConflictError, StoreError } from '../../src/errors.js';
import { createDynamoDbStore, messageSortKey, splitMessage } from '../../src/store/dynamodb.js';
import type { Store } from '../../src/store/types.js';
import { createLongrunTables, dynamoDbLocalUnavailable, startDynamoDbLocal, type DynamoDbLocal } from '../helpers/dynamodb-local.js';
import { describeStoreConformance } from './store.suite.js';

const unavailable = dynamoDbLocalUnavailable();

describe('splitMessage', () => {
  it('cuts long text into parts that join back byte for byte, never inside a surrogate pair', () => {
    const text = `${'a'.repeat(9)}🦊${'b'.repeat(5)}`;
    const parts = splitMessage(text, 10);
    expect(parts.join('')).toBe(text);
    expect(parts[0]).toBe('a'.repeat(9));
    expect(parts.every((part) => part.length <= 10)).toBe(true);
    expect(splitMessage('')).toEqual(['']);
    expect(splitMessage('🦊', 1)).toEqual(['🦊']);
  });
});

if (unavailable !== undefined) {
  describe.skip(`DynamoDB store (skipped: ${unavailable})`, () => {
    it('passes the store conformance suite against DynamoDB Local', () => undefined);
  });
} else {
  let local: Promise<DynamoDbLocal> | undefined;
  const started = (): Promise<DynamoDbLocal> => (local ??= startDynamoDbLocal());
  afterAll(async () => {
    await (await local)?.stop();
  });

  describeStoreConformance('dynamodb (DynamoDB Local)', {
    prunesByTtl: true,
    create: async () => {
      const { client } = await started();
      return createDynamoDbStore({ client, tables: await createLongrunTables(client) });
    },
  });

  describe('DynamoDB store specifics', () => {
    const now = 1_750_000_000_000;
    let dynamo: DynamoDbLocal;
    let tables: { conversations: string; events: string };
    let store: Store;
    beforeAll(async () => {
      dynamo = await started();
      tables = await createLongrunTables(dynamo.client);
      store = createDynamoDbStore({ client: dynamo.client, tables, ttlDays: 3, now: () => now });
    });
    afterAll(async () => {
      await store?.close();
    });

    it('stores a message longer than one item in parts and returns it whole', async () => {
      const id = randomUUID();
      const prompt = `question ${'🦊'.repeat(60_000)}`;
      const answer = `${'星空 '.repeat(90_000)}end`;
      await store.beginTurn({ conversationId: id, prompt, now: 1 });
      await store.endTurn({
        event: makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'COMPLETE', stopReason: 'end_turn', createdAt: 2 }),
        assistantText: answer,
      });
      expect((await store.getConversation(id))?.messages).toEqual([
        { turn: 1, role: 'user', content: prompt },
        { turn: 1, role: 'assistant', content: answer },
      ]);
      await store.beginTurn({ conversationId: id, prompt: 'next', now: 3 });
      expect((await store.turnContext(id, 2)).history.map((message) => message.content)).toEqual([prompt, answer]);
      const parts = await dynamo.client.send(
        new QueryCommand({
          TableName: tables.conversations,
          KeyConditionExpression: 'conversationId = :id AND begins_with(sk, :prefix)',
          ExpressionAttributeValues: { ':id': { S: id }, ':prefix': { S: 'MESSAGE#0000000001#1#' } },
        }),
      );
      expect(parts.Items?.length).toBe(3);
    });

    it('writes the item layout the AppSync resolvers read, with expiresAt from ttlDays', async () => {
      const id = randomUUID();
      const expiresAt = Math.floor(now / 1000) + 3 * 86_400;
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 10, modelId: 'model-a', owner: 'alice' });
      await store.appendEvents([makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CHUNK', chunk: 'x', createdAt: 11 })]);
      await store.endTurn({
        event: makeEvent({
          conversationId: id,
          turn: 1,
          seq: 2,
          type: 'COMPLETE',
          stopReason: 'end_turn',
          usage: { inputTokens: 1, outputTokens: 2 },
          createdAt: 12,
        }),
        assistantText: 'x',
      });
      const meta = await dynamo.client.send(
        new GetItemCommand({ TableName: tables.conversations, Key: { conversationId: { S: id }, sk: { S: 'CONVERSATION' } } }),
      );
      expect(meta.Item).toEqual({
        conversationId: { S: id },
        sk: { S: 'CONVERSATION' },
        owner: { S: 'alice' },
        status: { S: 'COMPLETE' },
        turn: { N: '1' },
        createdAt: { N: '10' },
        updatedAt: { N: '12' },
        turns: {
          L: [
            {
              M: {
                turn: { N: '1' },
                status: { S: 'COMPLETE' },
                modelId: { S: 'model-a' },
                startedAt: { N: '10' },
                endedAt: { N: '12' },
              },
            },
          ],
        },
        expiresAt: { N: String(expiresAt) },
      });
      const message = await dynamo.client.send(
        new GetItemCommand({ TableName: tables.conversations, Key: { conversationId: { S: id }, sk: { S: messageSortKey(1, 'user', 0) } } }),
      );
      expect(message.Item).toEqual({
        conversationId: { S: id },
        sk: { S: 'MESSAGE#0000000001#0#000' },
        turn: { N: '1' },
        role: { S: 'user' },
        part: { N: '0' },
        content: { S: 'p' },
        expiresAt: { N: String(expiresAt) },
      });
      const terminal = await dynamo.client.send(
        new GetItemCommand({ TableName: tables.events, Key: { conversationId: { S: id }, seq: { N: '2' } } }),
      );
      expect(terminal.Item).toEqual({
        conversationId: { S: id },
        seq: { N: '2' },
        turn: { N: '1' },
        type: { S: 'COMPLETE' },
        stopReason: { S: 'end_turn' },
        usage: { M: { inputTokens: { N: '1' }, outputTokens: { N: '2' } } },
        createdAt: { N: '12' },
        expiresAt: { N: String(expiresAt) },
      });
    });

    it('accepts a retried write of the identical event and refuses a different one', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      const event = makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CHUNK', chunk: 'same', createdAt: 5 });
      await store.appendEvents([event]);
      await store.appendEvents([{ ...event }]);
      await expect(store.appendEvents([{ ...event, chunk: 'other' }])).rejects.toBeInstanceOf(StoreError);
      expect((await store.listEvents(id, 0)).map((stored) => stored.chunk)).toEqual(['same']);
    });

    it('writes a batch of events all or none', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      const chunk = (seq: number) => makeEvent({ conversationId: id, turn: 1, seq, type: 'CHUNK', chunk: `c${seq}`, createdAt: seq });
      await store.appendEvents([chunk(2)]);
      await expect(store.appendEvents([chunk(1), chunk(2), chunk(3)])).rejects.toBeInstanceOf(StoreError);
      expect((await store.listEvents(id, 0)).map((event) => event.seq)).toEqual([2]);
      await store.appendEvents([chunk(3), chunk(4), chunk(5)]);
      expect((await store.listEvents(id, 0)).map((event) => event.seq)).toEqual([2, 3, 4, 5]);
    });

    it('lets exactly one of two racing beginTurns win, for a new and for an existing conversation', async () => {
      const fresh = randomUUID();
      const first = await Promise.allSettled([
        store.beginTurn({ conversationId: fresh, prompt: 'a', now: 1 }),
        store.beginTurn({ conversationId: fresh, prompt: 'b', now: 1 }),
      ]);
      expect(first.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      expect(first.find((result) => result.status === 'rejected')?.reason).toBeInstanceOf(ConflictError);
      expect((await store.getConversation(fresh))?.messages).toHaveLength(1);

      await store.endTurn({ event: makeEvent({ conversationId: fresh, turn: 1, seq: 1, type: 'CANCELLED', createdAt: 2 }), assistantText: '' });
      const second = await Promise.allSettled([
        store.beginTurn({ conversationId: fresh, prompt: 'c', now: 3 }),
        store.beginTurn({ conversationId: fresh, prompt: 'd', now: 3 }),
      ]);
      expect(second.filter((result) => result.status === 'fulfilled').map((result) => (result as PromiseFulfilledResult<number>).value)).toEqual([2]);
      const conversation = await store.getConversation(fresh);
      expect(conversation?.turns.map((turn) => turn.turn)).toEqual([1, 2]);
      expect(conversation?.messages.filter((message) => message.turn === 2)).toHaveLength(1);
    });

    it('pages through more events than one DynamoDB page holds', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      const text = 'y'.repeat(100_000);
      for (let seq = 1; seq <= 12; seq += 1) {
        await store.appendEvents([makeEvent({ conversationId: id, turn: 1, seq, type: 'CHUNK', chunk: text, createdAt: seq })]);
      }
      // 12 × 100 KB is more than a Query's 1 MB page.
      expect((await store.listEvents(id, 0)).map((event) => event.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      expect((await store.listEvents(id, 3, 5)).map((event) => event.seq)).toEqual([4, 5, 6, 7, 8]);
      expect((await store.turnContext(id, 1)).lastSeq).toBe(12);
    });
  });
}
