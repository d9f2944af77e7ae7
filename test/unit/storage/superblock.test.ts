// Proves the superblock codec writes the documented bytes, rejects every damaged or impossible copy,
// picks the surviving copy after a torn write, and places the member file's areas where documented.
import { expect } from 'chai';
import { crc32c } from '@node-rs/crc32';
import {
  BITMAP_SLOT_COUNT,
  DEFAULT_BITMAP_REGION_BYTES,
  SuperblockError,
  computeMemberLayout,
  decodeSuperblock,
  encodeSuperblock,
  newestSuperblock,
  superblockCopyOffset,
  superblockLayout,
  type Superblock,
} from '../../../src/storage/superblock.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');
const MiB = 1024 * 1024;

/** Recomputes the trailing CRC independently of the code under test, to reach the value checks. */
function reseal(buffer: Buffer): Buffer {
  buffer.writeUInt32BE(crc32c(buffer.subarray(0, 4092)), 4092);
  return buffer;
}

const sample: Superblock = {
  arrayUuid: 'f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
  level: 'raid5',
  memberCount: 4,
  memberIndex: 2,
  chunkBytes: 64 * 1024,
  blockBytes: 4096,
  memberDataBytes: 1024 * MiB,
  dataOffset: 2 * MiB,
  bitmapOffset: 8192,
  bitmapRegionBytes: 4 * MiB,
  bitmapSlotBytes: 4096,
  bitmapSlotCount: 8,
  checksumOffset: 40960,
  checksumBytes: MiB,
  eventCounter: 2 ** 40 + 7,
  createdAtMs: 1_700_000_000_000,
  clean: true,
  zeroEntries: false,
  memberStates: ['active', 'failed', 'rebuilding', 'missing'],
  rebuildPositionBytes: 0x12345000,
};

const sampleHeader = hex(
  [
    '4654564d52414944', // magic "FTVMRAID"
    '00000001', // format version
    'f81d4fae7dec11d0a76500a0c91e6bf6', // array uuid
    '00000005 00000004 00000002', // level raid5, 4 members, this is index 2
    '00010000 00001000', // chunk 64 KiB, block 4 KiB
    '0000000040000000', // member data 1 GiB
    '0000000000200000', // data offset 2 MiB
    '0000000000002000', // bitmap offset 8192
    '00400000 00001000 00000008', // region 4 MiB, slot 4096 bytes, 8 slots
    '00000000', // reserved
    '000000000000a000', // checksum offset 40960
    '0000000000100000', // checksum bytes 1 MiB
    '0000010000000007', // event counter 2^40 + 7
    '0000018bcfe56800', // created at 1700000000000 ms
    '00000001 00000000', // flags: clean; reserved
    '00010203' + '00'.repeat(28), // member states: active, failed, rebuilding, missing
    '0000000012345000', // rebuild position
  ].join(''),
);

function expectError(run: () => unknown, code: string, message: RegExp): void {
  expect(run).to.throw(SuperblockError, message).with.property('code', code);
}

describe('superblock codec', () => {
  it('lays out the documented 168 header bytes', () => {
    expect(sampleHeader.length).to.equal(168);
    expect(superblockLayout.span).to.equal(168);
  });

  it('encodes the documented bytes: header, zeroes, CRC32C of bytes 0..4091 at 4092', () => {
    const bytes = encodeSuperblock(sample);
    expect(bytes.length).to.equal(4096);
    expect(bytes.subarray(0, 168).toString('hex')).to.equal(sampleHeader.toString('hex'));
    expect(bytes.subarray(168, 4092).every((byte) => byte === 0)).to.equal(true);
    expect(bytes.readUInt32BE(4092)).to.equal(crc32c(bytes.subarray(0, 4092)));
  });

  it('decodes the hand-built bytes back to the same superblock', () => {
    const bytes = reseal(Buffer.concat([sampleHeader, Buffer.alloc(4096 - 168)]));
    expect(decodeSuperblock(bytes)).to.deep.equal(sample);
  });

  it('sets flag bit 1 for an array whose zero checksum entry means zeroes', () => {
    const bytes = encodeSuperblock({ ...sample, zeroEntries: true });
    expect(bytes.subarray(120, 124).toString('hex')).to.equal('00000003');
    expect(encodeSuperblock({ ...sample, clean: false, zeroEntries: true }).subarray(120, 124).toString('hex')).to.equal('00000002');
    expect(decodeSuperblock(bytes).zeroEntries).to.equal(true);
    expect(decodeSuperblock(reseal(Buffer.concat([sampleHeader, Buffer.alloc(4096 - 168)]))).zeroEntries).to.equal(false);
  });

  it('round-trips every level, one and 32 members, and a dirty array', () => {
    const variants: Superblock[] = [
      { ...sample, level: 'raid1', memberCount: 1, memberIndex: 0, memberStates: ['active'], clean: false },
      { ...sample, level: 'raid10', memberCount: 32, memberIndex: 31, memberStates: Array(32).fill('rebuilding') },
      { ...sample, eventCounter: 0, createdAtMs: 0, rebuildPositionBytes: 0 },
    ];
    for (const variant of variants) expect(decodeSuperblock(encodeSuperblock(variant))).to.deep.equal(variant);
  });

  it('rejects a flipped byte anywhere: magic, version, or checksum', () => {
    const good = encodeSuperblock(sample);
    for (let at = 0; at < 4096; at++) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x20;
      if (at < 8) expectError(() => decodeSuperblock(bad), 'bad-magic', /not an ftvm RAID member/);
      else if (at < 12) expectError(() => decodeSuperblock(bad), 'bad-version', /version/);
      else expectError(() => decodeSuperblock(bad), 'bad-checksum', /superblock checksum mismatch/);
    }
  });

  it('tells a never-written member (all zeroes) from a foreign one', () => {
    expectError(() => decodeSuperblock(Buffer.alloc(4096)), 'blank', /not an ftvm RAID member: never written/);
    expectError(() => decodeSuperblock(Buffer.alloc(4096, 0xff)), 'bad-magic', /^not an ftvm RAID member$/);
    expectError(() => decodeSuperblock(Buffer.alloc(4095)), 'bad-value', /4095 bytes/);
  });

  it('rejects format version 2 even with a valid checksum', () => {
    const bytes = encodeSuperblock(sample);
    bytes.writeUInt32BE(2, 8);
    expectError(() => decodeSuperblock(reseal(bytes)), 'bad-version', /unsupported superblock format version 2/);
  });

  it('rejects impossible values behind a valid checksum', () => {
    const cases: Array<[string, (bytes: Buffer) => void, RegExp]> = [
      ['member index >= count', (b) => b.writeUInt32BE(4, 36), /member index 4 >= member count 4/],
      ['no members', (b) => b.writeUInt32BE(0, 32), /member count 0/],
      ['33 members', (b) => b.writeUInt32BE(33, 32), /member count 33/],
      ['unknown level', (b) => b.writeUInt32BE(6, 28), /unknown RAID level code 6/],
      ['unknown member state', (b) => (b[129] = 4), /unknown member state 4 at index 1/],
      ['state past the last member', (b) => (b[128 + 4] = 1), /member state set at index 4, past the last member/],
      ['unknown flag', (b) => b.writeUInt32BE(5, 120), /unknown superblock flags 0x5/],
      ['block bytes 512', (b) => b.writeUInt32BE(512, 44), /block bytes 512/],
      ['rebuild past the end', (b) => b.writeUInt32BE(0x41000000, 164), /rebuild position/],
      ['overlapping areas', (b) => b.writeUInt32BE(0x9000, 92), /bitmap area overlaps the checksum table/],
    ];
    for (const [, damage, message] of cases) {
      const bytes = encodeSuperblock(sample);
      damage(bytes);
      expectError(() => decodeSuperblock(reseal(bytes)), 'bad-value', message);
    }
  });

  it('refuses to encode an impossible superblock (a programmer error)', () => {
    expect(() => encodeSuperblock({ ...sample, memberStates: ['active'] })).to.throw(/1 member states for 4 members/);
    expect(() => encodeSuperblock({ ...sample, arrayUuid: 'not-a-uuid' })).to.throw(/uuid/);
  });
});

describe('superblock copies', () => {
  const at = (eventCounter: number): Buffer => encodeSuperblock({ ...sample, eventCounter });

  it('alternates copies by event counter parity', () => {
    expect([0, 1, 2, 3, 2 ** 40 + 7].map(superblockCopyOffset)).to.deep.equal([0, 4096, 0, 4096, 4096]);
  });

  it('takes the higher event counter when both copies are valid', () => {
    expect(newestSuperblock(at(10), at(11)).eventCounter).to.equal(11);
    expect(newestSuperblock(at(13), at(12)).eventCounter).to.equal(13);
  });

  it('keeps the previous superblock when the write of the next one was torn', () => {
    // Copy B held counter 9; writing counter 11 into it stopped after the first 2 KiB.
    const torn = Buffer.concat([at(11).subarray(0, 2048), at(9).subarray(2048)]);
    expect(newestSuperblock(at(10), torn).eventCounter).to.equal(10);
    expect(newestSuperblock(torn, at(10)).eventCounter).to.equal(10);
  });

  it('throws naming both reasons when neither copy is valid', () => {
    const corrupt = at(4);
    corrupt[100] ^= 1;
    expectError(
      () => newestSuperblock(corrupt, Buffer.alloc(4096, 7)),
      'no-valid-copy',
      /no valid superblock: copy A: superblock checksum mismatch; copy B: not an ftvm RAID member/,
    );
    expectError(() => newestSuperblock(Buffer.alloc(4096), Buffer.alloc(4096)), 'blank', /never written/);
  });
});

describe('member layout', () => {
  it('places bitmap, checksum table and data for a 1 GiB member (4 KiB blocks, 4 MiB regions)', () => {
    // Regions: 1 GiB / 4 MiB = 256 bits = 32 bytes, rounded up to one 4096-byte slot.
    // Bitmap: 8192 + 8 slots * 4096 = 40960 is where the checksum table starts.
    // Checksums: 1 GiB / 4 KiB = 262144 blocks * 4 bytes = 1048576 bytes (already whole pages).
    // Data: 40960 + 1048576 = 1089536, rounded up to 1 MiB = 2097152; file = 2 MiB + 1 GiB.
    const memberLayout = computeMemberLayout({
      memberDataBytes: 1024 * MiB,
      blockBytes: 4096,
      bitmapRegionBytes: DEFAULT_BITMAP_REGION_BYTES,
      bitmapSlotCount: BITMAP_SLOT_COUNT,
    });
    expect(memberLayout).to.deep.equal({
      bitmapOffset: 8192,
      bitmapSlotBytes: 4096,
      checksumOffset: 40960,
      checksumBytes: 1048576,
      dataOffset: 2097152,
      fileBytes: 1075838976,
    });
  });

  it('rounds a small member up: 40 KiB of data, 64 KiB regions, 2 slots', () => {
    // 1 region → one 4096-byte slot; checksum table at 8192 + 8192 = 16384; 10 blocks * 4 = 40 → 4096.
    expect(computeMemberLayout({ memberDataBytes: 40960, blockBytes: 4096, bitmapRegionBytes: 65536, bitmapSlotCount: 2 })).to.deep.equal({
      bitmapOffset: 8192,
      bitmapSlotBytes: 4096,
      checksumOffset: 16384,
      checksumBytes: 4096,
      dataOffset: MiB,
      fileBytes: MiB + 40960,
    });
  });

  it('produces a layout that the superblock accepts', () => {
    const memberLayout = computeMemberLayout({ memberDataBytes: 1024 * MiB, blockBytes: 4096, bitmapRegionBytes: 4 * MiB, bitmapSlotCount: 8 });
    const { bitmapOffset, bitmapSlotBytes, checksumOffset, checksumBytes, dataOffset } = memberLayout;
    const superblock = { ...sample, bitmapOffset, bitmapSlotBytes, checksumOffset, checksumBytes, dataOffset };
    expect(decodeSuperblock(encodeSuperblock(superblock))).to.deep.equal(superblock);
  });
});
