/**
 * The SDK's merge of live and stored events: whatever the order and the duplicates, each seq is
 * released once, in order, and nothing is released past a gap.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventSequencer } from '../../src/client/sequencer.js';

const event = (seq: number) => ({ seq });
const seqs = (events: Array<{ seq: number }>) => events.map((item) => item.seq);

describe('EventSequencer', () => {
  it('holds everything until begin, then drops what is not after afterSeq', () => {
    const sequencer = new EventSequencer<{ seq: number }>();
    expect(sequencer.offer(event(3))).toEqual([]);
    expect(sequencer.offer(event(4))).toEqual([]);
    expect(sequencer.offer(event(6))).toEqual([]);
    expect(seqs(sequencer.begin(3))).toEqual([4]);
    expect(sequencer.cursor).toBe(4);
    expect(sequencer.hasGap).toBe(true);
    expect(seqs(sequencer.offer(event(5)))).toEqual([5, 6]);
    expect(sequencer.hasGap).toBe(false);
    expect(sequencer.begin(0)).toEqual([]);
  });

  it('drops duplicates and old events, and ignores a seq that is not a positive integer', () => {
    const sequencer = new EventSequencer<{ seq: number }>();
    sequencer.begin(0);
    expect(seqs(sequencer.offer(event(1)))).toEqual([1]);
    expect(sequencer.offer(event(1))).toEqual([]);
    expect(sequencer.offer(event(3))).toEqual([]);
    expect(sequencer.offer(event(3))).toEqual([]);
    expect(sequencer.held).toBe(1);
    expect(sequencer.offer(event(Number.NaN))).toEqual([]);
    expect(sequencer.offer(event(2.5))).toEqual([]);
    expect(sequencer.offer(event(0))).toEqual([]);
    expect(seqs(sequencer.offer(event(2)))).toEqual([2, 3]);
  });

  it('releases 1..n exactly once and in order, whatever the arrival order and duplicates', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 0, max: 20 }),
        fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 40 }),
        fc.func(fc.integer()),
        (count, beginAfter, duplicates, order) => {
          const afterSeq = Math.min(beginAfter, count);
          const arrivals = [...Array.from({ length: count }, (_, index) => index + 1), ...duplicates.filter((seq) => seq <= count)];
          arrivals.sort((a, b) => order(a) - order(b) || a - b);
          const sequencer = new EventSequencer<{ seq: number }>();
          const released: number[] = [];
          const beginAt = Math.floor(arrivals.length / 3);
          arrivals.forEach((seq, index) => {
            if (index === beginAt) released.push(...seqs(sequencer.begin(afterSeq)));
            released.push(...seqs(sequencer.offer(event(seq))));
          });
          if (arrivals.length <= beginAt) released.push(...seqs(sequencer.begin(afterSeq)));
          expect(released).toEqual(Array.from({ length: count - afterSeq }, (_, index) => afterSeq + index + 1));
          expect(sequencer.held).toBe(0);
        },
      ),
    );
  });
});
