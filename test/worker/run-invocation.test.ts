/**
 * The worker on its own: coalescing, numbering, byte-exact text, and every way a turn can end,
 * with a real SQLite store and a recording publisher.
 */
import { describe, expect, it } from 'vitest';
import type { ConversationEvent } from '../../src/domain.js';
import { StoreError } from '../../src/errors.js';
import type { ModelProvider, StreamPart } from '../../src/providers/types.js';
import type { Publisher } from '../../src/publisher/types.js';
import { createSqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/types.js';
import { Coalescer } from '../../src/worker/coalescer.js';
import { runInvocation } from '../../src/worker/run-invocation.js';

/** A provider that plays a script: parts with optional pauses before them. */
function scripted(script: Array<StreamPart | { pause: number } | { hang: true }>): ModelProvider & { aborted: () => boolean } {
  let aborted = false;
  return {
    name: 'scripted',
    defaultModelId: 'scripted',
    aborted: () => aborted,
    async *stream(request) {
      request.signal.addEventListener('abort', () => (aborted = true));
      for (const step of script) {
        if ('pause' in step) await new Promise((resolve) => setTimeout(resolve, step.pause));
        else if ('hang' in step) await new Promise(() => undefined);
        else yield step;
        if (request.signal.aborted) return;
      }
    },
  };
}

function recorder(): Publisher & { events: ConversationEvent[] } {
  const events: ConversationEvent[] = [];
  return { events, publish: async (batch) => void events.push(...batch) };
}

async function freshTurn(store: Store, conversationId = 'c1'): Promise<{ conversationId: string; turn: number; prompt: string }> {
  const turn = await store.beginTurn({ conversationId, prompt: 'hello', now: 1 });
  return { conversationId, turn, prompt: 'hello' };
}

const delta = (text: string): StreamPart => ({ type: 'text-delta', delta: text });
const finish: StreamPart = { type: 'finish', stopReason: 'end_turn', usage: { inputTokens: 5, outputTokens: 3 }, latencyMs: 12 };

describe('runInvocation', () => {
  it('sends the first delta at once, coalesces the rest, and stores before it publishes', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const published = recorder();
    const storedAtPublish: number[] = [];
    const publisher: Publisher = {
      publish: async (events) => {
        storedAtPublish.push((await store.listEvents('c1', 0)).length);
        await published.publish(events);
      },
    };
    const provider = scripted([delta('Hel'), delta('lo, '), delta('"wörld"\n'), delta('🦊\\'), { pause: 60 }, delta('星'), finish]);
    const outcome = await runInvocation(await freshTurn(store), { provider, store, publisher, options: { flushMs: 30 } });

    expect(outcome.status).toBe('COMPLETE');
    expect(outcome.text).toBe('Hello, "wörld"\n🦊\\星');
    expect(published.events.map((event) => event.chunk)).toEqual(['Hel', 'lo, "wörld"\n🦊\\', '星', null]);
    expect(published.events.map((event) => event.seq)).toEqual([1, 2, 3, 4]);
    expect(published.events[3]).toMatchObject({ type: 'COMPLETE', stopReason: 'end_turn', usage: { inputTokens: 5, outputTokens: 3 }, latencyMs: 12 });
    expect(storedAtPublish).toEqual([1, 2, 3, 4]);
    expect(await store.listEvents('c1', 0)).toEqual(published.events);
  });

  it('flushes as soon as flushBytes wait, and every delta with flushMs 0', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const bytes = recorder();
    await runInvocation(await freshTurn(store, 'bytes'), {
      provider: scripted([delta('a'), delta('bb'), delta('cc'), delta('d'), finish]),
      store,
      publisher: bytes,
      options: { flushMs: 10_000, flushBytes: 4 },
    });
    expect(bytes.events.map((event) => event.chunk)).toEqual(['a', 'bbcc', 'd', null]);

    const immediate = recorder();
    await runInvocation(await freshTurn(store, 'zero'), {
      provider: scripted([delta('x'), delta('y'), delta('z'), finish]),
      store,
      publisher: immediate,
      options: { flushMs: 0 },
    });
    expect(immediate.events.map((event) => event.chunk)).toEqual(['x', 'y', 'z', null]);
  });

  it('continues numbering after the events of earlier turns', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const publisher = recorder();
    await runInvocation(await freshTurn(store), { provider: scripted([delta('one'), finish]), store, publisher });
    const turn = await store.beginTurn({ conversationId: 'c1', prompt: 'again', now: 2 });
    await runInvocation({ conversationId: 'c1', turn, prompt: 'again' }, { provider: scripted([delta('two'), finish]), store, publisher });
    expect(publisher.events.map((event) => [event.turn, event.seq, event.type])).toEqual([
      [1, 1, 'CHUNK'],
      [1, 2, 'COMPLETE'],
      [2, 3, 'CHUNK'],
      [2, 4, 'COMPLETE'],
    ]);
  });

  it('passes the history of answered turns to the provider', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const seen: unknown[] = [];
    const provider: ModelProvider = {
      name: 'spy',
      defaultModelId: 'spy',
      async *stream(request) {
        seen.push({ messages: request.messages, system: request.system, maxTokens: request.maxTokens, temperature: request.temperature });
        yield delta('answer');
        yield finish;
      },
    };
    await runInvocation(await freshTurn(store), { provider, store, publisher: recorder() });
    // A turn that produced nothing is left out of the history.
    const failed = await store.beginTurn({ conversationId: 'c1', prompt: 'fails', now: 2 });
    await runInvocation({ conversationId: 'c1', turn: failed, prompt: 'fails' }, { provider: scripted([{ type: 'error', code: 'X', message: 'no', isRetryable: false }]), store, publisher: recorder() });
    const third = await store.beginTurn({ conversationId: 'c1', prompt: 'third', now: 3 });
    await runInvocation({ conversationId: 'c1', turn: third, prompt: 'third', system: 'be brief', maxTokens: 50, temperature: 0.2 }, { provider, store, publisher: recorder() });
    expect(seen[1]).toEqual({
      messages: [
        { role: 'user', content: 'hello' },
        { role: 'assistant', content: 'answer' },
        { role: 'user', content: 'third' },
      ],
      system: 'be brief',
      maxTokens: 50,
      temperature: 0.2,
    });
  });

  it('ends with ERROR StallTimeout when the provider goes silent, and aborts it', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const publisher = recorder();
    const provider = scripted([delta('start '), { hang: true }]);
    const outcome = await runInvocation(await freshTurn(store), { provider, store, publisher, options: { stallTimeoutMs: 80 } });
    expect(outcome.event).toMatchObject({ type: 'ERROR', errorCode: 'StallTimeout', seq: 2 });
    expect(outcome.event.error).toContain('LONGRUN_STALL_TIMEOUT_MS');
    expect(provider.aborted()).toBe(true);
    expect((await store.getConversation('c1'))?.messages[1]).toEqual({ turn: 1, role: 'assistant', content: 'start ' });
  });

  it('ends with ERROR when the stream ends without finishing, or the provider throws (masked, with an id)', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const cut = await runInvocation(await freshTurn(store, 'cut'), { provider: scripted([delta('half')]), store, publisher: recorder() });
    expect(cut.event).toMatchObject({ type: 'ERROR', errorCode: 'IncompleteStream' });

    const logged: string[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (event: string, fields?: Record<string, unknown>) => logged.push(`${event} ${String(fields?.errorId)}`), child() { return logger; } };
    const throwing: ModelProvider = {
      name: 'bug',
      defaultModelId: 'bug',
      // eslint-disable-next-line require-yield
      async *stream() {
        throw new Error('secret internals');
      },
    };
    const outcome = await runInvocation(await freshTurn(store, 'bug'), { provider: throwing, store, publisher: recorder(), logger });
    expect(outcome.event).toMatchObject({ type: 'ERROR', errorCode: 'InternalError' });
    expect(outcome.event.error).toMatch(/^internal error \(id [0-9a-f-]{36}\)$/);
    expect(outcome.event.error).not.toContain('secret');
    const id = /id ([0-9a-f-]{36})/.exec(outcome.event.error!)![1];
    expect(logged).toContain(`provider-threw ${id}`);
  });

  it('fails the turn with ERROR StoreError when a write fails, leaving no half-written event', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    let writes = 0;
    const failing: Store = {
      ...store,
      appendEvents: async (events) => {
        writes += 1;
        if (writes === 3) throw new StoreError('Could not store the events: database or disk is full');
        return store.appendEvents(events);
      },
    };
    const publisher = recorder();
    const provider = scripted([delta('a'), delta('b'), delta('c'), delta('d'), delta('e'), finish]);
    const outcome = await runInvocation(await freshTurn(failing), { provider, store: failing, publisher, options: { flushMs: 0 } });
    expect(outcome.event).toMatchObject({ type: 'ERROR', errorCode: 'StoreError', seq: 3 });
    expect(outcome.event.error).toContain('disk is full');
    expect(provider.aborted()).toBe(true);
    const stored = await store.listEvents('c1', 0);
    expect(stored.map((event) => [event.seq, event.type, event.chunk])).toEqual([
      [1, 'CHUNK', 'a'],
      [2, 'CHUNK', 'b'],
      [3, 'ERROR', null],
    ]);
    expect(publisher.events.map((event) => event.seq)).toEqual([1, 2, 3]);
  });

  it('keeps streaming when publishing fails: the events are stored for backfill', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const publisher: Publisher = { publish: async () => Promise.reject(new Error('AppSync unreachable')) };
    const outcome = await runInvocation(await freshTurn(store), { provider: scripted([delta('kept'), finish]), store, publisher });
    expect(outcome.status).toBe('COMPLETE');
    expect((await store.listEvents('c1', 0)).map((event) => event.type)).toEqual(['CHUNK', 'COMPLETE']);
  });

  it('ends CANCELLED at once for a turn aborted before it started, without calling the provider', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const controller = new AbortController();
    controller.abort('cancel');
    let called = false;
    const provider: ModelProvider = { name: 'never', defaultModelId: 'never', stream: () => ((called = true), scripted([finish]).stream({ messages: [], signal: controller.signal })) };
    const outcome = await runInvocation(await freshTurn(store), { provider, store, publisher: recorder(), signal: controller.signal });
    expect(outcome.event).toMatchObject({ type: 'CANCELLED', seq: 1 });
    expect(called).toBe(false);
  });

  it('polls the store for cancellation when cancelPollMs is set (the Lambda path)', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const provider = scripted([delta('a'), { hang: true }]);
    const invocation = await freshTurn(store);
    setTimeout(() => void store.requestCancel('c1'), 50);
    const outcome = await runInvocation(invocation, { provider, store, publisher: recorder(), options: { cancelPollMs: 20 } });
    expect(outcome.event.type).toBe('CANCELLED');
    expect(provider.aborted()).toBe(true);
  });
});

describe('Coalescer', () => {
  it('sends a delta at once when the last chunk is at least flushMs old, and holds faster ones only until then', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 40, flushBytes: 4096, flush: async (text) => void sent.push(text) });
    const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    coalescer.push('a');
    await wait(60);
    coalescer.push('b'); // a slow model: its token waits for no timer
    await wait(0);
    expect(sent).toEqual(['a', 'b']);
    coalescer.push('c'); // a fast one: held until flushMs after "b" went out
    coalescer.push('d');
    await wait(0);
    expect(sent).toEqual(['a', 'b']);
    await wait(80);
    expect(sent).toEqual(['a', 'b', 'cd']);
    await coalescer.drain();
  });

  it('holds a due chunk while the one before it is still being handed over, then sends what gathered', async () => {
    const flushed: Array<{ text: string; at: number }> = [];
    const start = performance.now();
    const coalescer = new Coalescer({
      flushMs: 10,
      flushBytes: 4096,
      flush: async (text) => {
        flushed.push({ text, at: performance.now() - start });
        await new Promise((resolve) => setTimeout(resolve, 60)); // a slow store
      },
    });
    const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    coalescer.push('a');
    await wait(20);
    coalescer.push('b'); // due (10 ms passed), but "a" is still being stored
    await wait(10);
    coalescer.push('c');
    await coalescer.drain();
    expect(flushed.map((chunk) => chunk.text)).toEqual(['a', 'bc']);
    expect(flushed[1]!.at).toBeGreaterThanOrEqual(55);
  });

  it('never splits a delta and keeps order when flushes are slow', async () => {
    const flushed: string[] = [];
    const coalescer = new Coalescer({
      flushMs: 1,
      flushBytes: 3,
      flush: async (text) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        flushed.push(text);
      },
    });
    const deltas = ['👩‍🚀', 'ab', 'c', '星空', 'd', 'e', 'f'];
    for (const piece of deltas) coalescer.push(piece);
    await coalescer.drain();
    expect(flushed.join('')).toBe(deltas.join(''));
    for (const chunk of flushed) expect(deltas.some((piece) => chunk.includes(piece))).toBe(true);
  });
});
