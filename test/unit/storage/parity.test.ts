// Proves raid5 parity math is exact: hand-computed XOR, recovery of any lost chunk, read-modify-write, any alignment.
import { expect } from 'chai';
import { seededRandom } from '../../support/seeded-random.js';
import { computeParity, isZero, reconstructMissing, updateParity, xorInto } from '../../../src/storage/parity.js';

const SEED = Number(process.env.FTVM_TEST_SEED ?? 0x9a517e);


function randomBuffer(random: () => number, lengthBytes: number): Buffer {
  const buffer = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) buffer[i] = Math.floor(random() * 256);
  return buffer;
}

/** A copy of `bytes` starting `misalignBytes` into a fresh ArrayBuffer (Buffer.alloc starts 8-aligned). */
function placed(bytes: Buffer, misalignBytes: number): Buffer {
  const view = Buffer.alloc(bytes.length + misalignBytes).subarray(misalignBytes);
  bytes.copy(view);
  return view;
}

function xorReference(a: Buffer, b: Buffer): Buffer {
  return Buffer.from(a.map((byte, i) => byte ^ b[i]!));
}

describe('storage/parity', () => {
  it('computes the parity of three fixed buffers byte for byte', () => {
    // a ^ b = 02 01 07 0b 13 23 43 83 f0 0f aa 55, then ^ c flips the middle four and two low bits.
    const a = Buffer.from('01020408102040800ff0aa55', 'hex');
    const b = Buffer.from('0303030303030303ffff0000', 'hex');
    const c = Buffer.from('00000000ffffffff01000001', 'hex');
    const parity = Buffer.alloc(12);
    computeParity([a, b, c], parity);
    expect(parity.toString('hex')).to.equal('0201070becdcbc7cf10faa54');
  });

  for (const memberCount of [3, 4, 5]) {
    it(`recovers every lost chunk of a ${memberCount}-member stripe, data or parity`, () => {
      const random = seededRandom(SEED + memberCount);
      const data = Array.from({ length: memberCount - 1 }, () => randomBuffer(random, 4096 + 24));
      const parity = Buffer.alloc(data[0]!.length);
      computeParity(data, parity);
      const stripe = [...data, parity];
      for (let lost = 0; lost < memberCount; lost++) {
        const recovered = Buffer.alloc(parity.length, 0xee);
        reconstructMissing(stripe.filter((_, position) => position !== lost), recovered);
        expect(recovered.equals(stripe[lost]!), `seed ${SEED + memberCount}: lost chunk ${lost}`).to.equal(true);
      }
    });
  }

  it('updates parity by read-modify-write exactly as recomputing it would, in place or not', () => {
    const random = seededRandom(SEED);
    const data = Array.from({ length: 4 }, () => randomBuffer(random, 8192));
    const parity = Buffer.alloc(8192);
    computeParity(data, parity);
    const newData = randomBuffer(random, 8192);
    const fresh = Buffer.alloc(8192);
    updateParity(parity, data[2]!, newData, fresh);
    updateParity(parity, data[2]!, newData, parity);
    data[2] = newData;
    const recomputed = Buffer.alloc(8192);
    computeParity(data, recomputed);
    expect(fresh.equals(recomputed), `seed ${SEED}: into a fresh buffer`).to.equal(true);
    expect(parity.equals(recomputed), `seed ${SEED}: in place`).to.equal(true);
  });

  it('gives the same XOR at every alignment and length, including tails shorter than a word', () => {
    const random = seededRandom(SEED + 100);
    for (const lengthBytes of [0, 1, 7, 8, 9, 15, 16, 4096, 4099]) {
      const target = randomBuffer(random, lengthBytes);
      const source = randomBuffer(random, lengthBytes);
      const expected = xorReference(target, source);
      for (const [targetMisalign, sourceMisalign] of [[0, 0], [1, 1], [3, 0], [0, 5], [7, 3], [4, 4]]) {
        const where = `seed ${SEED + 100}: length ${lengthBytes}, offsets +${targetMisalign} +${sourceMisalign}`;
        const placedTarget = placed(target, targetMisalign!);
        xorInto(placedTarget, placed(source, sourceMisalign!));
        expect(placedTarget.equals(expected), where).to.equal(true);
        const parity = placed(Buffer.alloc(lengthBytes, 0xff), targetMisalign!);
        computeParity([placed(target, sourceMisalign!), placed(source, targetMisalign!)], parity);
        expect(parity.equals(expected), `${where}: computeParity`).to.equal(true);
      }
    }
  });

  it('refuses buffers of unequal length and an output that aliases a later source', () => {
    expect(() => xorInto(Buffer.alloc(8), Buffer.alloc(9))).to.throw(/unequal lengths 8 and 9/);
    expect(() => computeParity([Buffer.alloc(8), Buffer.alloc(16)], Buffer.alloc(8))).to.throw(/chunk of 16 bytes, expected 8/);
    const shared = Buffer.alloc(8);
    expect(() => computeParity([Buffer.alloc(8), shared], shared)).to.throw(/aliases/);
    expect(() => reconstructMissing([Buffer.alloc(8)], Buffer.alloc(8))).to.throw(/at least 2 surviving chunks/);
  });

  it('tells all-zero buffers from buffers with one set bit anywhere, at any alignment', () => {
    for (const lengthBytes of [0, 1, 8, 4096, 65536, 65537, 200_000]) {
      for (const misalignBytes of [0, 3]) {
        const buffer = placed(Buffer.alloc(lengthBytes), misalignBytes);
        expect(isZero(buffer), `length ${lengthBytes} +${misalignBytes}`).to.equal(true);
        for (const position of new Set([0, lengthBytes >> 1, 65536, lengthBytes - 1])) {
          if (position < 0 || position >= lengthBytes) continue;
          buffer[position] = 0x10;
          expect(isZero(buffer), `length ${lengthBytes} +${misalignBytes}, byte ${position} set`).to.equal(false);
          buffer[position] = 0;
        }
      }
    }
  });
});
