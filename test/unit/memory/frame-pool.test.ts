// Proves the buddy frame pool: blocks never overlap, splitting and merging keep the accounting
// exact, a full pool says so (null) instead of failing, and freeing everything merges back whole.
import { expect } from 'chai';
import { FramePool, FramePoolError, FRAME_BYTES, MAX_PAGE_BYTES } from '../../../src/memory/index.js';
import { randomInt, seededRandom } from '../../support/seeded-random.js';

const SEED = Number(process.env.FTVM_TEST_SEED ?? 77);

describe('FramePool', () => {
  it('splits a 1 MiB block for a 4 KiB page and merges it back when freed', () => {
    const pool = new FramePool(MAX_PAGE_BYTES);
    const small = pool.allocate(FRAME_BYTES);
    expect(small).to.equal(0);
    expect(pool.freeBytes).to.equal(MAX_PAGE_BYTES - FRAME_BYTES);
    expect(pool.largestFreeBytes()).to.equal(MAX_PAGE_BYTES / 2);
    pool.free(small as number);
    expect(pool.freeBytes).to.equal(MAX_PAGE_BYTES);
    expect(pool.largestFreeBytes()).to.equal(MAX_PAGE_BYTES);
  });

  it('hands out views of the pool memory, not copies', () => {
    const pool = new FramePool(MAX_PAGE_BYTES);
    const frame = pool.allocate(8192) as number;
    pool.view(frame).fill(7);
    expect(pool.memory[frame]).to.equal(7);
    expect(pool.memory[frame + 8191]).to.equal(7);
    expect(pool.view(frame).length).to.equal(8192);
  });

  it('returns null when no block of the size is free, and succeeds again after a free', () => {
    const pool = new FramePool(2 * MAX_PAGE_BYTES);
    const a = pool.allocate(MAX_PAGE_BYTES) as number;
    pool.allocate(FRAME_BYTES);
    expect(pool.allocate(MAX_PAGE_BYTES), 'fragmented: no whole 1 MiB block left').to.equal(null);
    pool.free(a);
    expect(pool.allocate(MAX_PAGE_BYTES)).to.equal(a);
  });

  it('refuses sizes that are not a power of two in range, and pools not in whole 1 MiB', () => {
    const pool = new FramePool(MAX_PAGE_BYTES);
    for (const bytes of [0, 2048, 12288, 2 * MAX_PAGE_BYTES]) expect(() => pool.allocate(bytes), String(bytes)).to.throw(FramePoolError);
    expect(() => new FramePool(MAX_PAGE_BYTES + FRAME_BYTES)).to.throw(FramePoolError, /multiple of/);
  });

  it('catches a double free', () => {
    const pool = new FramePool(MAX_PAGE_BYTES);
    const frame = pool.allocate(FRAME_BYTES) as number;
    pool.free(frame);
    expect(() => pool.free(frame)).to.throw(/not allocated/);
  });

  it(`never overlaps blocks under random allocate/free, and merges back whole (seed ${SEED})`, () => {
    const random = seededRandom(SEED);
    const pool = new FramePool(8 * MAX_PAGE_BYTES);
    const owner = new Int32Array(pool.poolBytes / FRAME_BYTES).fill(-1);
    const live = new Map<number, number>();
    for (let step = 0; step < 20_000; step++) {
      if (live.size > 0 && random() < 0.45) {
        const offsets = [...live.keys()];
        const offset = offsets[randomInt(random, offsets.length)] as number;
        owner.fill(-1, offset / FRAME_BYTES, (offset + (live.get(offset) as number)) / FRAME_BYTES);
        live.delete(offset);
        pool.free(offset);
        continue;
      }
      const bytes = FRAME_BYTES << randomInt(random, 9);
      const offset = pool.allocate(bytes);
      if (offset === null) continue;
      expect(offset % bytes, `seed ${SEED} step ${step}: aligned to its size`).to.equal(0);
      for (let frame = offset / FRAME_BYTES; frame < (offset + bytes) / FRAME_BYTES; frame++) {
        expect(owner[frame], `seed ${SEED} step ${step}: frame ${frame} handed out twice`).to.equal(-1);
        owner[frame] = offset;
      }
      live.set(offset, bytes);
      const used = [...live.values()].reduce((sum, size) => sum + size, 0);
      expect(pool.freeBytes, `seed ${SEED} step ${step}: accounting`).to.equal(pool.poolBytes - used);
    }
    for (const offset of live.keys()) pool.free(offset);
    expect(pool.freeBytes).to.equal(pool.poolBytes);
    expect(pool.largestFreeBytes()).to.equal(MAX_PAGE_BYTES);
    for (let i = 0; i < 8; i++) expect(pool.allocate(MAX_PAGE_BYTES), 'all eight 1 MiB blocks came back').to.not.equal(null);
  });
});
