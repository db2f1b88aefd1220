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
import { BURST_SLOTS, Coalescer } from '../../src/worker/coalescer.js';
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
  it('sends the first delta at once, coalesces a fast burst, and stores before it publishes', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const published = recorder();
    const storedAtPublish: number[] = [];
    const publisher: Publisher = {
      publish: async (events) => {
        storedAtPublish.push((await store.listEvents('c1', 0)).length);
        await published.publish(events);
      },
    };
    const burst = ['lo, ', '"wörld"\n', '🦊\\', ...Array.from({ length: 30 }, (_, index) => ` w${index}`)].map(delta);
    const provider = scripted([delta('Hel'), ...burst, { pause: 120 }, delta('星'), finish]);
    const outcome = await runInvocation(await freshTurn(store), { provider, store, publisher, options: { flushMs: 30 } });

    const text = ['Hel', 'lo, ', '"wörld"\n', '🦊\\', ...Array.from({ length: 30 }, (_, index) => ` w${index}`), '星'].join('');
    expect(outcome.status).toBe('COMPLETE');
    expect(outcome.text).toBe(text);
    const chunks = published.events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk);
    expect(chunks[0]).toBe('Hel');
    expect(chunks.join('')).toBe(text);
    // 33 deltas in one go: at most the burst allowance goes one by one, the rest is gathered.
    expect(chunks.length).toBeLessThan(10);
    // After a pause, a delta goes out on its own, at once.
    expect(chunks[chunks.length - 1]).toBe('星');
    expect(published.events.map((event) => event.seq)).toEqual(published.events.map((_, index) => index + 1));
    expect(published.events[published.events.length - 1]).toMatchObject({
      type: 'COMPLETE',
      stopReason: 'end_turn',
      usage: { inputTokens: 5, outputTokens: 3 },
      latencyMs: 12,
    });
    expect(storedAtPublish).toEqual(published.events.map((event) => event.seq));
    expect(await store.listEvents('c1', 0)).toEqual(published.events);
  });

  it('sends every delta as it comes with flushMs 0', async () => {
    const store = createSqliteStore({ path: ':memory:' });
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
  it('sends deltas that keep to the pace at once, a few early ones too, and holds the rest for their slot', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 100, flushBytes: 4096, burst: 4, flush: async (text) => void sent.push(text) });
    const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    coalescer.push('a');
    await wait(150);
    coalescer.push('b'); // a slow model: its token waits for no timer
    await wait(0);
    // Early ones: the burst allowance lets four more go at once, each moving the next slot 100 ms on.
    for (const letter of ['c', 'd', 'e', 'f']) {
      coalescer.push(letter);
      await wait(0);
    }
    expect(sent).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    coalescer.push('g'); // the allowance is spent: held until its slot, about 100 ms on
    coalescer.push('h');
    await wait(0);
    expect(sent).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    await wait(200);
    expect(sent).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'gh']);
    await coalescer.drain();
  });

  it('lets a model at the coalescing pace catch up after a late token, without holding the later ones', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 50, flushBytes: 4096, flush: async (text) => void sent.push(text) });
    const started = performance.now();
    const held: number[] = [];
    for (let index = 0; index < 10; index += 1) {
      // Tokens due every 50 ms; the fourth is 120 ms late (a stalled event loop), and the two due
      // meanwhile come right after it.
      const due = started + index * 50 + (index === 3 ? 120 : 0);
      if (due > performance.now()) await new Promise((resolve) => setTimeout(resolve, due - performance.now()));
      coalescer.push(`${index} `);
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (!sent.join('').includes(`${index} `)) held.push(index);
    }
    await coalescer.drain();
    expect(held).toEqual([]);
    expect(sent).toHaveLength(10);
  });

  it('keeps to one chunk per flushMs on average, however fast the deltas come', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 50, flushBytes: 4096, flush: async (text) => void sent.push(text) });
    const started = performance.now();
    let pushed = '';
    for (let index = 0; performance.now() - started < 600; index += 1) {
      coalescer.push(`${index},`);
      pushed += `${index},`;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const elapsed = performance.now() - started;
    await coalescer.drain();
    expect(sent.join('')).toBe(pushed);
    // One per slot over the elapsed time, the first, the burst allowance, and the drain's last.
    expect(sent.length).toBeLessThanOrEqual(Math.floor(elapsed / 50) + 1 + BURST_SLOTS + 1);
    expect(sent.length).toBeLessThan(pushed.split(',').length / 3);
  });

  it('flushes as soon as flushBytes wait, without waiting for the slot', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 10_000, flushBytes: 4, burst: 0, flush: async (text) => void sent.push(text) });
    coalescer.push('a');
    coalescer.push('bb');
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(sent).toEqual(['a']);
    coalescer.push('cc');
    coalescer.push('d');
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(sent).toEqual(['a', 'bbcc']);
    await coalescer.drain();
    expect(sent).toEqual(['a', 'bbcc', 'd']);
  });

  it('counts flushBytes in UTF-8 bytes exactly, multi-byte characters included', async () => {
    const sent: string[] = [];
    const coalescer = new Coalescer({ flushMs: 10_000, flushBytes: 7, burst: 0, flush: async (text) => void sent.push(text) });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
    coalescer.push('x'); // the first chunk goes at once; the next waits 10 s for its slot
    await settle();
    coalescer.push('星'); // 3 bytes
    coalescer.push('ab'); // 5: at most 3 bytes a UTF-16 unit would say 9, but it is 5
    coalescer.push('c'); // 6
    await settle();
    expect(sent).toEqual(['x']);
    coalescer.push('空'); // 9 ≥ 7: at once
    await settle();
    expect(sent).toEqual(['x', '星abc空']);
    coalescer.push('🦊'); // 4 bytes, 2 UTF-16 units
    coalescer.push('é'); // 6
    await settle();
    expect(sent).toEqual(['x', '星abc空']);
    coalescer.push('d'); // 7: at once
    await settle();
    expect(sent).toEqual(['x', '星abc空', '🦊éd']);
    coalescer.dispose();
  });

  it('with flushMs 0, queues every delta and hands them over one at a time, in order', async () => {
    const flushed: string[] = [];
    let running = 0;
    const coalescer = new Coalescer({
      flushMs: 0,
      flushBytes: 4096,
      flush: async (text) => {
        running += 1;
        expect(running).toBe(1);
        await new Promise((resolve) => setImmediate(resolve));
        flushed.push(text);
        running -= 1;
      },
    });
    const deltas = Array.from({ length: 2000 }, (_, index) => `d${index} `);
    for (const delta of deltas) coalescer.push(delta);
    await coalescer.drain();
    expect(flushed).toEqual(deltas);
  });

  it('stops handing chunks over after a failed flush, and drain rejects with the first error', async () => {
    const flushed: string[] = [];
    const coalescer = new Coalescer({
      flushMs: 0,
      flushBytes: 4096,
      flush: async (text) => {
        await Promise.resolve();
        if (text === 'second') throw new Error(`cannot store ${text}`);
        flushed.push(text);
      },
    });
    // Far more queued behind the failure than a call stack holds frames.
    for (const delta of ['first', 'second', ...Array.from({ length: 50_000 }, (_, index) => `later ${index}`)]) coalescer.push(delta);
    await expect(coalescer.drain()).rejects.toThrow('cannot store second');
    expect(flushed).toEqual(['first']);
    expect(String(coalescer.error)).toContain('cannot store second');
    coalescer.push('after the failure');
    await expect(coalescer.drain()).rejects.toThrow('cannot store second');
    expect(flushed).toEqual(['first']);
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

  it('sends the held chunks of many turns due at the same moment, each at or after its slot, and none of a disposed one', async () => {
    const sent: string[][] = Array.from({ length: 50 }, () => []);
    const slotAt: number[] = [];
    const sentAt: number[] = [];
    const coalescers = sent.map(
      (chunks, index) =>
        new Coalescer({
          flushMs: 40,
          flushBytes: 4096,
          burst: 0,
          flush: async (text) => {
            chunks.push(text);
            if (text === 'b') sentAt[index] = performance.now();
          },
        }),
    );
    for (const [index, coalescer] of coalescers.entries()) {
      coalescer.push('a'); // the first chunk goes at once; the next slot is 40 ms on
      slotAt[index] = performance.now() + 40;
      coalescer.push('b');
    }
    coalescers[7]!.dispose();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(sent.every((chunks) => chunks.join() === 'a')).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 120));
    for (const [index, chunks] of sent.entries()) {
      expect(chunks).toEqual(index === 7 ? ['a'] : ['a', 'b']);
      // Node's timers count whole milliseconds, so a timer may fire up to 1 ms early.
      if (index !== 7) expect(sentAt[index]).toBeGreaterThanOrEqual(slotAt[index]! - 1);
    }
    await coalescers[7]!.drain();
    expect(sent[7]).toEqual(['a', 'b']);
  });

  it('stops the timer of a held chunk when disposed, so nothing holds the process open', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
    const before = timers();
    const coalescer = new Coalescer({ flushMs: 60_000, flushBytes: 4096, burst: 0, flush: async () => undefined });
    coalescer.push('a'); // goes at once
    coalescer.push('b'); // held for its slot, a minute on
    await new Promise((resolve) => setImmediate(resolve));
    expect(timers()).toBe(before + 1);
    coalescer.dispose();
    expect(timers()).toBe(before);
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
