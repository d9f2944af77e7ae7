// Proves the RAID geometry places every array byte where md's left-symmetric raid5 (and plain raid1/raid10) would, exactly once.
import { expect } from 'chai';
import { seededRandom } from '../../support/seeded-random.js';
import {
  BLOCK_BYTES,
  type Geometry,
  type RaidLevel,
  arrayDataBytes,
  dataChunksPerStripe,
  dataIndexOf,
  dataMembersOf,
  mapRange,
  parityMemberOf,
  stripeCount,
  stripeDataBytes,
  stripesOf,
  validateGeometry,
} from '../../../src/storage/layout.js';

const BASE_SEED = Number(process.env.FTVM_TEST_SEED ?? 0x5eed1a70);
const PROPERTY_CASES = 3000;


function geometry(level: RaidLevel, memberCount: number, stripes: number, chunkBytes = BLOCK_BYTES): Geometry {
  return { level, memberCount, chunkBytes, memberDataBytes: stripes * chunkBytes };
}

const modulo = (value: number, divisor: number): number => ((value % divisor) + divisor) % divisor;

describe('storage/layout', () => {
  describe('validateGeometry', () => {
    it('accepts the smallest and largest valid geometries of each level', () => {
      for (const g of [
        geometry('raid1', 2, 1),
        geometry('raid10', 4, 1),
        geometry('raid5', 3, 1),
        geometry('raid1', 32, 3, 16 * 1024 * 1024),
        geometry('raid10', 32, 2, 8192),
        geometry('raid5', 32, 5, 65536),
      ]) {
        expect(validateGeometry(g), JSON.stringify(g)).to.equal(null);
      }
    });

    const invalid: Array<[string, Geometry, RegExp]> = [
      ['an unknown level', { ...geometry('raid5', 3, 1), level: 'raid6' as RaidLevel }, /unknown RAID level 'raid6'/],
      ['raid1 with one member', geometry('raid1', 1, 1), /raid1 needs at least 2 members, got 1/],
      ['raid10 with two members', geometry('raid10', 2, 1), /raid10 needs at least 4 members, got 2/],
      ['raid10 with an odd member count', geometry('raid10', 5, 1), /raid10 needs an even member count \(mirror pairs\), got 5/],
      ['raid5 with two members', geometry('raid5', 2, 1), /raid5 needs at least 3 members, got 2/],
      ['a fractional member count', geometry('raid5', 3.5, 1), /raid5 needs at least 3 members, got 3.5/],
      ['too many members', geometry('raid5', 33, 1), /memberCount 33 exceeds the limit of 32/],
      ['a chunk smaller than a block', geometry('raid5', 3, 1, 2048), /chunkBytes must be a power of two from 4096 to 16777216, got 2048/],
      ['a chunk that is not a power of two', geometry('raid5', 3, 1, 12288), /chunkBytes .* got 12288/],
      ['a chunk over 16 MiB', geometry('raid5', 3, 1, 32 * 1024 * 1024), /chunkBytes .* got 33554432/],
      ['an empty data area', { ...geometry('raid5', 3, 1), memberDataBytes: 0 }, /memberDataBytes must be a positive multiple of chunkBytes \(4096\), got 0/],
      ['a negative data area', { ...geometry('raid5', 3, 1), memberDataBytes: -4096 }, /memberDataBytes .* got -4096/],
      ['a data area that is not whole chunks', { ...geometry('raid5', 3, 1, 8192), memberDataBytes: 12288 }, /multiple of chunkBytes \(8192\), got 12288/],
      ['a data area too large to address', { ...geometry('raid5', 32, 1), memberDataBytes: 2 ** 50 }, /memberDataBytes 1125899906842624 is too large to address/],
    ];
    for (const [what, g, message] of invalid) {
      it(`refuses ${what}`, () => {
        expect(validateGeometry(g)).to.match(message);
      });
    }
  });

  it('derives stripe and array sizes for each level', () => {
    const sizes = (g: Geometry): number[] => [dataChunksPerStripe(g), stripeDataBytes(g), stripeCount(g), arrayDataBytes(g)];
    expect(sizes(geometry('raid1', 3, 10, 8192))).to.deep.equal([1, 8192, 10, 81920]);
    expect(sizes(geometry('raid10', 6, 10, 8192))).to.deep.equal([3, 24576, 10, 245760]);
    expect(sizes(geometry('raid5', 5, 10, 8192))).to.deep.equal([4, 32768, 10, 327680]);
  });

  it('rotates raid5 parity left-symmetric for 4 members, like md', () => {
    const g = geometry('raid5', 4, 8);
    // [parity, D0, D1, D2] members per stripe; the pattern repeats every 4 stripes.
    const table = [
      [3, 0, 1, 2],
      [2, 3, 0, 1],
      [1, 2, 3, 0],
      [0, 1, 2, 3],
      [3, 0, 1, 2],
      [2, 3, 0, 1],
      [1, 2, 3, 0],
      [0, 1, 2, 3],
    ];
    for (const [stripe, row] of table.entries()) {
      const actual = [parityMemberOf(g, stripe), ...[0, 1, 2].map((dataIndex) => dataMembersOf(g, stripe, dataIndex)[0])];
      expect(actual, `stripe ${stripe}`).to.deep.equal(row);
    }
  });

  it('places raid10 chunks on mirror pairs and raid1 chunks on every member', () => {
    const raid10 = geometry('raid10', 6, 4);
    for (let stripe = 0; stripe < 4; stripe++) {
      expect([0, 1, 2].map((dataIndex) => dataMembersOf(raid10, stripe, dataIndex))).to.deep.equal([[0, 1], [2, 3], [4, 5]]);
    }
    const raid1 = geometry('raid1', 3, 4);
    expect(dataMembersOf(raid1, 3, 0)).to.deep.equal([0, 1, 2]);
    expect(() => parityMemberOf(raid1, 0)).to.throw(/raid1 has no parity/);
    expect(() => dataMembersOf(raid10, 0, 3)).to.throw(/no data chunk 3/);
    expect(() => dataMembersOf(raid10, 4, 0)).to.throw(/no stripe 4/);
  });

  it('inverts dataMembersOf with dataIndexOf for every stripe and member', () => {
    for (const g of [geometry('raid1', 3, 7), geometry('raid10', 4, 7), geometry('raid10', 8, 7), ...[3, 4, 5, 7, 32].map((n) => geometry('raid5', n, 2 * n + 1))]) {
      for (let stripe = 0; stripe < stripeCount(g); stripe++) {
        for (let member = 0; member < g.memberCount; member++) {
          const dataIndex = dataIndexOf(g, stripe, member);
          const where = `${g.level} x${g.memberCount} stripe ${stripe} member ${member}`;
          if (dataIndex === null) {
            expect(member, where).to.equal(parityMemberOf(g, stripe));
          } else {
            expect(dataMembersOf(g, stripe, dataIndex), where).to.include(member);
          }
        }
      }
    }
  });

  it('refuses ranges outside the array with a RangeError', () => {
    const g = geometry('raid5', 3, 4); // 32 KiB of data
    expect(mapRange(g, 32768, 0)).to.deep.equal([]);
    expect(stripesOf(g, 32768, 0)).to.deep.equal({ first: 4, last: 3 });
    for (const [offset, length] of [[-1, 1], [0, 32769], [32768, 1], [0.5, 1], [0, -1], [Number.MAX_SAFE_INTEGER, 1]] as const) {
      expect(() => mapRange(g, offset, length), `${offset}+${length}`).to.throw(RangeError, /outside the array of 32768 bytes/);
      expect(() => stripesOf(g, offset, length), `${offset}+${length}`).to.throw(RangeError);
    }
  });

  it('maps a range crossing stripes into per-chunk spans', () => {
    const g = geometry('raid5', 3, 4); // stripe = 2 chunks of 4096
    expect(mapRange(g, 6000, 4000)).to.deep.equal([
      { stripe: 0, dataIndex: 1, arrayOffset: 6000, memberOffset: 1904, offsetInChunk: 1904, lengthBytes: 2192, members: [1], parityMember: 2 },
      { stripe: 1, dataIndex: 0, arrayOffset: 8192, memberOffset: 4096, offsetInChunk: 0, lengthBytes: 1808, members: [2], parityMember: 1 },
    ]);
    expect(stripesOf(g, 6000, 4000)).to.deep.equal({ first: 0, last: 1 });
  });

  it(`agrees with an independent formula on ${PROPERTY_CASES} random geometries and ranges`, () => {
    for (let caseIndex = 0; caseIndex < PROPERTY_CASES; caseIndex++) {
      const seed = (BASE_SEED + caseIndex) >>> 0;
      const random = seededRandom(seed);
      const pick = (low: number, high: number): number => low + Math.floor(random() * (high - low + 1));
      const level = (['raid1', 'raid10', 'raid5'] as const)[pick(0, 2)]!;
      const memberCount = level === 'raid10' ? 2 * pick(2, 16) : pick(level === 'raid1' ? 2 : 3, 32);
      const chunkBytes = BLOCK_BYTES * 2 ** (random() < 0.05 ? 12 : pick(0, 4));
      const g = geometry(level, memberCount, pick(1, 40), chunkBytes);
      const totalBytes = arrayDataBytes(g);
      // Start near a chunk boundary half the time, where off-by-one errors live.
      const offset = random() < 0.5 ? Math.min(totalBytes, Math.max(0, pick(0, totalBytes / chunkBytes) * chunkBytes + pick(-2, 2))) : pick(0, totalBytes);
      const lengthBytes = Math.min(totalBytes - offset, random() < 0.8 ? pick(0, 3 * chunkBytes) : pick(0, totalBytes));
      const context = `seed ${seed} (rerun: FTVM_TEST_SEED=${seed}): ${level} x${memberCount} chunk ${chunkBytes} range ${offset}+${lengthBytes}`;

      const spans = mapRange(g, offset, lengthBytes);
      let expectedOffset = offset;
      const dataBytesPerStripe = chunkBytes * (level === 'raid1' ? 1 : level === 'raid10' ? memberCount / 2 : memberCount - 1);
      for (const span of spans) {
        expect(span.arrayOffset, `${context}: contiguous`).to.equal(expectedOffset);
        expect(span.lengthBytes, `${context}: non-empty, inside one chunk`).to.be.within(1, chunkBytes - span.offsetInChunk);
        const stripe = Math.floor(span.arrayOffset / dataBytesPerStripe);
        const dataIndex = Math.floor((span.arrayOffset % dataBytesPerStripe) / chunkBytes);
        expect([span.stripe, span.dataIndex, span.offsetInChunk], `${context}: position`).to.deep.equal([stripe, dataIndex, span.arrayOffset % chunkBytes]);
        expect(span.memberOffset, `${context}: member offset`).to.equal(stripe * chunkBytes + (span.arrayOffset % chunkBytes));
        const expectedMembers =
          level === 'raid1' ? [...Array(memberCount).keys()] : level === 'raid10' ? [2 * dataIndex, 2 * dataIndex + 1] : [modulo(dataIndex - stripe, memberCount)];
        expect(span.members, `${context}: members`).to.deep.equal(expectedMembers);
        expect(span.parityMember, `${context}: parity`).to.equal(level === 'raid5' ? modulo(-1 - stripe, memberCount) : null);
        expectedOffset += span.lengthBytes;
      }
      expect(expectedOffset, `${context}: covers the range`).to.equal(offset + lengthBytes);
      const { first, last } = stripesOf(g, offset, lengthBytes);
      expect([first, last], `${context}: stripesOf`).to.deep.equal(
        spans.length === 0 ? [Math.floor(offset / dataBytesPerStripe), Math.floor(offset / dataBytesPerStripe) - 1] : [spans[0]!.stripe, spans.at(-1)!.stripe],
      );
    }
  });

  it('gives every raid5 array block its own member block, and the parity blocks fill the rest', () => {
    for (const memberCount of [3, 4, 5, 6]) {
      for (const chunkBytes of [BLOCK_BYTES, 4 * BLOCK_BYTES]) {
        const g = geometry('raid5', memberCount, 2 * memberCount + 1, chunkBytes);
        const used = new Set<string>();
        for (let offset = 0; offset < arrayDataBytes(g); offset += BLOCK_BYTES) {
          const spans = mapRange(g, offset, BLOCK_BYTES);
          expect(spans, `offset ${offset}`).to.have.length(1);
          const key = `${spans[0]!.members[0]}@${spans[0]!.memberOffset}`;
          expect(used.has(key), `x${memberCount} chunk ${chunkBytes}: ${key} used twice`).to.equal(false);
          used.add(key);
        }
        for (let stripe = 0; stripe < stripeCount(g); stripe++) {
          for (let offsetInChunk = 0; offsetInChunk < chunkBytes; offsetInChunk += BLOCK_BYTES) {
            const key = `${parityMemberOf(g, stripe)}@${stripe * chunkBytes + offsetInChunk}`;
            expect(used.has(key), `x${memberCount} chunk ${chunkBytes}: parity ${key} holds data`).to.equal(false);
            used.add(key);
          }
        }
        expect(used.size).to.equal((memberCount * g.memberDataBytes) / BLOCK_BYTES);
      }
    }
  });
});
