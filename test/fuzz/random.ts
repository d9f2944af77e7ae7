// Seeded choices for the fuzzers: every decision of a case comes from one 32-bit seed, so printing
// the seed is enough to replay the case exactly.
import { randomBytes, seededRandom } from '../support/seeded-random.js';

/** Values that break length and offset arithmetic most often, per field width in bytes. */
const BOUNDARIES: Record<1 | 2 | 4, readonly number[]> = {
  1: [0, 1, 0x7f, 0x80, 0xfe, 0xff],
  2: [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff],
  4: [0, 1, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff],
};

export class FuzzRandom {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = seededRandom(seed);
  }

  /** A child stream for one sub-decision, so adding a choice in one generator does not shift the others. */
  fork(): FuzzRandom {
    return new FuzzRandom(this.u32());
  }

  float(): number {
    return this.next();
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Integer in [low, high]. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.below(items.length)] as T;
  }

  u32(): number {
    return (this.next() * 0x1_0000_0000) >>> 0;
  }

  bytes(length: number): Buffer {
    return Buffer.from(randomBytes(this.next, length));
  }

  /** Mostly small sizes, now and then large ones: most bugs need little data, some need a lot. */
  size(max: number): number {
    const roll = this.next();
    if (roll < 0.6) return this.below(Math.min(max, 64) + 1);
    if (roll < 0.9) return this.below(Math.min(max, 4096) + 1);
    return this.below(max + 1);
  }

  /** A boundary value of an unsigned field, or one next to one of the given limits. */
  boundary(width: 1 | 2 | 4, limits: readonly number[] = []): number {
    const max = width === 4 ? 0xffffffff : width === 2 ? 0xffff : 0xff;
    const near = limits.flatMap((limit) => [limit - 1, limit, limit + 1]).filter((value) => value >= 0 && value <= max);
    return this.pick([...BOUNDARIES[width], ...near, ...near]);
  }
}

/** The seed of iteration `index` of a run started with `base`: a replay needs only this number. */
export function iterationSeed(base: number, index: number): number {
  return (base + Math.imul(index, 0x9e3779b1)) >>> 0;
}
