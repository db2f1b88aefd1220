/**
 * The simulated model: the embedded default, so longrun runs with no account and no network.
 *
 * Its answer is deterministic text derived from the prompt (the same prompt always gives the same
 * text), with newlines, quotes, backslashes, emoji and CJK in it so that byte-exact delivery is
 * exercised. Directives anywhere in the prompt change its behaviour:
 *
 * | directive          | effect                                                              |
 * |--------------------|---------------------------------------------------------------------|
 * | `[tokens=N]`       | answer with N tokens (default 120, at most 1,000,000)                |
 * | `[fail-after=N]`   | after N tokens, end with an error part (`ModelFailure`, not retryable) |
 * | `[stall-after=N]`  | after N tokens, send nothing more until aborted                      |
 * | `[rate=N]`         | N tokens per second for this request (0: as fast as possible)        |
 * | `[ttft=MS]`        | time to first token for this request                                  |
 * | `[stamp]`          | each token carries the time it was emitted, `⟦ms⟧`, for latency measurement |
 */
import type { ModelProvider, ModelRequest, StreamPart } from './types.js';

/** Settings of the simulated model (LONGRUN_SIM_TTFT_MS, LONGRUN_SIM_TOKENS_PER_SEC). */
export interface SimulatedProviderOptions {
  /** Time to first token in milliseconds (default 300). */
  ttftMs?: number;
  /** Tokens per second (default 50); 0 emits as fast as possible. */
  tokensPerSecond?: number;
  /** Default answer length in tokens (default 120). */
  defaultTokens?: number;
  /** Clock used for `[stamp]`; `performance.timeOrigin + performance.now()` by default. */
  now?: () => number;
}

/** Parsed prompt directives. */
export interface SimulationPlan {
  tokens: number;
  failAfter: number | undefined;
  stallAfter: number | undefined;
  rate: number | undefined;
  ttftMs: number | undefined;
  stamp: boolean;
}

const MAX_TOKENS = 1_000_000;

const WORDS = [
  'the', 'river', 'carried', 'lanterns', 'past', 'quiet', 'houses', 'and', 'a', 'fox', 'watched',
  'from', 'tall', 'grass', 'while', 'stars', 'turned', 'slowly', 'over', 'hills', 'of', 'amber',
  'light', 'where', 'old', 'roads', 'met', 'new', 'ones', 'in', 'silence', 'morning', 'came',
  'with', 'rain', 'sharp', 'bright', 'patient', 'voices', 'stories', 'long', 'ago',
];
// Characters that break naive transports: quotes, backslashes, newlines, emoji (surrogate pairs),
// CJK (three UTF-8 bytes each), combining marks.
const SPICE = ['"quoted"', "it's", 'back\\slash', '🦊', '🌧️', '星空', '川の流れ', 'café', 'naïve', '—', '👩‍🚀', '{"json": true}'];

/** Reads the directives of a prompt. */
export function planFromPrompt(prompt: string, defaultTokens = 120): SimulationPlan {
  const number = (name: string): number | undefined => {
    const match = new RegExp(`\\[${name}=(\\d+)\\]`).exec(prompt);
    return match?.[1] === undefined ? undefined : Number(match[1]);
  };
  return {
    tokens: Math.min(number('tokens') ?? defaultTokens, MAX_TOKENS),
    failAfter: number('fail-after'),
    stallAfter: number('stall-after'),
    rate: number('rate'),
    ttftMs: number('ttft'),
    stamp: prompt.includes('[stamp]'),
  };
}

/**
 * The tokens the simulated model answers `prompt` with, before any failure or stall: a pure
 * function, so tests can compute the expected text. Concatenated, they are the answer.
 */
export function simulatedTokens(prompt: string, count: number): string[] {
  let state = fnv1a(prompt) || 1;
  const random = (): number => {
    // xorshift32: small, fast and deterministic.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
  const tokens: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const roll = random();
    const word =
      roll < 0.06 ? SPICE[Math.floor(random() * SPICE.length)]! : WORDS[Math.floor(random() * WORDS.length)]!;
    const separator = index === count - 1 ? '.' : roll > 0.97 ? '.\n\n' : roll > 0.9 ? ', ' : ' ';
    tokens.push(index === 0 ? capitalise(word) + separator : word + separator);
  }
  return tokens;
}

/**
 * What the simulated model answers a request with (before any failure or stall): the plan read
 * from the last prompt and the tokens. The history and system prompt are part of the seed, so a
 * follow-up gets a different answer than a first turn.
 */
export function simulatedAnswer(
  request: Pick<ModelRequest, 'messages' | 'system' | 'maxTokens'>,
  defaultTokens = 120,
): { plan: SimulationPlan; limit: number; seed: string; tokens: string[] } {
  const prompt = request.messages[request.messages.length - 1]?.content ?? '';
  const plan = planFromPrompt(prompt, defaultTokens);
  const limit = Math.min(plan.tokens, request.maxTokens ?? Number.POSITIVE_INFINITY);
  const seed = request.messages.map((m) => `${m.role}:${m.content}`).join('\u0000') + (request.system ?? '');
  return { plan, limit, seed, tokens: simulatedTokens(seed, limit) };
}

/** Creates the simulated provider. */
export function createSimulatedProvider(options: SimulatedProviderOptions = {}): ModelProvider {
  const ttftMs = options.ttftMs ?? 300;
  const tokensPerSecond = options.tokensPerSecond ?? 50;
  const defaultTokens = options.defaultTokens ?? 120;
  const now = options.now ?? (() => performance.timeOrigin + performance.now());

  return {
    name: 'simulated',
    defaultModelId: 'longrun-simulated-1',
    async *stream(request: ModelRequest): AsyncGenerator<StreamPart> {
      const { plan, limit, seed, tokens } = simulatedAnswer(request, defaultTokens);
      const rate = plan.rate ?? tokensPerSecond;
      const start = performance.now() + (plan.ttftMs ?? ttftMs);
      const { signal } = request;

      // One abort listener for the whole stream, not one per token: a sleep only keeps how to
      // wake it early. (`signal.aborted` is a checked getter; a flag is cheaper per token.)
      let aborted = signal.aborted;
      let wake: (() => void) | undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => {
        aborted = true;
        clearTimeout(timer);
        wake?.();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const sleep = (ms: number): Promise<void> =>
        new Promise((resolve) => {
          if (aborted) return resolve();
          wake = resolve;
          timer = Number.isFinite(ms) ? setTimeout(resolve, ms) : undefined;
        });

      try {
        for (let index = 0; index < tokens.length; index += 1) {
          if (plan.failAfter !== undefined && index === plan.failAfter) {
            yield {
              type: 'error',
              code: 'ModelFailure',
              message: `The simulated model failed after ${index} tokens, as the prompt's [fail-after=${plan.failAfter}] asked.`,
              isRetryable: false,
            };
            return;
          }
          if (plan.stallAfter !== undefined && index === plan.stallAfter) {
            await sleep(Number.POSITIVE_INFINITY);
            return;
          }
          const due = rate > 0 ? start + (index * 1000) / rate : start;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          else if (index % 256 === 255) await sleep(0); // let I/O run when behind or unthrottled
          if (aborted) return;
          yield { type: 'text-delta', delta: plan.stamp ? `⟦${now().toFixed(3)}⟧${tokens[index]!}` : tokens[index]! };
        }
        if (aborted) return;
        yield {
          type: 'finish',
          stopReason: limit < plan.tokens ? 'max_tokens' : 'end_turn',
          usage: { inputTokens: countWords(seed), outputTokens: tokens.length },
        };
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index += 1) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

function capitalise(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

function countWords(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}
