/**
 * How the benchmark decides from repeated runs (`bench/run.ts`): the median round of S1 and S2,
 * S1's gap to the floor, and whether an S4 step held. Pure functions, so that they are tested
 * (`test/bench/decide.test.ts`) apart from the runs themselves.
 */

/** The median of `values`: the middle one, or the lower of the two middle ones. */
export function median(values: number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * The run whose `figure` is the median of all runs' (the lower middle one for an even count). A
 * run without a figure (it failed: `undefined` or NaN) counts as the worst.
 */
export function medianRun<T>(runs: T[], figure: (run: T) => number | undefined): T {
  if (runs.length === 0) throw new Error('median of no runs');
  const value = (run: T): number => {
    const found = figure(run);
    return found === undefined || Number.isNaN(found) ? Number.POSITIVE_INFINITY : found;
  };
  const sorted = [...runs].sort((a, b) => value(a) - value(b));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * Round by round, `mine` less `theirs` (two servers measured side by side); a round where either
 * has no figure (+∞, a failed run) counts as the worst, +∞.
 */
export function roundDifferences(mine: number[], theirs: number[]): number[] {
  if (mine.length !== theirs.length) throw new Error(`rounds differ in number: ${mine.length} and ${theirs.length}`);
  return mine.map((value, round) => {
    const other = theirs[round]!;
    return Number.isFinite(value) && Number.isFinite(other) ? value - other : Number.POSITIVE_INFINITY;
  });
}

/**
 * Where an S4 step stands after the runs so far (`held`: whether each run held), when a step whose
 * first run does not hold is decided by most of up to `allowed` runs: `more` when another run is
 * needed, else whether the step held. A first run that holds decides the step at once.
 */
export function stepOutcome(held: boolean[], allowed: number): { more: boolean; held: boolean } {
  if (held.length === 0) return { more: true, held: false };
  if (held[0]) return { more: false, held: true };
  const majority = Math.floor(allowed / 2) + 1;
  const holding = held.filter(Boolean).length;
  const failing = held.length - holding;
  if (holding >= majority) return { more: false, held: true };
  if (failing >= majority || held.length >= allowed) return { more: false, held: false };
  return { more: true, held: false };
}
