// Proves the write-intent bitmap maps writes to regions, puts each region's bit where documented
// (LSB-first within a byte, 32768 regions per page), counts dirty regions, and survives a round trip.
import { expect } from 'chai';
import { WriteIntentBitmap, WriteIntentBitmapError, bitmapSlotBytesFor } from '../../../src/storage/write-intent-bitmap.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('write-intent bitmap', () => {
  it('puts region 0 in byte 0 bit 0, region 7 in byte 0 bit 7, region 9 in byte 1 bit 1', () => {
    const bitmap = new WriteIntentBitmap(4 * MiB, GiB);
    bitmap.set(0);
    expect(bitmap.encodeSlot().subarray(0, 2).toString('hex')).to.equal('0100');
    bitmap.set(7);
    bitmap.set(9);
    expect(bitmap.encodeSlot().subarray(0, 3).toString('hex')).to.equal('810200');
  });

  it('sizes a slot in whole pages of 32768 regions', () => {
    expect(bitmapSlotBytesFor(4 * MiB, GiB)).to.equal(4096);
    expect(bitmapSlotBytesFor(4 * MiB, 2048 * GiB)).to.equal(65536);
    expect(bitmapSlotBytesFor(MiB, 32769 * MiB)).to.equal(8192); // one region past a full page
    const partial = new WriteIntentBitmap(4 * MiB, 10 * MiB);
    expect(partial.regionCount).to.equal(3);
    expect(partial.encodeSlot().length).to.equal(4096);
  });

  it('maps a write to every region it touches', () => {
    const bitmap = new WriteIntentBitmap(4 * MiB, GiB);
    expect(bitmap.regionsOf(0, 4096)).to.deep.equal([0]);
    expect(bitmap.regionsOf(4 * MiB - 4096, 8192)).to.deep.equal([0, 1]);
    expect(bitmap.regionsOf(4 * MiB, 4 * MiB)).to.deep.equal([1]);
    expect(bitmap.regionsOf(5 * MiB, 8 * MiB)).to.deep.equal([1, 2, 3]);
    expect(bitmap.regionsOf(GiB - 1, 1)).to.deep.equal([255]);
    expect(bitmap.regionsOf(100, 0)).to.deep.equal([]);
    expect(() => bitmap.regionsOf(GiB - 4096, 8192)).to.throw(/outside the data area/);
  });

  it('counts dirty regions and reports whether a bit changed', () => {
    const bitmap = new WriteIntentBitmap(4 * MiB, GiB);
    expect([bitmap.set(200), bitmap.set(3), bitmap.set(200), bitmap.set(255)]).to.deep.equal([true, true, false, true]);
    expect(bitmap.dirtyCount).to.equal(3);
    expect(bitmap.dirtyRegions()).to.deep.equal([3, 200, 255]);
    expect([bitmap.clear(200), bitmap.clear(200), bitmap.clear(4)]).to.deep.equal([true, false, false]);
    expect(bitmap.dirtyCount).to.equal(2);
    expect(bitmap.isSet(3)).to.equal(true);
    expect(bitmap.isSet(200)).to.equal(false);
    expect(() => bitmap.set(256)).to.throw(/no region 256/);
  });

  it('encodes the page that holds a region: region 32768 + 10 is page 1, byte 1, bit 2', () => {
    const bitmap = new WriteIntentBitmap(MiB, 64 * 1024 * MiB); // 65536 regions, 2 pages
    const region = 32768 + 10;
    expect([bitmap.pageOf(32767), bitmap.pageOf(32768), bitmap.pageOf(65535)]).to.deep.equal([0, 1, 1]);
    bitmap.set(region);
    const expected = Buffer.alloc(4096);
    expected[1] = 0x04;
    expect(bitmap.encodePage(1).equals(expected)).to.equal(true);
    expect(bitmap.encodePage(0).equals(Buffer.alloc(4096))).to.equal(true);
    expect(bitmap.encodeSlot().equals(Buffer.concat([Buffer.alloc(4096), expected]))).to.equal(true);
    expect(() => bitmap.encodePage(2)).to.throw(/no page 2/);
  });

  it('decodes a slot back, with its dirty count', () => {
    const bitmap = new WriteIntentBitmap(MiB, 64 * 1024 * MiB);
    for (const region of [0, 9, 4095, 32768, 65535]) bitmap.set(region);
    const decoded = WriteIntentBitmap.decodeSlot(bitmap.encodeSlot(), MiB, 64 * 1024 * MiB);
    expect(decoded.dirtyRegions()).to.deep.equal([0, 9, 4095, 32768, 65535]);
    expect(decoded.dirtyCount).to.equal(5);
  });

  it('rejects a slot with a bit past the last region, or of the wrong size', () => {
    const slot = Buffer.alloc(4096);
    slot[32] = 0x01; // region 256 of a 256-region bitmap
    expect(() => WriteIntentBitmap.decodeSlot(slot, 4 * MiB, GiB))
      .to.throw(WriteIntentBitmapError, /bit 256 set past the last region 255/)
      .with.property('code', 'bad-value');
    expect(() => WriteIntentBitmap.decodeSlot(Buffer.alloc(8192), 4 * MiB, GiB)).to.throw(WriteIntentBitmapError, /8192 bytes/);
  });
});
