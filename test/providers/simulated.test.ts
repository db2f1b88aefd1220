/**
 * The simulated provider: the conformance suite, driven by prompt directives, and what is
 * particular to it.
 */
import { describe, expect, it } from 'vitest';
import { createSimulatedProvider, simulatedAnswer } from '../../src/providers/simulated.js';
import { collect, describeProviderConformance, textOf, type ConformanceHarness, type ConformanceRequest } from './provider.suite.js';

function request(prompt: string): ConformanceRequest {
  return { messages: [{ role: 'user', content: prompt }] };
}

function expectedText(prompt: string): string {
  return simulatedAnswer(request(prompt)).tokens.join('');
}

/** The first of a few prompts whose answer contains both emoji and CJK (the answer is deterministic). */
function multiBytePrompt(): string {
  for (let index = 0; index < 500; index += 1) {
    const prompt = `[tokens=200] story ${index}`;
    const text = expectedText(prompt);
    if (/\p{Extended_Pictographic}/u.test(text) && /\p{Script=Han}/u.test(text)) return prompt;
  }
  throw new Error('no prompt among the first 500 gives emoji and CJK');
}

describeProviderConformance('simulated', {
  noConnectionReason: 'the simulated provider runs in-process and has no connection to close',
  async setup(): Promise<ConformanceHarness> {
    // Zero time to first token and no rate limit keep the suite fast; slow cases use directives.
    const provider = createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 0 });
    return {
      provider,
      async normalAnswer() {
        const prompt = '[tokens=40] tell me about rivers';
        const { seed, tokens } = simulatedAnswer(request(prompt));
        return {
          request: request(prompt),
          text: tokens.join(''),
          usage: { inputTokens: seed.split(/\s+/).filter(Boolean).length, outputTokens: 40 },
        };
      },
      async multiByteAnswer() {
        // The simulated model has no frames: each token arrives whole, spice characters included.
        const prompt = multiBytePrompt();
        return { request: request(prompt), text: expectedText(prompt) };
      },
      async slowAnswer() {
        return { request: request('[tokens=1000][stall-after=3] a long answer') };
      },
      async failureMidStream() {
        const prompt = '[tokens=40][fail-after=5] fail please';
        return { request: request(prompt), textBefore: simulatedAnswer(request(prompt)).tokens.slice(0, 5).join('') };
      },
      async failureBeforeText() {
        return { request: request('[fail-after=0] fail at once') };
      },
      async close() {},
    };
  },
});

describe('simulated provider', () => {
  const provider = createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 0 });

  it('answers the same prompt with the same text, and a different history with a different text', async () => {
    const first = textOf(await collect(provider.stream({ ...request('[tokens=30] hello'), signal: new AbortController().signal })));
    const again = textOf(await collect(provider.stream({ ...request('[tokens=30] hello'), signal: new AbortController().signal })));
    const followUp = textOf(
      await collect(
        provider.stream({
          messages: [
            { role: 'user', content: 'earlier' },
            { role: 'assistant', content: 'answer' },
            { role: 'user', content: '[tokens=30] hello' },
          ],
          signal: new AbortController().signal,
        }),
      ),
    );
    expect(again).toBe(first);
    expect(followUp).not.toBe(first);
  });

  it('stops with max_tokens when maxTokens is below the answer length', async () => {
    const parts = await collect(provider.stream({ ...request('[tokens=30] hello'), maxTokens: 7, signal: new AbortController().signal }));
    expect(parts.filter((part) => part.type === 'text-delta')).toHaveLength(7);
    expect(parts[parts.length - 1]).toMatchObject({ type: 'finish', stopReason: 'max_tokens', usage: { outputTokens: 7 } });
  });
});
