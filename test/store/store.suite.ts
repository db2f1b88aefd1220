/**
 * The store conformance suite: every Store implementation (SQLite, DynamoDB) runs these cases.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeEvent, type ConversationEvent } from '../../src/domain.js';
import { ConflictError, StoreError, UnauthorizedError } from '../../src/errors.js';
import type { Store } from '../../src/store/types.js';

/** Creates a fresh store for the suite and disposes of it afterwards. */
export interface StoreFixture {
  create(): Promise<Store>;
  /** The store leaves expiry to its database's TTL, so `pruneConversations` deletes nothing itself. */
  prunesByTtl?: boolean;
  dispose?(): Promise<void>;
}

const chunk = (conversationId: string, turn: number, seq: number, text: string): ConversationEvent =>
  makeEvent({ conversationId, turn, seq, type: 'CHUNK', chunk: text, createdAt: 1_700_000_000_000 + seq });

export function describeStoreConformance(name: string, fixture: StoreFixture): void {
  describe(`store conformance: ${name}`, () => {
    let store: Store;
    beforeAll(async () => {
      store = await fixture.create();
    });
    afterAll(async () => {
      await store?.close();
      await fixture.dispose?.();
    });

    it('starts a new conversation at turn 1 with no history and lastSeq 0', async () => {
      const id = randomUUID();
      const turn = await store.beginTurn({ conversationId: id, prompt: 'hello', now: 1000, modelId: 'm1' });
      expect(turn).toBe(1);
      expect(await store.turnContext(id, 1)).toEqual({ history: [], lastSeq: 0 });
      const conversation = await store.getConversation(id);
      expect(conversation).toMatchObject({
        conversationId: id,
        status: 'RUNNING',
        lastSeq: 0,
        turns: [{ turn: 1, status: 'RUNNING', modelId: 'm1', startedAt: 1000, endedAt: null }],
        messages: [{ turn: 1, role: 'user', content: 'hello' }],
      });
    });

    it('refuses a second turn while one runs, with ConflictError', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'one', now: 1 });
      await expect(store.beginTurn({ conversationId: id, prompt: 'two', now: 2 })).rejects.toBeInstanceOf(ConflictError);
      const conversation = await store.getConversation(id);
      expect(conversation?.messages).toEqual([{ turn: 1, role: 'user', content: 'one' }]);
    });

    it('stores events byte for byte and lists them after a seq, in order', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      const texts = ['line one\nline two', ' "quoted" \\ back', ' 🦊 星空 café', ''.padEnd(5000, 'x')];
      await store.appendEvents(texts.slice(0, 2).map((text, index) => chunk(id, 1, index + 1, text)));
      await store.appendEvents([chunk(id, 1, 3, texts[2]!)]);
      await store.appendEvents([chunk(id, 1, 4, texts[3]!)]);
      const all = await store.listEvents(id, 0);
      expect(all.map((event) => event.seq)).toEqual([1, 2, 3, 4]);
      expect(all.map((event) => event.chunk)).toEqual(texts);
      expect(all[0]).toEqual(chunk(id, 1, 1, texts[0]!));
      expect((await store.listEvents(id, 2)).map((event) => event.seq)).toEqual([3, 4]);
      expect((await store.listEvents(id, 0, 2)).map((event) => event.seq)).toEqual([1, 2]);
      expect(await store.listEvents(id, 4)).toEqual([]);
      expect((await store.turnContext(id, 1)).lastSeq).toBe(4);
    });

    it('rejects a duplicate seq with StoreError and keeps the first write', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      await store.appendEvents([chunk(id, 1, 1, 'first')]);
      await expect(store.appendEvents([chunk(id, 1, 1, 'again')])).rejects.toBeInstanceOf(StoreError);
      expect((await store.listEvents(id, 0)).map((event) => event.chunk)).toEqual(['first']);
    });

    it('ends a turn with its terminal event, the answer and the status, then allows the next turn with history', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'first question', now: 10 });
      await store.appendEvents([chunk(id, 1, 1, 'first '), chunk(id, 1, 2, 'answer')]);
      const complete = makeEvent({
        conversationId: id,
        turn: 1,
        seq: 3,
        type: 'COMPLETE',
        stopReason: 'end_turn',
        usage: { inputTokens: 3, outputTokens: 2 },
        latencyMs: 42,
        createdAt: 20,
      });
      await store.endTurn({ event: complete, assistantText: 'first answer' });
      const ended = await store.getConversation(id);
      expect(ended).toMatchObject({ status: 'COMPLETE', lastSeq: 3, turns: [{ turn: 1, status: 'COMPLETE', endedAt: 20 }] });
      expect((await store.listEvents(id, 2))[0]).toEqual(complete);

      const turn = await store.beginTurn({ conversationId: id, prompt: 'follow-up', now: 30 });
      expect(turn).toBe(2);
      expect(await store.turnContext(id, 2)).toEqual({
        history: [
          { turn: 1, role: 'user', content: 'first question' },
          { turn: 1, role: 'assistant', content: 'first answer' },
        ],
        lastSeq: 3,
      });
      expect((await store.getConversation(id))?.messages).toEqual([
        { turn: 1, role: 'user', content: 'first question' },
        { turn: 1, role: 'assistant', content: 'first answer' },
        { turn: 2, role: 'user', content: 'follow-up' },
      ]);
    });

    it('stores no assistant message for a turn that produced no text', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      await store.endTurn({
        event: makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'ERROR', error: 'boom', errorCode: 'X', createdAt: 2 }),
        assistantText: '',
      });
      const conversation = await store.getConversation(id);
      expect(conversation?.status).toBe('ERROR');
      expect(conversation?.messages).toEqual([{ turn: 1, role: 'user', content: 'p' }]);
    });

    it('writes nothing of endTurn when its event collides with a stored seq', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      await store.appendEvents([chunk(id, 1, 1, 'a')]);
      const clash = makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'COMPLETE', stopReason: 'end_turn', createdAt: 2 });
      await expect(store.endTurn({ event: clash, assistantText: 'a' })).rejects.toBeInstanceOf(StoreError);
      const conversation = await store.getConversation(id);
      expect(conversation?.status).toBe('RUNNING');
      expect(conversation?.messages).toEqual([{ turn: 1, role: 'user', content: 'p' }]);
      expect((await store.listEvents(id, 0)).map((event) => event.type)).toEqual(['CHUNK']);
    });

    it('records cancellation requests for the running turn only', async () => {
      const id = randomUUID();
      expect(await store.requestCancel(id)).toBe(false);
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      expect(await store.isCancelRequested(id, 1)).toBe(false);
      expect(await store.requestCancel(id)).toBe(true);
      expect(await store.isCancelRequested(id, 1)).toBe(true);
      await store.endTurn({ event: makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CANCELLED', createdAt: 2 }), assistantText: '' });
      expect(await store.requestCancel(id)).toBe(false);
      await store.beginTurn({ conversationId: id, prompt: 'again', now: 3 });
      expect(await store.isCancelRequested(id, 2)).toBe(false);
    });

    it('lists running turns with their last seq', async () => {
      const running = randomUUID();
      const done = randomUUID();
      await store.beginTurn({ conversationId: running, prompt: 'p', now: 1 });
      await store.appendEvents([chunk(running, 1, 1, 'a'), chunk(running, 1, 2, 'b')]);
      await store.beginTurn({ conversationId: done, prompt: 'p', now: 1 });
      await store.endTurn({ event: makeEvent({ conversationId: done, turn: 1, seq: 1, type: 'CANCELLED', createdAt: 2 }), assistantText: '' });
      const turns = await store.listRunningTurns();
      expect(turns).toContainEqual({ conversationId: running, turn: 1, lastSeq: 2 });
      expect(turns.find((turn) => turn.conversationId === done)).toBeUndefined();
    });

    it('keeps conversations to their owner', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1, owner: 'alice' });
      await store.endTurn({ event: makeEvent({ conversationId: id, turn: 1, seq: 1, type: 'CANCELLED', createdAt: 2 }), assistantText: '' });
      await expect(store.beginTurn({ conversationId: id, prompt: 'q', now: 3, owner: 'mallory' })).rejects.toBeInstanceOf(UnauthorizedError);
      expect((await store.getConversation(id))?.owner).toBe('alice');
      expect(await store.beginTurn({ conversationId: id, prompt: 'q', now: 3, owner: 'alice' })).toBe(2);
    });

    it('deletes a conversation with its events and messages', async () => {
      const id = randomUUID();
      await store.beginTurn({ conversationId: id, prompt: 'p', now: 1 });
      await store.appendEvents([chunk(id, 1, 1, 'a')]);
      expect(await store.deleteConversation(id)).toBe(true);
      expect(await store.getConversation(id)).toBeNull();
      expect(await store.listEvents(id, 0)).toEqual([]);
      expect(await store.deleteConversation(id)).toBe(false);
    });

    it('prunes conversations last updated before a time, never a running one', async () => {
      const [old, running, recent] = [randomUUID(), randomUUID(), randomUUID()];
      for (const id of [old, running]) await store.beginTurn({ conversationId: id, prompt: 'p', now: 1_000 });
      await store.endTurn({ event: makeEvent({ conversationId: old, turn: 1, seq: 1, type: 'COMPLETE', createdAt: 2_000 }), assistantText: 'a' });
      await store.beginTurn({ conversationId: recent, prompt: 'p', now: 50_000 });
      await store.endTurn({ event: makeEvent({ conversationId: recent, turn: 1, seq: 1, type: 'COMPLETE', createdAt: 60_000 }), assistantText: 'a' });
      const pruned = await store.pruneConversations(10_000);
      if (fixture.prunesByTtl) {
        expect(pruned).toBe(0);
        return;
      }
      expect(pruned).toBeGreaterThanOrEqual(1);
      expect(await store.getConversation(old)).toBeNull();
      expect(await store.listEvents(old, 0)).toEqual([]);
      expect(await store.getConversation(running)).not.toBeNull();
      expect(await store.getConversation(recent)).not.toBeNull();
    });

    it('returns null and empty lists for an unknown conversation', async () => {
      const id = randomUUID();
      expect(await store.getConversation(id)).toBeNull();
      expect(await store.listEvents(id, 0)).toEqual([]);
    });
  });
}
