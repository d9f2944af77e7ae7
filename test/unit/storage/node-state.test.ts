// Proves the node-state codecs (cluster record, lease copies) write the documented bytes, reject any
// damaged copy, and that readers take the newest valid copy so a torn write loses nothing committed.
import { expect } from 'chai';
import { crc32c } from '@node-rs/crc32';
import {
  CLUSTER_RECORD_COPY_BYTES,
  NodeStateError,
  clusterRecordOffset,
  decodeClusterRecord,
  decodeLease,
  encodeClusterRecord,
  encodeLease,
  leaseCopyOffset,
  newestClusterRecord,
  newestLease,
  type ClusterRecord,
  type Lease,
} from '../../../src/storage/node-state.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');
const KiB = 1024;

function expectError(run: () => unknown, code: string, message: RegExp): void {
  expect(run).to.throw(NodeStateError, message).with.property('code', code);
}

describe('cluster record', () => {
  const minimal: ClusterRecord = { cluster: 'c1', allocations: [], nodes: ['a'] };
  const full: ClusterRecord = {
    cluster: 'production',
    allocations: [
      { guid: '6f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b', name: 'vol0', arrayOffset: 1048576, sizeBytes: 2 ** 40, pageBytes: 4096, owner: 'node-a' },
      { guid: '00000000-0000-0000-0000-000000000001', name: 'vøl1', arrayOffset: 2 ** 40 + 1048576, sizeBytes: 4096, pageBytes: 65536, owner: 'node-b' },
    ],
    nodes: ['node-a', 'node-b'],
  };

  it('encodes header, JSON body and zero padding to a whole block', () => {
    const body = Buffer.from('{"cluster":"c1","allocations":[],"nodes":["a"]}');
    const header = hex(
      [
        '4654564d53544154', // magic "FTVMSTAT"
        '00000001', // format version
        '0000000000000005', // sequence 5
        '0000002f', // body length 47
      ].join(''),
    );
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32c(body, crc32c(header))); // CRC of header bytes 0..23, then the body
    const expected = Buffer.concat([header, crc, body, Buffer.alloc(4096 - 28 - 47)]);
    expect(encodeClusterRecord(minimal, 5).toString('hex')).to.equal(expected.toString('hex'));
    expect(decodeClusterRecord(expected)).to.deep.equal({ record: minimal, sequence: 5 });
  });

  it('round-trips allocations and non-ASCII names, also from a whole 256 KiB copy', () => {
    const bytes = encodeClusterRecord(full, 2 ** 40);
    expect(decodeClusterRecord(bytes)).to.deep.equal({ record: full, sequence: 2 ** 40 });
    const copy = Buffer.alloc(CLUSTER_RECORD_COPY_BYTES);
    bytes.copy(copy);
    expect(decodeClusterRecord(copy)).to.deep.equal({ record: full, sequence: 2 ** 40 });
  });

  it('rejects a flipped byte anywhere in the header or body', () => {
    const good = encodeClusterRecord(full, 3);
    const end = 28 + good.readUInt32BE(20);
    for (let at = 0; at < end; at++) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x01;
      if (at < 8) expectError(() => decodeClusterRecord(bad), 'bad-magic', /not an ftvm cluster record/);
      else if (at < 12) expectError(() => decodeClusterRecord(bad), 'bad-version', /version/);
      else if (at >= 20 && at < 24) expect(() => decodeClusterRecord(bad)).to.throw(NodeStateError); // length: misfit or CRC
      else expectError(() => decodeClusterRecord(bad), 'bad-checksum', /cluster record checksum mismatch/);
    }
  });

  it('rejects a body longer than the copy, and a body that is not a cluster record', () => {
    const huge = encodeClusterRecord(minimal, 1);
    huge.writeUInt32BE(CLUSTER_RECORD_COPY_BYTES, 20);
    expectError(() => decodeClusterRecord(huge), 'bad-value', /does not fit/);
    expectError(() => decodeClusterRecord(withBody('{"cluster":')), 'bad-value', /not JSON/);
    expectError(() => decodeClusterRecord(withBody('{"cluster":"c","allocations":[{"guid":"x"}],"nodes":[]}')), 'bad-value', /guid/);
  });

  it('refuses to encode a record larger than a copy, before encoding', () => {
    const tooBig = { ...minimal, cluster: 'x'.repeat(CLUSTER_RECORD_COPY_BYTES) };
    expectError(() => encodeClusterRecord(tooBig, 1), 'too-large', /at most 262116 fit/);
  });

  it('alternates copies at 0 and 256 KiB by sequence parity', () => {
    expect([0, 1, 2, 7].map(clusterRecordOffset)).to.deep.equal([0, 256 * KiB, 0, 256 * KiB]);
  });

  it('takes the newest valid copy; a torn copy loses to the older one; both bad names both', () => {
    const older = encodeClusterRecord(minimal, 6);
    const newer = encodeClusterRecord(full, 7);
    expect(newestClusterRecord(older, newer).sequence).to.equal(7);
    expect(newestClusterRecord(newer, older).sequence).to.equal(7);
    const torn = Buffer.concat([newer.subarray(0, 100), Buffer.alloc(newer.length - 100)]);
    expect(newestClusterRecord(older, torn)).to.deep.equal({ record: minimal, sequence: 6 });
    expectError(
      () => newestClusterRecord(torn, Buffer.alloc(4096, 1)),
      'no-valid-copy',
      /no valid cluster record: copy A: cluster record checksum mismatch; copy B: not an ftvm cluster record/,
    );
    expectError(() => newestClusterRecord(Buffer.alloc(4096), Buffer.alloc(4096)), 'blank', /never written/);
  });

  it('calls a whole copy blank only if every byte is zero, however far in the first non-zero one lies', () => {
    const copy = (): Buffer => Buffer.alloc(CLUSTER_RECORD_COPY_BYTES);
    expectError(() => newestClusterRecord(copy(), copy()), 'blank', /never written/);
    for (const at of [8, 65_535, 65_536, CLUSTER_RECORD_COPY_BYTES - 1]) {
      const damaged = copy();
      damaged[at] = 1;
      expectError(() => newestClusterRecord(damaged, copy()), 'no-valid-copy', /copy A: not an ftvm cluster record; copy B: .*never written/);
    }
  });
});

/** A cluster record whose body is `json`, with a correct CRC. */
function withBody(json: string): Buffer {
  const body = Buffer.from(json);
  const header = hex('4654564d53544154 00000001 0000000000000001');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32c(body, crc32c(Buffer.concat([header, length]))));
  return Buffer.concat([header, length, crc, body]);
}

describe('lease copies', () => {
  const lease: Lease = { slot: 3, sequence: 9, epoch: 2, expiresAtMs: 1_700_000_012_345, holder: 'node-b', pid: 4242, processStart: 123456, host: 'h1' };
  const reseal = (buffer: Buffer): Buffer => {
    buffer.writeUInt32BE(crc32c(buffer.subarray(0, 4092)), 4092);
    return buffer;
  };

  it('encodes the documented header, zeroes, and CRC32C of bytes 0..4091 at 4092', () => {
    const header = hex(
      [
        '4654564d4c454153', // magic "FTVMLEAS"
        '00000001', // format version
        '00000003', // slot 3
        '0000000000000009', // sequence 9
        '0000000000000002', // epoch 2
        '0000018bcfe59839', // expires at 1700000012345 ms
        '0006', // holder name length
        '6e6f64652d62' + '00'.repeat(58), // "node-b" in a 64-byte field
        '00001092', // pid 4242
        '000000000001e240', // process start 123456 ticks
        '0002', // host name length
        '6831' + '00'.repeat(62), // "h1" in a 64-byte field
      ].join(''),
    );
    expect(header.length).to.equal(184);
    const bytes = encodeLease(lease);
    expect(bytes.length).to.equal(4096);
    expect(bytes.subarray(0, 184).toString('hex')).to.equal(header.toString('hex'));
    expect(bytes.subarray(184, 4092).every((byte) => byte === 0)).to.equal(true);
    expect(bytes.readUInt32BE(4092)).to.equal(crc32c(bytes.subarray(0, 4092)));
    expect(decodeLease(reseal(Buffer.concat([header, Buffer.alloc(4096 - 184)])))).to.deep.equal(lease);
  });

  it('round-trips a released slot and a 64-byte holder name, and refuses 65 bytes', () => {
    for (const holder of ['', 'n'.repeat(64), 'ñ'.repeat(32)]) {
      expect(decodeLease(encodeLease({ ...lease, holder }))).to.deep.equal({ ...lease, holder });
    }
    expectError(() => encodeLease({ ...lease, holder: 'n'.repeat(65) }), 'too-large', /65 bytes, at most 64/);
  });

  it('rejects a flipped byte anywhere', () => {
    const good = encodeLease(lease);
    for (let at = 0; at < 4096; at++) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x80;
      if (at < 8) expectError(() => decodeLease(bad), 'bad-magic', /not an ftvm lease/);
      else if (at < 12) expectError(() => decodeLease(bad), 'bad-version', /unsupported lease format version/);
      else expectError(() => decodeLease(bad), 'bad-checksum', /lease checksum mismatch/);
    }
  });

  it('rejects impossible values behind a valid checksum', () => {
    const badSlot = encodeLease(lease);
    badSlot.writeUInt32BE(16, 12);
    expectError(() => decodeLease(reseal(badSlot)), 'bad-value', /slot 16/);
    const longName = encodeLease(lease);
    longName.writeUInt16BE(65, 40);
    expectError(() => decodeLease(reseal(longName)), 'bad-value', /65 bytes is too long/);
  });

  it('places slot i copy c at 512 KiB + (2i + c) * 4096', () => {
    expect(leaseCopyOffset(0, 0)).to.equal(512 * KiB);
    expect(leaseCopyOffset(0, 1)).to.equal(512 * KiB + 4096);
    expect(leaseCopyOffset(3, 10)).to.equal(512 * KiB + 6 * 4096);
    expect(leaseCopyOffset(15, 9)).to.equal(512 * KiB + 31 * 4096); // last block: 636 KiB..640 KiB
    expect(() => leaseCopyOffset(16, 0)).to.throw(/no lease slot 16/);
  });

  it('takes the newest valid copy; a torn renewal loses to the previous one; blank slots say so', () => {
    const previous = encodeLease({ ...lease, sequence: 10 });
    const renewal = encodeLease({ ...lease, sequence: 11, expiresAtMs: lease.expiresAtMs + 5000 });
    expect(newestLease(previous, renewal).sequence).to.equal(11);
    const torn = Buffer.concat([renewal.subarray(0, 512), encodeLease({ ...lease, sequence: 9 }).subarray(512)]);
    expect(newestLease(previous, torn).sequence).to.equal(10);
    expectError(() => newestLease(Buffer.alloc(4096), Buffer.alloc(4096)), 'blank', /no valid lease: copy A: .*never written/);
    expectError(() => newestLease(torn, Buffer.alloc(4096)), 'no-valid-copy', /copy A: lease checksum mismatch; copy B: not an ftvm lease/);
  });
});
