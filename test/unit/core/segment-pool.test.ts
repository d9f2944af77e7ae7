// Proves the size classes of pooled payloads: the smallest power of two that holds the bytes, at
// least the class minimum, on both sides of clz32's range.
import { expect } from 'chai';
import { MIN_SEGMENT_CLASS_BYTES, segmentClassOf, SegmentPool, sizeClassOf } from '../../../src/core/index.js';

describe('sizeClassOf', () => {
  it('rounds up to a power of two, never below the minimum', () => {
    const vectors: Array<[number, number, number]> = [
      [1, 4096, 4096],
      [4095, 4096, 4096],
      [4096, 4096, 4096],
      [4097, 4096, 8192],
      [65535, 4096, 65536],
      [65537, 4096, 131072],
      [(1 << 20) + 1, 4096, 1 << 21],
      [3, 1, 4],
      [2 ** 31, 4096, 2 ** 31],
      [2 ** 31 + 1, 4096, 2 ** 32],
      [2 ** 33 - 5, 4096, 2 ** 33],
    ];
    for (const [bytes, minimum, expected] of vectors) expect(sizeClassOf(bytes, minimum), `${bytes} at least ${minimum}`).to.equal(expected);
  });

  it('gives segments of their class and takes them back for the next of that class', () => {
    const pool = new SegmentPool(1 << 20);
    const first = pool.take(5000);
    expect([first.length, first.buffer.byteLength, segmentClassOf(5000)]).to.deep.equal([5000, 8192, 8192]);
    pool.give(first);
    expect(pool.take(8000).buffer, 'the same class: the same memory').to.equal(first.buffer);
    expect(pool.take(10).buffer.byteLength).to.equal(MIN_SEGMENT_CLASS_BYTES);
  });
});
