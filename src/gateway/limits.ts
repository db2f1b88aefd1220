/**
 * Per-caller turn limits: how many turns one API key or owner may start per minute, and how many
 * it may have running or queued at once. One noisy caller cannot starve the rest.
 */
import { LongrunError } from '../errors.js';

/** A limit was reached; `retryAfterMs` says when trying again can succeed. */
export class LimitExceededError extends LongrunError {
  constructor(message: string, retryAfterMs?: number) {
    super('LimitExceededException', message, retryAfterMs === undefined ? undefined : { retryAfterMs });
  }
}

export interface TurnLimiter {
  /** Admits a turn for `principalId`, or throws `LimitExceededError`. */
  admit(principalId: string, conversationId: string): void;
  /** The turn ended (or never started): frees its concurrency slot. */
  release(conversationId: string): void;
}

export function createTurnLimiter(options: { turnsPerMinute: number; turnsPerPrincipal: number; clock?: () => number }): TurnLimiter {
  const clock = options.clock ?? Date.now;
  const starts = new Map<string, number[]>();
  const running = new Map<string, number>();
  const runningBy = new Map<string, string>();

  return {
    admit(principalId, conversationId) {
      const now = clock();
      const recent = (starts.get(principalId) ?? []).filter((time) => time > now - 60_000);
      if (recent.length >= options.turnsPerMinute) {
        const retryAfterMs = recent[0]! + 60_000 - now;
        throw new LimitExceededError(
          `Too many turns started: the limit is ${options.turnsPerMinute} a minute per caller (LONGRUN_TURNS_PER_MINUTE). Try again in ${Math.ceil(retryAfterMs / 1000)} s.`,
          retryAfterMs,
        );
      }
      const active = running.get(principalId) ?? 0;
      if (active >= options.turnsPerPrincipal) {
        throw new LimitExceededError(
          `Too many turns running: the limit is ${options.turnsPerPrincipal} at once per caller (LONGRUN_MAX_TURNS_PER_PRINCIPAL). Try again when one has ended.`,
        );
      }
      recent.push(now);
      starts.set(principalId, recent);
      running.set(principalId, active + 1);
      runningBy.set(conversationId, principalId);
    },
    release(conversationId) {
      const principalId = runningBy.get(conversationId);
      if (principalId === undefined) return;
      runningBy.delete(conversationId);
      const left = (running.get(principalId) ?? 1) - 1;
      if (left <= 0) running.delete(principalId);
      else running.set(principalId, left);
    },
  };
}
