/**
 * The token stream of the baselines: the gateway's own simulated model (`createSimulatedProvider`),
 * driven the way the worker drives it, so all three servers emit the same tokens with the same
 * timing, `[stamp]`s and cost. Each text delta becomes one CHUNK event (no coalescing: one
 * publish per token, as a user's own server would do), then one COMPLETE.
 */
import type { ConversationEvent } from '../../src/domain.js';
import { createSimulatedProvider } from '../../src/providers/simulated.js';
import { now } from '../common.js';

// The settings of the longrun server child: no default time to first token, 50 tokens/s unless
// the prompt says otherwise.
const provider = createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 50, now });

const running = new Set<AbortController>();

/** Stops every conversation streaming now. */
export function stopConversations(): void {
  for (const controller of running) controller.abort();
}

/**
 * Streams one conversation's answer to `prompt` as events; resolves after the terminal event.
 * Each conversation has its own abort signal, as each turn of the gateway has.
 */
export async function streamConversation(conversationId: string, prompt: string, emit: (event: ConversationEvent) => void): Promise<void> {
  const controller = new AbortController();
  running.add(controller);
  try {
    await stream(conversationId, prompt, emit, controller.signal);
  } finally {
    running.delete(controller);
  }
}

async function stream(conversationId: string, prompt: string, emit: (event: ConversationEvent) => void, signal: AbortSignal): Promise<void> {
  let seq = 0;
  const event = (fields: Partial<ConversationEvent> & Pick<ConversationEvent, 'type'>): ConversationEvent => ({
    conversationId,
    turn: 1,
    seq: (seq += 1),
    chunk: null,
    error: null,
    errorCode: null,
    stopReason: null,
    usage: null,
    latencyMs: null,
    createdAt: now(),
    ...fields,
  });
  try {
    for await (const part of provider.stream({ messages: [{ role: 'user', content: prompt }], signal })) {
      if (part.type === 'text-delta') {
        emit(event({ type: 'CHUNK', chunk: part.delta }));
      } else if (part.type === 'finish') {
        emit(event({ type: 'COMPLETE', stopReason: part.stopReason, usage: part.usage ?? null }));
        return;
      } else {
        emit(event({ type: 'ERROR', errorCode: part.code, error: part.message }));
        return;
      }
    }
  } catch (error) {
    emit(event({ type: 'ERROR', errorCode: 'InternalError', error: String(error) }));
  }
}

/** Reads `{ variables: { input: { prompt, conversationId } } }` from a startConversation request body. */
export function readStartRequest(body: string): { prompt: string; conversationId: string } | undefined {
  try {
    const parsed = JSON.parse(body) as { variables?: { input?: { prompt?: unknown; conversationId?: unknown } } };
    const input = parsed.variables?.input;
    if (typeof input?.prompt !== 'string' || typeof input.conversationId !== 'string') return undefined;
    return { prompt: input.prompt, conversationId: input.conversationId };
  } catch {
    return undefined;
  }
}
