// Proves CRC32C chaining, the zero-block CRC, and that the checksum table stores big-endian u32s in
// block order, 1024 per 4096-byte page, zero-padded past the last block.
import { expect } from 'chai';
import { crc32c } from '@node-rs/crc32';
import { ZERO_BLOCK_CRC, crc32cOf } from '../../../src/storage/crc.js';
import { blockMatches, CHECKSUMS_PER_PAGE, ChecksumTable, checksumTableBytesFor, entryOf, ZERO_COLLISION_ENTRY, ZERO_ENTRY } from '../../../src/storage/checksum-table.js';
import { zeroCrcImpostor } from '../../support/zero-crc-impostor.js';

describe('crc32c helpers', () => {
  it('chains buffers as if concatenated: "1234" + "56789" is the check value 0xe3069283', () => {
    expect(crc32cOf(Buffer.from('1234'), Buffer.from('56789'))).to.equal(0xe3069283);
    expect(crc32cOf(Buffer.from('123456789'))).to.equal(0xe3069283);
    expect(crc32cOf()).to.equal(0);
  });

  it('knows the CRC32C of a 4096-byte zero block', () => {
    expect(ZERO_BLOCK_CRC).to.equal(0x98f94189);
    expect(ZERO_BLOCK_CRC).to.equal(crc32c(Buffer.alloc(4096)));
  });
});

describe('checksum table', () => {
  /** 1500 blocks: one full page and one page of 476 entries plus padding. */
  function sampleTable(): ChecksumTable {
    const table = new ChecksumTable(1500);
    table.set(0, 0x01020304);
    table.set(1023, 0xdeadbeef);
    table.set(1024, 0xcafef00d);
    table.set(1499, 0x11223344);
    return table;
  }

  it('maps blocks to pages of 1024 entries', () => {
    const table = sampleTable();
    expect(CHECKSUMS_PER_PAGE).to.equal(1024);
    expect([table.pageOf(0), table.pageOf(1023), table.pageOf(1024), table.pageOf(1499)]).to.deep.equal([0, 0, 1, 1]);
    expect(table.pageCount).to.equal(2);
    expect(() => table.pageOf(1500)).to.throw(/no block 1500/);
  });

  it('encodes page 0 as entries 0..1023, big-endian', () => {
    const expected = Buffer.alloc(4096);
    expected.write('01020304', 0, 'hex');
    expected.write('deadbeef', 4092, 'hex');
    expect(sampleTable().encodePage(0).equals(expected)).to.equal(true);
  });

  it('encodes the last page with zero padding past the last block', () => {
    const expected = Buffer.alloc(4096);
    expected.write('cafef00d', 0, 'hex');
    expected.write('11223344', (1499 - 1024) * 4, 'hex'); // byte 1900
    expect(sampleTable().encodePage(1).equals(expected)).to.equal(true);
    expect(() => sampleTable().encodePage(2)).to.throw(/no page 2/);
  });

  it('encodes the whole table as its pages in order and decodes it back', () => {
    const table = sampleTable();
    const bytes = table.encode();
    expect(bytes.length).to.equal(8192);
    expect(bytes.equals(Buffer.concat([table.encodePage(0), table.encodePage(1)]))).to.equal(true);
    const decoded = ChecksumTable.decode(bytes, 1500);
    for (const block of [0, 1, 1023, 1024, 1499]) expect(decoded.get(block)).to.equal(table.get(block));
    expect(decoded.encode().equals(bytes)).to.equal(true);
  });

  it('pads to whole pages', () => {
    expect([0, 1, 1024, 1025, 262144].map(checksumTableBytesFor)).to.deep.equal([0, 4096, 4096, 8192, 1048576]);
  });

  it('starts a fresh array with every entry equal to the zero-block CRC', () => {
    const table = ChecksumTable.filledWith(2048, ZERO_BLOCK_CRC);
    expect(table.get(0)).to.equal(ZERO_BLOCK_CRC);
    expect(table.get(2047)).to.equal(ZERO_BLOCK_CRC);
    expect(table.encodePage(1).toString('hex')).to.equal('98f94189'.repeat(1024));
  });

  it('says which runs of blocks are zeroes by their entries', () => {
    const table = ChecksumTable.filledWith(2048, ZERO_BLOCK_CRC);
    expect(table.allZero(0, 2048)).to.equal(true);
    table.set(1030, 0x12345678);
    expect([table.allZero(0, 1030), table.allZero(1030, 1), table.allZero(1029, 2), table.allZero(1031, 1017)]).to.deep.equal([true, false, false, true]);
    expect(() => table.allZero(2047, 2)).to.throw(/no block 2048/);
  });
});

describe('checksum entries: the zero entry means zeroes', () => {
  it('the impostor block really has the zero block\'s CRC', () => {
    expect(crc32c(zeroCrcImpostor())).to.equal(ZERO_BLOCK_CRC);
    expect(zeroCrcImpostor().equals(Buffer.alloc(4096))).to.equal(false);
  });

  it('stores zeroes as the zero entry, the impostor as the collision entry, anything else as its CRC', () => {
    expect(ZERO_ENTRY).to.equal(0x98f94189);
    expect(ZERO_COLLISION_ENTRY).to.equal(0x98f94188);
    expect(entryOf(Buffer.alloc(4096))).to.equal(ZERO_ENTRY);
    expect(entryOf(zeroCrcImpostor())).to.equal(ZERO_COLLISION_ENTRY);
    const other = Buffer.alloc(4096, 7);
    expect(entryOf(other)).to.equal(crc32c(other));
  });

  it('matches a block against its entry, and never takes the impostor for zeroes or zeroes for it', () => {
    const zero = Buffer.alloc(4096);
    const other = Buffer.alloc(4096, 7);
    expect(blockMatches(zero, ZERO_ENTRY)).to.equal(true);
    expect(blockMatches(zeroCrcImpostor(), ZERO_ENTRY), 'same CRC, other bytes').to.equal(false);
    expect(blockMatches(zeroCrcImpostor(), ZERO_COLLISION_ENTRY)).to.equal(true);
    expect(blockMatches(zero, ZERO_COLLISION_ENTRY)).to.equal(false);
    expect(blockMatches(other, crc32c(other))).to.equal(true);
    expect(blockMatches(other, ZERO_ENTRY)).to.equal(false);
    expect(blockMatches(other, crc32c(zero) ^ 2)).to.equal(false);
  });
});
