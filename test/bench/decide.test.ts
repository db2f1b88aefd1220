import { describe, expect, it } from 'vitest';
import { median, medianRun, roundDifferences, stepOutcome } from '../../bench/decide.js';

describe('the benchmark deciding from repeated runs', () => {
  it('takes the middle value, or the lower middle one', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2);
    expect(median([5])).toBe(5);
    expect(() => median([])).toThrow(/no values/);
  });

  it('picks the median run, a failed run counting as the worst', () => {
    const runs = [
      { name: 'slow', p99: 6.1 },
      { name: 'failed', p99: undefined },
      { name: 'fast', p99: 3.2 },
    ];
    expect(medianRun(runs, (run) => run.p99).name).toBe('slow');
    expect(medianRun(runs.slice(1), (run) => run.p99).name).toBe('fast');
    expect(medianRun([{ p99: Number.NaN }, { p99: 9 }, { p99: 8 }], (run) => run.p99).p99).toBe(9);
  });

  it('takes round-by-round differences, a round with a failed run counting as the worst', () => {
    expect(roundDifferences([1.5, 1.0, 2.0], [0.5, 0.75, 0.5])).toEqual([1, 0.25, 1.5]);
    expect(roundDifferences([1.5, Number.POSITIVE_INFINITY], [0.5, 0.5])).toEqual([1, Number.POSITIVE_INFINITY]);
    // The floor failing does not make longrun look faster.
    expect(roundDifferences([1.5], [Number.POSITIVE_INFINITY])).toEqual([Number.POSITIVE_INFINITY]);
    expect(() => roundDifferences([1], [1, 2])).toThrow(/differ in number/);
  });

  it('decides an S4 step by its first run when that holds, else by most of three', () => {
    expect(stepOutcome([], 3)).toEqual({ more: true, held: false });
    expect(stepOutcome([true], 3)).toEqual({ more: false, held: true });
    expect(stepOutcome([false], 3)).toEqual({ more: true, held: false });
    // Two failures decide it; no third run.
    expect(stepOutcome([false, false], 3)).toEqual({ more: false, held: false });
    expect(stepOutcome([false, true], 3)).toEqual({ more: true, held: false });
    expect(stepOutcome([false, true, true], 3)).toEqual({ more: false, held: true });
    expect(stepOutcome([false, true, false], 3)).toEqual({ more: false, held: false });
  });

  it('decides by one run when only one is allowed, and never holds on a tie', () => {
    expect(stepOutcome([false], 1)).toEqual({ more: false, held: false });
    expect(stepOutcome([true], 1)).toEqual({ more: false, held: true });
    expect(stepOutcome([false, true], 2)).toEqual({ more: false, held: false });
    expect(stepOutcome([false, true, true], 5)).toEqual({ more: true, held: false });
    expect(stepOutcome([false, true, true, true], 5)).toEqual({ more: false, held: true });
  });
});
