/**
 * The conformance suite every model provider runs (simulated, Bedrock, OpenAI-compatible): the
 * promises of `ModelProvider` in `src/providers/types.ts`, checked the same way for each.
 *
 * A provider's test file calls `describeProviderConformance` with a harness that knows how to
 * make that provider produce a given kind of answer (the simulated one through prompt directives,
 * the HTTP ones by scripting a fake server).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Usage } from '../../src/domain.js';
import type { ModelProvider, ModelRequest, StreamPart } from '../../src/providers/types.js';

/** A request without its signal; the suite adds one. */
export type ConformanceRequest = Omit<ModelRequest, 'signal'>;

/** What a provider's harness gives the suite. */
export interface ConformanceHarness {
  provider: ModelProvider;
  /** Arranges a complete answer and says what must arrive: exactly `text`, then a finish with `usage`. */
  normalAnswer(): Promise<{ request: ConformanceRequest; text: string; usage: Usage }>;
  /**
   * Arranges an answer whose text has emoji and CJK characters split across the vendor's frames
   * or chunks (where the vendor has any); `text` is what must arrive.
   */
  multiByteAnswer(): Promise<{ request: ConformanceRequest; text: string }>;
  /**
   * Arranges an answer that sends a few tokens and then goes on slowly (or stalls) far longer than
   * any test runs. `connectionClosed`, where given, resolves when the server saw the client close
   * the connection.
   */
  slowAnswer(): Promise<{ request: ConformanceRequest; connectionClosed?: () => Promise<void> }>;
  /** Arranges an answer that fails after sending `textBefore` (non-empty). */
  failureMidStream(): Promise<{ request: ConformanceRequest; textBefore: string }>;
  /** Arranges an answer that fails before any text, with a failure that is not retried. */
  failureBeforeText(): Promise<{ request: ConformanceRequest }>;
  close(): Promise<void>;
}

/** Static facts about a provider that decide which cases apply. */
export interface ConformanceOptions {
  /** Creates a fresh harness for each case. */
  setup: () => Promise<ConformanceHarness>;
  /** Why the "server sees the connection close" case does not apply; undefined when it does. */
  noConnectionReason?: string;
}

/** Runs the provider conformance suite as a `describe` block named after the provider. */
export function describeProviderConformance(name: string, options: ConformanceOptions): void {
  describe(`${name} provider conformance`, () => {
    let harness: ConformanceHarness;
    beforeEach(async () => {
      harness = await options.setup();
    });
    afterEach(async () => {
      await harness.close();
    });

    it('delivers the exact text of an answer, then exactly one finish part with usage, and nothing after it', async () => {
      const { request, text, usage } = await harness.normalAnswer();
      const parts = await collect(harness.provider.stream({ ...request, signal: new AbortController().signal }));

      expect(textOf(parts)).toBe(text);
      expect(text.length).toBeGreaterThan(0);
      expect(parts.filter((part) => part.type === 'error')).toEqual([]);
      expect(parts.filter((part) => part.type === 'finish')).toHaveLength(1);
      const last = parts[parts.length - 1];
      expect(last?.type).toBe('finish');
      expect(last).toMatchObject({ type: 'finish', usage });
      expect((last as Extract<StreamPart, { type: 'finish' }>).stopReason).toMatch(/^[a-z_]+$/);
      expect(parts.filter((part) => part.type === 'text-delta' && part.delta === '')).toEqual([]);
    });

    it('delivers emoji and CJK characters split across frames intact', async () => {
      const { request, text } = await harness.multiByteAnswer();
      // Guards the harness: the case means nothing if the answer has no such characters.
      expect(text).toMatch(/\p{Extended_Pictographic}/u);
      expect(text).toMatch(/\p{Script=Han}/u);
      const parts = await collect(harness.provider.stream({ ...request, signal: new AbortController().signal }));
      expect(textOf(parts)).toBe(text);
      expect(parts.filter((part) => part.type === 'text-delta' && part.delta.includes('\uFFFD'))).toEqual([]);
      expect(parts[parts.length - 1]?.type).toBe('finish');
    });

    it('ends the iteration with no further part when the signal aborts mid-stream', async () => {
      const { request } = await harness.slowAnswer();
      const abort = new AbortController();
      const iterator = harness.provider.stream({ ...request, signal: abort.signal })[Symbol.asyncIterator]();
      const received: StreamPart[] = [];
      while (received.length < 2) {
        const next = await iterator.next();
        expect(next.done).toBe(false);
        received.push(next.value as StreamPart);
      }
      expect(received.map((part) => part.type)).toEqual(['text-delta', 'text-delta']);

      abort.abort('cancel');
      // If the provider ignored the abort, this would wait for the rest of a stream that never ends.
      const after = await iterator.next();
      expect(after).toEqual({ done: true, value: undefined });
    });

    const connectionCase = 'closes the connection to the model server when the signal aborts mid-stream';
    if (options.noConnectionReason !== undefined) {
      it.skip(`${connectionCase} (skipped: ${options.noConnectionReason})`, () => undefined);
    } else {
      it(connectionCase, async () => {
        const { request, connectionClosed } = await harness.slowAnswer();
        expect(connectionClosed).toBeTypeOf('function');
        const abort = new AbortController();
        const iterator = harness.provider.stream({ ...request, signal: abort.signal })[Symbol.asyncIterator]();
        expect((await iterator.next()).value).toMatchObject({ type: 'text-delta' });
        abort.abort('cancel');
        expect((await iterator.next()).done).toBe(true);
        // Resolves only when the fake server saw the client go away; otherwise the test times out.
        await connectionClosed!();
      });
    }

    it('yields nothing when the signal is already aborted', async () => {
      const { request } = await harness.normalAnswer();
      const abort = new AbortController();
      abort.abort('cancel');
      const parts = await collect(harness.provider.stream({ ...request, signal: abort.signal }));
      expect(parts).toEqual([]);
    });

    it('reports a failure mid-stream as exactly one error part, last, after the text sent before it', async () => {
      const { request, textBefore } = await harness.failureMidStream();
      const parts = await collect(harness.provider.stream({ ...request, signal: new AbortController().signal }));

      expect(textBefore.length).toBeGreaterThan(0);
      expect(textOf(parts)).toBe(textBefore);
      const errors = parts.filter((part) => part.type === 'error');
      expect(errors).toHaveLength(1);
      expect(parts[parts.length - 1]).toBe(errors[0]);
      expect(parts.filter((part) => part.type === 'finish')).toEqual([]);
      expectHelpfulError(errors[0]);
    });

    it('reports a failure before any text as exactly one error part and nothing else', async () => {
      const { request } = await harness.failureBeforeText();
      const parts = await collect(harness.provider.stream({ ...request, signal: new AbortController().signal }));
      expect(parts).toHaveLength(1);
      expect(parts[0]?.type).toBe('error');
      expectHelpfulError(parts[0]);
    });
  });
}

function expectHelpfulError(part: StreamPart | undefined): void {
  expect(part?.type).toBe('error');
  const error = part as Extract<StreamPart, { type: 'error' }>;
  expect(error.code).toMatch(/^[A-Za-z]+$/);
  // A sentence, not a bare code.
  expect(error.message.length).toBeGreaterThan(20);
  expect(error.message).not.toBe(error.code);
  expect(typeof error.isRetryable).toBe('boolean');
}

/** Reads a stream to its end. */
export async function collect(stream: AsyncIterable<StreamPart>): Promise<StreamPart[]> {
  const parts: StreamPart[] = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

/** The text of the `text-delta` parts, joined. */
export function textOf(parts: StreamPart[]): string {
  return parts
    .filter((part): part is Extract<StreamPart, { type: 'text-delta' }> => part.type === 'text-delta')
    .map((part) => part.delta)
    .join('');
}
