// Proves the partner codec writes and reads the exact bytes of docs/protocol.md for every message type, frames a stream identically at every split, and refuses each malformed frame with its reason (an oversized one before its payload arrives).
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import {
  BY_REFERENCE_BYTES,
  encodeBatch,
  encodeBatchParts,
  encodeMessage,
  expectsResponse,
  IoOp,
  isResponseType,
  LockMode,
  MAX_IO_BYTES,
  MAX_HANDSHAKE_PAYLOAD_BYTES,
  MAX_PAYLOAD_BYTES,
  MessageFramer,
  messageTypeName,
  MessageType,
  NIL_ALLOCATION,
  NO_NODE,
  PartnerFramingError,
  PROTOCOL_VERSION,
  RefusalReason,
  SenseKind,
  Status,
  type FramingFailure,
  type Message,
} from '../../../src/partner/index.js';
import { SegmentPool } from '../../../src/core/index.js';

/** Hex pieces, spaces allowed, joined. */
const hex = (...pieces: string[]): Buffer => Buffer.from(pieces.join('').replace(/\s+/g, ''), 'hex');

const ALLOCATION = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const ALLOCATION_BYTES = '0f1e2d3c 4b5a6978 8796a5b4 c3d2e1f0';
const CLUSTER = 'c1c2c3c4-d1d2-e1e2-f1f2-a1a2a3a4a5a6';
const CLUSTER_BYTES = 'c1c2c3c4 d1d2e1e2 f1f2a1a2 a3a4a5a6';
const NONCE_HEX = '000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f';
const NONCE = hex(NONCE_HEX);
const PROOF_HEX = 'a0a1a2a3a4a5a6a7a8a9aaabacadaeaf b0b1b2b3b4b5b6b7b8b9babbbcbdbebf';
const PROOF = hex(PROOF_HEX);

interface Vector {
  name: string;
  message: Message;
  bytes: Buffer;
}

// Frame header on every line one: magic "FTVM" | version 2 | type | request id | payload length.
const vectors: Vector[] = [
  {
    name: 'space request',
    message: { type: MessageType.SpaceRequest, requestId: 1, bytesWanted: 1024 * 1024 },
    bytes: hex(
      '4654564d 0005 0001 00000001 00000008',
      '0000000000100000', // bytesWanted = 1 MiB
    ),
  },
  {
    name: 'allocate memory',
    message: { type: MessageType.AllocateMemory, requestId: 2, allocation: ALLOCATION, sizeBytes: 2 ** 30, pageBytes: 65536, ownerNodeId: 1 },
    bytes: hex(
      '4654564d 0005 0002 00000002 00000020',
      ALLOCATION_BYTES, // allocation GUID
      '0000000040000000', // sizeBytes = 1 GiB
      '00010000', // pageBytes = 64 KiB
      '00000001', // ownerNodeId = 1
    ),
  },
  {
    name: 'release memory',
    message: { type: MessageType.ReleaseMemory, requestId: 3, allocation: ALLOCATION },
    bytes: hex(
      '4654564d 0005 0003 00000003 00000010',
      ALLOCATION_BYTES, // allocation GUID
    ),
  },
  {
    name: 'lock request',
    message: { type: MessageType.LockRequest, requestId: 4, allocation: ALLOCATION, virtualPage: 2 ** 32 + 5, requestingNodeId: 2, mode: LockMode.Exclusive },
    bytes: hex(
      '4654564d 0005 0004 00000004 0000001d',
      ALLOCATION_BYTES, // allocation GUID
      '0000000100000005', // virtualPage = 2^32 + 5
      '00000002', // requestingNodeId = 2
      '02', // mode = exclusive
    ),
  },
  {
    name: 'read header',
    message: { type: MessageType.ReadHeader, requestId: 5, allocation: ALLOCATION, firstVirtualPage: 0, maxEntries: 1024 },
    bytes: hex(
      '4654564d 0005 0005 00000005 0000001c',
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000000', // firstVirtualPage = 0
      '00000400', // maxEntries = 1024
    ),
  },
  {
    name: 'write page (modified range only)',
    message: {
      type: MessageType.WritePage, requestId: 6, allocation: ALLOCATION, virtualPage: 7, version: 42,
      pageBytes: 4096, offset: 512, length: 4, dirty: true, zeroFill: false, data: hex('deadbeef'),
    },
    bytes: hex(
      '4654564d 0005 0006 00000006 00000032', // payload 46 + 4 data bytes
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000007', // virtualPage = 7
      '000000000000002a', // version = 42
      '00001000', // pageBytes = 4096
      '00000200', // offset = 512
      '00000004', // length = 4
      '01', // dirty
      '00', // zeroFill = no
      'deadbeef', // data: the modified bytes only
    ),
  },
  {
    name: 'write page (zero fill, no data)',
    message: {
      type: MessageType.WritePage, requestId: 16, allocation: ALLOCATION, virtualPage: 8, version: 43,
      pageBytes: 4096, offset: 0, length: 4096, dirty: true, zeroFill: true, data: Buffer.alloc(0),
    },
    bytes: hex(
      '4654564d 0005 0006 00000010 0000002e', // payload 46, no data
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000008', // virtualPage = 8
      '000000000000002b', // version = 43
      '00001000', // pageBytes = 4096
      '00000000', // offset = 0
      '00001000', // length = 4096
      '01', // dirty
      '01', // zeroFill: the range reads as zeros
    ),
  },
  {
    name: 'sense request',
    message: { type: MessageType.SenseRequest, requestId: 7, kind: SenseKind.Allocation, allocation: ALLOCATION },
    bytes: hex(
      '4654564d 0005 0007 00000007 00000012',
      '0002', // kind = allocation
      ALLOCATION_BYTES, // allocation GUID
    ),
  },
  {
    name: 'allocate read',
    message: { type: MessageType.AllocateRead, requestId: 8, allocation: ALLOCATION, virtualPage: 7, nodeId: 1, pageIn: true },
    bytes: hex(
      '4654564d 0005 0008 00000008 0000001d',
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000007', // virtualPage = 7
      '00000001', // nodeId = 1
      '01', // pageIn: not resident yet
    ),
  },
  {
    name: 'allocate write',
    message: { type: MessageType.AllocateWrite, requestId: 9, allocation: ALLOCATION, virtualPage: 7, nodeId: 1, pageIn: false },
    bytes: hex(
      '4654564d 0005 0009 00000009 0000001d',
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000007', // virtualPage = 7
      '00000001', // nodeId = 1
      '00', // pageIn = no
    ),
  },
  {
    name: 'release pointer',
    message: { type: MessageType.ReleasePointer, requestId: 10, allocation: ALLOCATION, virtualPage: 7, nodeId: 1, mode: LockMode.Exclusive, modified: true },
    bytes: hex(
      '4654564d 0005 000a 0000000a 0000001e',
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000007', // virtualPage = 7
      '00000001', // nodeId = 1
      '02', // mode = exclusive
      '01', // modified
    ),
  },
  {
    name: 'command complete (ok)',
    message: { type: MessageType.CommandComplete, requestId: 6, requestType: MessageType.WritePage, status: Status.Ok },
    bytes: hex(
      '4654564d 0005 0080 00000006 00000004',
      '0006', // requestType = write page
      '0000', // status = ok
    ),
  },
  {
    name: 'command complete (locked)',
    message: { type: MessageType.CommandComplete, requestId: 4, requestType: MessageType.LockRequest, status: Status.Locked },
    bytes: hex(
      '4654564d 0005 0080 00000004 00000004',
      '0004', // requestType = lock request
      '0002', // status = locked
    ),
  },
  {
    name: 'space status',
    message: { type: MessageType.SpaceStatus, requestId: 1, freeBytes: 256 * 2 ** 20, reclaimableBytes: 64 * 2 ** 20 },
    bytes: hex(
      '4654564d 0005 0081 00000001 00000010',
      '0000000010000000', // freeBytes = 256 MiB
      '0000000004000000', // reclaimableBytes = 64 MiB
    ),
  },
  {
    name: 'lock status',
    message: { type: MessageType.LockStatus, requestId: 4, ownerNodeId: NO_NODE, readerCount: 3, mode: LockMode.Shared },
    bytes: hex(
      '4654564d 0005 0084 00000004 00000009',
      'ffffffff', // ownerNodeId = none
      '00000003', // readerCount = 3
      '01', // mode = shared
    ),
  },
  {
    name: 'header (two page entries)',
    message: {
      type: MessageType.Header, requestId: 5, sizeBytes: 2 ** 30, pageBytes: 65536, ownerNodeId: 1, nextVirtualPage: 8, final: false,
      pages: [
        { virtualPage: 0, version: 1, ownerNodeId: 1, readerCount: 0, dirtyOffset: 0, dirtyLength: 0, lockMode: LockMode.None },
        { virtualPage: 7, version: 42, ownerNodeId: 1, readerCount: 0, dirtyOffset: 512, dirtyLength: 4, lockMode: LockMode.Exclusive },
      ],
    },
    bytes: hex(
      '4654564d 0005 0085 00000005 0000005b', // payload 25 + 2 × 33
      '0000000040000000', // sizeBytes = 1 GiB
      '00010000', // pageBytes = 64 KiB
      '00000001', // ownerNodeId = 1
      '0000000000000008', // nextVirtualPage = 8
      '00', // final = no
      // entry 0
      '0000000000000000', // virtualPage = 0
      '0000000000000001', // version = 1
      '00000001', // ownerNodeId = 1
      '00000000', // readerCount = 0
      '00000000', // dirtyOffset = 0
      '00000000', // dirtyLength = 0 (clean)
      '00', // lockMode = none
      // entry 1
      '0000000000000007', // virtualPage = 7
      '000000000000002a', // version = 42
      '00000001', // ownerNodeId = 1
      '00000000', // readerCount = 0
      '00000200', // dirtyOffset = 512
      '00000004', // dirtyLength = 4
      '02', // lockMode = exclusive
    ),
  },
  {
    name: 'sense information',
    message: {
      type: MessageType.SenseInformation, requestId: 7, kind: SenseKind.Allocation, epoch: 3, poolBytes: 256 * 2 ** 20, freeBytes: 128 * 2 ** 20,
      residentPages: 100, dirtyPages: 5, pagingQueueLength: 0, destageQueueLength: 5,
    },
    bytes: hex(
      '4654564d 0005 0087 00000007 0000002a',
      '0002', // kind = allocation
      '0000000000000003', // epoch = 3
      '0000000010000000', // poolBytes = 256 MiB
      '0000000008000000', // freeBytes = 128 MiB
      '00000064', // residentPages = 100
      '00000005', // dirtyPages = 5
      '00000000', // pagingQueueLength = 0
      '00000005', // destageQueueLength = 5
    ),
  },
  {
    name: 'challenge',
    message: { type: MessageType.Challenge, requestId: 0, protocolVersion: 5, nonce: NONCE },
    bytes: hex(
      '4654564d 0005 0108 00000000 00000022',
      '0005', // protocolVersion = 5
      NONCE_HEX, // nonce: 32 random bytes
    ),
  },
  {
    name: 'hello',
    message: { type: MessageType.Hello, requestId: 0, clusterId: CLUSTER, nodeId: 1, epoch: 3, protocolVersion: 5, proof: PROOF },
    bytes: hex(
      '4654564d 0005 0101 00000000 0000003e',
      CLUSTER_BYTES, // clusterId
      '00000001', // nodeId = 1
      '0000000000000003', // epoch = 3
      '0005', // protocolVersion = 5
      PROOF_HEX, // proof: HMAC-SHA256 (handshake.ts)
    ),
  },
  {
    name: 'hello reply',
    message: { type: MessageType.HelloReply, requestId: 0, clusterId: CLUSTER, nodeId: 2, epoch: 3, protocolVersion: 5, proof: PROOF },
    bytes: hex(
      '4654564d 0005 0181 00000000 0000003e',
      CLUSTER_BYTES, // clusterId
      '00000002', // nodeId = 2
      '0000000000000003', // epoch = 3
      '0005', // protocolVersion = 5
      PROOF_HEX, // proof
    ),
  },
  {
    name: 'hello refusal',
    message: { type: MessageType.HelloRefusal, requestId: 0, reason: RefusalReason.ClusterMismatch, clusterId: CLUSTER, nodeId: 2, epoch: 3, protocolVersion: 5, proof: PROOF },
    bytes: hex(
      '4654564d 0005 0182 00000000 00000040',
      '0002', // reason = cluster mismatch
      CLUSTER_BYTES, // clusterId (the refuser's)
      '00000002', // nodeId = 2
      '0000000000000003', // epoch = 3
      '0005', // protocolVersion = 5
      PROOF_HEX, // proof
    ),
  },
  {
    name: 'heartbeat',
    message: { type: MessageType.Heartbeat, requestId: 17, epoch: 3 },
    bytes: hex(
      '4654564d 0005 0102 00000011 00000008', // request id = sequence number 17
      '0000000000000003', // epoch = 3
    ),
  },
  {
    name: 'page clean',
    message: { type: MessageType.PageClean, requestId: 18, allocation: ALLOCATION, virtualPage: 7, version: 42, pageCount: 3 },
    bytes: hex(
      '4654564d 0005 0103 00000012 00000024',
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000007', // virtualPage = 7
      '000000000000002a', // version = 42 is on disk
      '00000003', // pageCount = 3: pages 7, 8 and 9
    ),
  },
  {
    name: 'volume handover',
    message: { type: MessageType.VolumeHandover, requestId: 19, allocation: ALLOCATION, fromNodeId: 2, toNodeId: 1, epoch: 4 },
    bytes: hex(
      '4654564d 0005 0104 00000013 00000020',
      ALLOCATION_BYTES, // allocation
      '00000002', // fromNodeId = 2: served it
      '00000001', // toNodeId = 1: serves it from now on
      '0000000000000004', // epoch = 4
    ),
  },
  {
    name: 'holder announcement',
    message: { type: MessageType.HolderAnnouncement, requestId: 23, previousNodeId: 0, holderNodeId: 1, epoch: 5 },
    bytes: hex(
      '4654564d 0005 0109 00000017 00000010',
      '00000000', // previousNodeId = 0: the holder that is gone
      '00000001', // holderNodeId = 1: holds the array now
      '0000000000000005', // epoch = 5
    ),
  },
  {
    name: 'mirror reclaim',
    message: { type: MessageType.MirrorReclaim, requestId: 24, allocation: ALLOCATION, nodeId: 1, epoch: 5 },
    bytes: hex(
      '4654564d 0005 010a 00000018 0000001c',
      ALLOCATION_BYTES, // allocation
      '00000001', // nodeId = 1: about to serve it
      '0000000000000005', // epoch = 5
    ),
  },
  {
    name: 'owner notice',
    message: { type: MessageType.OwnerNotice, requestId: 25, allocation: ALLOCATION, ownerNodeId: 0, epoch: 5 },
    bytes: hex(
      '4654564d 0005 010b 00000019 0000001c',
      ALLOCATION_BYTES, // allocation
      '00000000', // ownerNodeId = 0: serves it
      '0000000000000005', // epoch = 5
    ),
  },
  {
    name: 'catalog change',
    message: { type: MessageType.CatalogChange, requestId: 26, allocation: ALLOCATION, epoch: 5 },
    bytes: hex(
      '4654564d 0005 010c 0000001a 00000018',
      ALLOCATION_BYTES, // allocation: made or grown; the cluster record says how
      '0000000000000005', // epoch = 5
    ),
  },
  {
    name: 'volume removal',
    message: { type: MessageType.VolumeRemoval, requestId: 27, allocation: ALLOCATION, epoch: 5, commit: true, force: false },
    bytes: hex(
      '4654564d 0005 010d 0000001b 0000001a',
      ALLOCATION_BYTES, // allocation
      '0000000000000005', // epoch = 5
      '01', // commit: remove the export (not only ask whether it is in use)
      '00', // force: no; Locked if a client has it open
    ),
  },
  {
    name: 'resync begin',
    message: { type: MessageType.ResyncBegin, requestId: 20, epoch: 4, allocationCount: 2, pageCount: 300 },
    bytes: hex(
      '4654564d 0005 0105 00000014 00000010',
      '0000000000000004', // epoch = 4
      '00000002', // allocationCount = 2
      '0000012c', // pageCount = 300
    ),
  },
  {
    name: 'resync end',
    message: { type: MessageType.ResyncEnd, requestId: 21, epoch: 4, allocationCount: 2, pageCount: 300 },
    bytes: hex(
      '4654564d 0005 0106 00000015 00000010',
      '0000000000000004', // epoch = 4
      '00000002', // allocationCount = 2
      '0000012c', // pageCount = 300
    ),
  },
  {
    name: 'forwarded io (write to a volume)',
    message: { type: MessageType.ForwardedIo, requestId: 22, op: IoOp.Write, allocation: ALLOCATION, offset: 65536 + 512, length: 4, fua: true, data: hex('deadbeef') },
    bytes: hex(
      '4654564d 0005 0107 00000016 00000026', // payload 34 + 4 data bytes
      '02', // op = write
      '01', // fua
      ALLOCATION_BYTES, // allocation GUID
      '0000000000010200', // offset = 64 KiB + 512
      '0000000000000004', // length = 4
      'deadbeef', // data: the bytes to write
    ),
  },
  {
    name: 'forwarded io (read from the shared array, no data)',
    message: { type: MessageType.ForwardedIo, requestId: 23, op: IoOp.Read, allocation: NIL_ALLOCATION, offset: 2 ** 32, length: 4, fua: false, data: Buffer.alloc(0) },
    bytes: hex(
      '4654564d 0005 0107 00000017 00000022', // payload 34, no data
      '01', // op = read
      '00', // fua = no
      '00000000 00000000 00000000 00000000', // allocation = nil: the shared array itself
      '0000000100000000', // offset = 4 GiB
      '0000000000000004', // length = 4
    ),
  },
  {
    name: 'forwarded io (probe)',
    message: { type: MessageType.ForwardedIo, requestId: 24, op: IoOp.Probe, allocation: NIL_ALLOCATION, offset: 0, length: 0, fua: false, data: Buffer.alloc(0) },
    bytes: hex(
      '4654564d 0005 0107 00000018 00000022',
      '00', // op = probe: do you hold the array open?
      '00', // fua = no
      '00000000 00000000 00000000 00000000', // allocation = nil
      '0000000000000000', // offset = 0
      '0000000000000000', // length = 0
    ),
  },
  {
    name: 'io data',
    message: { type: MessageType.IoData, requestId: 23, data: hex('cafebabe') },
    bytes: hex(
      '4654564d 0005 0187 00000017 00000004', // answers request 23; payload = data
      'cafebabe', // the 4 bytes read
    ),
  },
  {
    name: 'io data (empty)',
    message: { type: MessageType.IoData, requestId: 25, data: Buffer.alloc(0) },
    bytes: hex('4654564d 0005 0187 00000019 00000000'), // a read of length 0: no payload at all
  },
  {
    name: 'command complete (probe: array not open here)',
    message: { type: MessageType.CommandComplete, requestId: 24, requestType: MessageType.ForwardedIo, status: Status.NotResident },
    bytes: hex(
      '4654564d 0005 0080 00000018 00000004',
      '0107', // requestType = forwarded io
      '0004', // status = not resident
    ),
  },
  {
    name: 'write page (clean page of a warm handover, dirty = 0)',
    message: {
      type: MessageType.WritePage, requestId: 17, allocation: ALLOCATION, virtualPage: 9, version: 0,
      pageBytes: 4096, offset: 0, length: 4096, dirty: false, zeroFill: false, data: Buffer.alloc(4096, 0xab),
    },
    bytes: hex(
      '4654564d 0005 0006 00000011 0000102e', // payload 46 + 4096 data bytes
      ALLOCATION_BYTES, // allocation GUID
      '0000000000000009', // virtualPage = 9
      '0000000000000000', // version = 0 (the receiver stages it, it never compares it)
      '00001000', // pageBytes = 4096
      '00000000', // offset = 0
      '00001000', // length = 4096: the whole page
      '00', // dirty = no: a copy of what the disks hold
      '00', // zeroFill = no
      'ab'.repeat(4096), // the page
    ),
  },
];

const vectorOf = (name: string): Vector => vectors.find((vector) => vector.name === name) as Vector;
const FORWARDED_WRITE = 'forwarded io (write to a volume)';
const FORWARDED_READ = 'forwarded io (read from the shared array, no data)';

function decodeAll(...chunks: Buffer[]): Message[] {
  const framer = new MessageFramer();
  const messages = chunks.flatMap((chunk) => framer.push(chunk));
  expect(framer.idle, 'framer idle after the last frame').to.equal(true);
  return messages;
}

/** A frame header and payload by hand, for the invalid cases. */
function frame(type: number, payload: Buffer, options: { magic?: number; version?: number; declaredLength?: number } = {}): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(options.magic ?? 0x4654564d, 0);
  header.writeUInt16BE(options.version ?? PROTOCOL_VERSION, 4);
  header.writeUInt16BE(type, 6);
  header.writeUInt32BE(99, 8);
  header.writeUInt32BE(options.declaredLength ?? payload.length, 12);
  return Buffer.concat([header, payload]);
}

function expectFailure(reason: FramingFailure, pattern: RegExp, ...chunks: Buffer[]): void {
  const framer = new MessageFramer();
  let caught: unknown;
  try {
    for (const chunk of chunks) framer.push(chunk);
  } catch (error) {
    caught = error;
  }
  expect(caught).to.be.instanceOf(PartnerFramingError);
  expect((caught as PartnerFramingError).reason).to.equal(reason);
  expect((caught as PartnerFramingError).message).to.match(pattern);
  expect(() => framer.push(Buffer.alloc(1)), 'a failed framer stays failed').to.throw(PartnerFramingError);
}

const protocolDoc = readFileSync(new URL('../../../../docs/protocol.md', import.meta.url), 'utf8');

/** The field tables (those headed `| offset |`) of the doc section whose heading starts with `heading`. */
function docTables(heading: string): string[][][] {
  const start = protocolDoc.indexOf(`\n${heading}`);
  expect(start, `docs/protocol.md has a section ${heading}`).to.be.greaterThan(-1);
  const end = protocolDoc.indexOf('\n#', start + 1);
  const tables: string[][][] = [];
  const current: string[][] = [];
  for (const line of protocolDoc.slice(start, end === -1 ? undefined : end).split('\n')) {
    if (line.startsWith('|')) current.push(line.split('|').slice(1, -1).map((cell) => cell.trim()));
    else if (current.length > 0) tables.push(current.splice(0));
  }
  if (current.length > 0) tables.push(current);
  return tables.filter((table) => table[0]?.[0] === 'offset').map((table) => table.slice(2));
}

/** Checks each row's offset and size against its example bytes; returns the examples joined. */
function tableBytes(rows: string[][]): string {
  let hexText = '';
  for (const [offset, size, field, example = ''] of rows) {
    const bytes = example.replace(/`/g, '');
    expect(Number(offset), `offset of ${field}`).to.equal(hexText.length / 2);
    if (/^\d+$/.test(size ?? '')) expect(bytes.length / 2, `size of ${field}`).to.equal(Number(size));
    hexText += bytes;
  }
  return hexText;
}

describe('partner codec', () => {
  describe('byte vectors', () => {
    it('has a vector for every message type', () => {
      const types = new Set(vectors.map((vector) => vector.message.type));
      expect(types.size).to.equal(31);
    });

    for (const vector of vectors) {
      it(`${vector.name}: encodes to the exact bytes and decodes back`, () => {
        expect(encodeMessage(vector.message).toString('hex')).to.equal(vector.bytes.toString('hex'));
        expect(decodeAll(vector.bytes)).to.deep.equal([vector.message]);
      });
    }
  });

  describe('streams', () => {
    const messages = vectors.map((vector) => vector.message);
    const stream = encodeBatch(messages);

    it('encodeBatch concatenates the frames of encodeMessage', () => {
      expect(stream.equals(Buffer.concat(vectors.map((vector) => vector.bytes)))).to.equal(true);
    });

    it('decodes the stream of every type identically at every split point', () => {
      for (let cut = 0; cut <= stream.length; cut++) {
        expect(decodeAll(stream.subarray(0, cut), stream.subarray(cut)), `cut at ${cut}`).to.deep.equal(messages);
      }
    });

    it('decodes the stream fed one byte at a time', () => {
      const chunks = Array.from(stream, (_byte, index) => stream.subarray(index, index + 1));
      expect(decodeAll(...chunks)).to.deep.equal(messages);
    });

    it('decodes a whole 1 MiB page split in 64 KiB chunks', () => {
      const data = Buffer.alloc(1024 * 1024, 0xa5);
      const page: Message = {
        type: MessageType.WritePage, requestId: 1, allocation: ALLOCATION, virtualPage: 0, version: 1,
        pageBytes: data.length, offset: 0, length: data.length, dirty: true, zeroFill: false, data,
      };
      const bytes = encodeMessage(page);
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += 65536) chunks.push(bytes.subarray(at, at + 65536));
      expect(decodeAll(...chunks)).to.deep.equal([page]);
    });

    it('decodes a 1 MiB forwarded write and a 1 MiB io data split in 64 KiB chunks', () => {
      const data = Buffer.alloc(MAX_IO_BYTES, 0x5a);
      const write: Message = { type: MessageType.ForwardedIo, requestId: 1, op: IoOp.Write, allocation: ALLOCATION, offset: 0, length: data.length, fua: false, data };
      const read: Message = { type: MessageType.IoData, requestId: 2, data };
      const bytes = encodeBatch([write, read]);
      expect(bytes.length).to.equal(2 * 16 + 34 + 2 * MAX_IO_BYTES);
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += 65536) chunks.push(bytes.subarray(at, at + 65536));
      expect(decodeAll(...chunks)).to.deep.equal([write, read]);
    });

    it('encodes a forwarded write given in pieces to the same bytes as given whole, by reference in encodeBatchParts', () => {
      const whole = vectorOf(FORWARDED_WRITE).message as Extract<Message, { type: MessageType.ForwardedIo }>;
      const data = whole.data as Buffer;
      const pieces: Message = { ...whole, data: [data.subarray(0, 1), data.subarray(1, 3), data.subarray(3)] };
      expect(encodeMessage(pieces).equals(vectorOf(FORWARDED_WRITE).bytes)).to.equal(true);
      const big = Buffer.alloc(MAX_IO_BYTES, 9);
      const halves = [big.subarray(0, MAX_IO_BYTES / 2), big.subarray(MAX_IO_BYTES / 2)];
      const parts = encodeBatchParts([{ ...whole, length: big.length, data: halves }]);
      expect(parts.slice(1)).to.deep.equal(halves);
      expect(parts[1]).to.equal(halves[0]);
      expect(Buffer.concat(parts).equals(encodeMessage({ ...whole, length: big.length, data: big }))).to.equal(true);
    });

    it('hands out forwarded write and io data bytes as views into the chunk, not copies', () => {
      const chunk = encodeBatch([vectorOf(FORWARDED_WRITE).message, vectorOf('io data').message]);
      const [write, read] = decodeAll(chunk) as [Extract<Message, { type: MessageType.ForwardedIo }>, Extract<Message, { type: MessageType.IoData }>];
      expect((write.data as Buffer).buffer).to.equal(chunk.buffer);
      expect((write.data as Buffer).byteOffset).to.equal(chunk.byteOffset + 16 + 34);
      expect(read.data.buffer).to.equal(chunk.buffer);
      expect(read.data.byteOffset).to.equal(chunk.byteOffset + 16 + 38 + 16);
    });

    /** Each chunk copied into one buffer used again for every push, as a link that reads into its own buffer has it. */
    function decodeThroughOneBuffer(framer: MessageFramer, bytes: Buffer, chunkBytes: number): Message[] {
      const reused = Buffer.alloc(chunkBytes);
      const out: Message[] = [];
      for (let at = 0; at < bytes.length; at += chunkBytes) {
        const length = bytes.copy(reused, 0, at, Math.min(bytes.length, at + chunkBytes));
        out.push(...framer.push(reused.subarray(0, length)));
      }
      return out;
    }

    it('with a segment pool, decodes every type identically from a reused read buffer, the data in segments of its own', () => {
      for (const chunkBytes of [1, 7, 64, 4096]) {
        const segments = new SegmentPool(1 << 20);
        const framer = new MessageFramer(MAX_PAYLOAD_BYTES, segments);
        const decoded = decodeThroughOneBuffer(framer, stream, chunkBytes);
        expect(decoded, `chunks of ${chunkBytes}`).to.deep.equal(messages);
        const withData = decoded.filter((message) => 'data' in message && (message.data as Buffer).length > 0);
        expect(withData.map((message) => message.type)).to.include.members([MessageType.WritePage, MessageType.ForwardedIo, MessageType.IoData]);
        for (const message of withData) expect(segments.owns((message as { data: Buffer }).data), messageTypeName(message.type)).to.equal(true);
        expect(segments.outstanding).to.equal(withData.length);
      }
    });

    it('with a segment pool, points the socket at the segment for a long tail and takes the bytes read there without copying', () => {
      const data = Buffer.alloc(MAX_IO_BYTES);
      for (let index = 0; index < data.length; index++) data[index] = (index * 7) & 0xff;
      const write: Message = { type: MessageType.ForwardedIo, requestId: 3, op: IoOp.Write, allocation: ALLOCATION, offset: 0, length: data.length, fua: false, data };
      const bytes = encodeBatch([write, vectorOf('io data').message]);
      const segments = new SegmentPool(4 << 20);
      const framer = new MessageFramer(MAX_PAYLOAD_BYTES, segments);
      const readBuffer = Buffer.alloc(256 * 1024);
      const decoded: Message[] = [];
      let inPlaceReads = 0;
      for (let at = 0; at < bytes.length; ) {
        const target = framer.readTarget ?? readBuffer;
        if (target !== readBuffer) inPlaceReads++;
        const length = bytes.copy(target, 0, at, Math.min(bytes.length, at + target.length));
        at += length;
        decoded.push(...framer.push(target.subarray(0, length)));
      }
      expect(decoded).to.deep.equal([write, vectorOf('io data').message]);
      expect(inPlaceReads, 'the socket read the 1 MiB tail into its segment').to.be.greaterThan(0);
      expect(framer.readTarget).to.equal(null);
    });

    it('hands out page data as a view into the chunk it arrived in, not a copy', () => {
      const chunk = encodeMessage(vectors[5]?.message as Message);
      const [message] = decodeAll(chunk);
      expect(message?.type).to.equal(MessageType.WritePage);
      const data = (message as Extract<Message, { type: MessageType.WritePage }>).data as Buffer;
      expect(data.buffer).to.equal(chunk.buffer);
      expect(data.byteOffset).to.equal(chunk.byteOffset + 16 + 46);
    });
  });

  describe('invalid frames', () => {
    const heartbeat = hex('0000000000000003');

    it('refuses bad magic', () => {
      expectFailure('bad-magic', /bad frame magic 0x47455420/, frame(MessageType.Heartbeat, heartbeat, { magic: 0x47455420 }));
    });

    it('refuses an unknown type', () => {
      expectFailure('unknown-type', /unknown message type 0x0042/, frame(0x0042, heartbeat));
    });

    it('refuses another protocol version, and an unknown type of another version as such', () => {
      expectFailure('wrong-version', /protocol version 6, this node speaks 5/, frame(MessageType.Heartbeat, heartbeat, { version: 6 }));
      expectFailure('wrong-version', /protocol version 1/, frame(0x0042, heartbeat, { version: 1 }));
      // A version 2 node opens with its hello: refused as a frame of another version, not misread.
      expectFailure('wrong-version', /protocol version 2, this node speaks 5/, frame(MessageType.Hello, Buffer.alloc(30), { version: 2 }));
    });

    it('still decodes a challenge of another version, so both ends can say which versions met', () => {
      const challenge = vectors.find((vector) => vector.message.type === MessageType.Challenge) as Vector;
      const challengeV9 = Buffer.from(challenge.bytes);
      challengeV9.writeUInt16BE(9, 4);
      challengeV9.writeUInt16BE(9, 16);
      expect(decodeAll(challengeV9)).to.deep.equal([{ ...challenge.message, protocolVersion: 9 }]);
    });

    it('refuses a handshake frame larger than a framer not yet authenticated allows, from the header alone', () => {
      const framer = new MessageFramer(MAX_HANDSHAKE_PAYLOAD_BYTES);
      const header = frame(MessageType.WritePage, Buffer.alloc(0), { declaredLength: MAX_HANDSHAKE_PAYLOAD_BYTES + 1 });
      expect(() => framer.push(header)).to.throw(PartnerFramingError, /declares 129 payload bytes, at most 128/);
    });

    it('refuses an oversized declared length from the header alone, before any payload arrives', () => {
      const header = frame(MessageType.WritePage, Buffer.alloc(0), { declaredLength: MAX_PAYLOAD_BYTES + 1 });
      expectFailure('oversized', /write page \(request 99\) declares 1052673 payload bytes, at most 1052672/, header);
      expectFailure('oversized', /declares 4294967295/, frame(MessageType.WritePage, Buffer.alloc(0), { declaredLength: 0xffff_ffff }));
    });

    it('refuses a fixed-layout payload one byte short or long, before it arrives', () => {
      expectFailure('bad-length', /heartbeat \(request 99\) payload of 7 bytes, its layout takes 8$/, frame(MessageType.Heartbeat, Buffer.alloc(0), { declaredLength: 7 }));
      expectFailure('bad-length', /payload of 9 bytes, its layout takes 8$/, frame(MessageType.Heartbeat, Buffer.alloc(0), { declaredLength: 9 }));
    });

    it('refuses a write page shorter than its fixed part', () => {
      expectFailure('bad-length', /write page .* payload of 45 bytes, its layout takes 46 or more/, frame(MessageType.WritePage, Buffer.alloc(45)));
    });

    it('refuses a write page whose data length disagrees with its length field', () => {
      const valid = vectors[5]?.bytes as Buffer;
      const short = Buffer.from(valid.subarray(0, valid.length - 1));
      short.writeUInt32BE(short.length - 16, 12);
      expectFailure('bad-length', /write page \(request 6\): length field says 4 bytes, 3 data bytes follow/, short);
      const long = Buffer.concat([valid, hex('00')]);
      long.writeUInt32BE(long.length - 16, 12);
      expectFailure('bad-length', /length field says 4 bytes, 5 data bytes follow/, long);
      const zeroFillWithData = Buffer.from(valid);
      zeroFillWithData[16 + 45] = 1;
      expectFailure('bad-length', /length field says 4 zero-filled bytes, 4 data bytes follow/, zeroFillWithData);
    });

    it('refuses a write page range that starts past its page or ends past 1 MiB, and a page larger than 1 MiB', () => {
      const valid = vectors[5]?.bytes as Buffer;
      const past = Buffer.from(valid);
      past.writeUInt32BE(4096, 16 + 36);
      expectFailure('bad-field', /range 4096\+4 does not start in a page of 4096 bytes/, past);
      const beyondRun = Buffer.from(valid);
      beyondRun.writeUInt32BE(1024 * 1024, 16 + 32);
      beyondRun.writeUInt32BE(1024 * 1024 - 2, 16 + 36);
      expectFailure('bad-field', /range 1048574\+4 .* runs past 1048576 bytes/, beyondRun);
      const huge = Buffer.from(valid);
      huge.writeUInt32BE(2 * 1024 * 1024, 16 + 32);
      expectFailure('bad-field', /does not start in a page of 2097152 bytes/, huge);
    });

    it('takes a write page range that runs on into the following pages (a run of pages)', () => {
      const spilling = Buffer.from(vectors[5]?.bytes as Buffer);
      spilling.writeUInt32BE(4094, 16 + 36);
      const [message] = decodeAll(spilling);
      expect(message).to.include({ type: MessageType.WritePage, offset: 4094, length: 4, pageBytes: 4096 });
    });

    it('refuses a page clean of no pages, and takes one of a whole allocation (a resync after a join)', () => {
      const valid = vectors.find((vector) => vector.message.type === MessageType.PageClean)?.bytes as Buffer;
      const none = Buffer.from(valid);
      none.writeUInt32BE(0, valid.length - 4);
      expectFailure('bad-field', /pageCount 0 is outside 1…4294967295/, none);
      const whole = Buffer.from(valid);
      whole.writeUInt32BE(262_144, valid.length - 4);
      const [message] = decodeAll(whole);
      expect(message).to.include({ type: MessageType.PageClean, pageCount: 262_144 });
    });

    it('refuses header entries that are not whole', () => {
      const valid = vectors.find((vector) => vector.message.type === MessageType.Header)?.bytes as Buffer;
      const cut = Buffer.from(valid.subarray(0, valid.length - 1));
      cut.writeUInt32BE(cut.length - 16, 12);
      expectFailure('bad-length', /header \(request 5\): 65 bytes of page entries is not a whole count/, cut);
    });

    it('refuses values outside an enumeration, a flag other than 0/1 and a counter beyond 2^53 - 1', () => {
      const lock = Buffer.from(vectors[3]?.bytes as Buffer);
      lock[lock.length - 1] = 0; // lock request for mode none
      expectFailure('bad-field', /lock request \(request 4\): mode 0 is not a known value/, lock);
      const complete = frame(MessageType.CommandComplete, hex('0006 000a'));
      expectFailure('bad-field', /status 10 is not a known value/, complete);
      const completesHeartbeat = frame(MessageType.CommandComplete, hex('0102 0000'));
      expectFailure('bad-field', /requestType 258 is not a known value/, completesHeartbeat);
      const allocateRead = Buffer.from(vectors[8]?.bytes as Buffer);
      allocateRead[allocateRead.length - 1] = 2;
      expectFailure('bad-field', /pageIn 2 is neither 0 nor 1/, allocateRead);
      expectFailure('bad-field', /epoch exceeds 2\^53 - 1/, frame(MessageType.Heartbeat, hex('0020000000000000')));
    });

    it('refuses a forwarded io shorter than its fixed part, an unknown op and an offset beyond 2^53 - 1', () => {
      expectFailure('bad-length', /forwarded io .* payload of 33 bytes, its layout takes 34 or more/, frame(MessageType.ForwardedIo, Buffer.alloc(33)));
      const unknownOp = Buffer.from(vectorOf(FORWARDED_WRITE).bytes);
      unknownOp[16] = 6;
      expectFailure('bad-field', /forwarded io \(request 22\): op 6 is not a known value/, unknownOp);
      const fua = Buffer.from(vectorOf(FORWARDED_WRITE).bytes);
      fua[16 + 1] = 2;
      expectFailure('bad-field', /fua 2 is neither 0 nor 1/, fua);
      const offset = Buffer.from(vectorOf(FORWARDED_WRITE).bytes);
      offset.writeUInt32BE(0x0020_0000, 16 + 18);
      expectFailure('bad-field', /offset exceeds 2\^53 - 1/, offset);
    });

    it('refuses a forwarded read or write longer than 1 MiB, but not a longer zero or trim', () => {
      const read = Buffer.from(vectorOf(FORWARDED_READ).bytes);
      read.writeUInt32BE(MAX_IO_BYTES + 1, 16 + 30);
      expectFailure('bad-field', /forwarded io \(request 23\): length 1048577 exceeds 1048576 bytes/, read);
      const write = Buffer.concat([vectorOf(FORWARDED_WRITE).bytes.subarray(0, 16 + 34), Buffer.alloc(MAX_IO_BYTES + 1)]);
      write.writeUInt32BE(34 + MAX_IO_BYTES + 1, 12);
      write.writeUInt32BE(MAX_IO_BYTES + 1, 16 + 30);
      expectFailure('bad-field', /length 1048577 exceeds 1048576 bytes/, write);
      for (const op of [IoOp.Zero, IoOp.Trim]) {
        const zero = Buffer.from(read);
        zero[16] = op;
        expect(decodeAll(zero)).to.deep.equal([{ ...vectorOf(FORWARDED_READ).message, op, length: MAX_IO_BYTES + 1 }]);
      }
    });

    it('refuses a forwarded write whose data length disagrees with its length field', () => {
      const valid = vectorOf(FORWARDED_WRITE).bytes;
      const short = Buffer.from(valid.subarray(0, valid.length - 1));
      short.writeUInt32BE(short.length - 16, 12);
      expectFailure('bad-length', /forwarded io \(request 22\): op 2 of length 4 carries 4 data bytes, 3 follow/, short);
      const long = Buffer.concat([valid, hex('00')]);
      long.writeUInt32BE(long.length - 16, 12);
      expectFailure('bad-length', /op 2 of length 4 carries 4 data bytes, 5 follow/, long);
    });

    it('refuses any other forwarded op that carries data', () => {
      for (const op of [IoOp.Probe, IoOp.Read, IoOp.Flush, IoOp.Zero, IoOp.Trim]) {
        const withData = Buffer.concat([vectorOf(FORWARDED_READ).bytes, hex('00')]);
        withData.writeUInt32BE(35, 12);
        withData[16] = op;
        expectFailure('bad-length', new RegExp(`forwarded io \\(request 23\\): op ${op} of length 4 carries 0 data bytes, 1 follow`), withData);
      }
    });

    it('refuses io data of more than 1 MiB', () => {
      expectFailure('bad-length', /io data \(request 99\): 1048577 data bytes, at most 1048576/, frame(MessageType.IoData, Buffer.alloc(MAX_IO_BYTES + 1)));
    });

    it('returns the frames of earlier pushes before a later push fails', () => {
      const framer = new MessageFramer();
      expect(framer.push(vectors[0]?.bytes as Buffer)).to.have.length(1);
      expect(() => framer.push(frame(0x0042, heartbeat))).to.throw(PartnerFramingError);
    });
  });

  describe('encoder assertions (programmer errors)', () => {
    const writePage = vectors[5]?.message as Extract<Message, { type: MessageType.WritePage }>;

    it('refuses a write page whose data disagrees with its length', () => {
      expect(() => encodeMessage({ ...writePage, length: 5 })).to.throw(/data is 4 bytes for a length of 5/);
      expect(() => encodeMessage({ ...writePage, zeroFill: true })).to.throw(/zero fill/);
    });

    it('refuses forwarded io data that disagrees with its op and length, and more than 1 MiB of io data', () => {
      const write = vectorOf(FORWARDED_WRITE).message as Extract<Message, { type: MessageType.ForwardedIo }>;
      expect(() => encodeMessage({ ...write, length: 5 })).to.throw(/data is 4 bytes for op 2 of length 5/);
      expect(() => encodeMessage({ ...write, op: IoOp.Flush })).to.throw(/data is 4 bytes for op 3 of length 4/);
      const big = Buffer.alloc(MAX_IO_BYTES + 1);
      expect(() => encodeMessage({ ...write, length: big.length, data: big })).to.throw(/forwarded io of 1048577 bytes, at most 1048576/);
      expect(() => encodeMessage({ type: MessageType.IoData, requestId: 1, data: big })).to.throw(/io data of 1048577 bytes, at most 1048576/);
    });

    it('refuses a malformed uuid, an unsafe counter and a missing field', () => {
      expect(() => encodeMessage({ type: MessageType.ReleaseMemory, requestId: 1, allocation: 'vol0' })).to.throw(/not a canonical uuid/);
      expect(() => encodeMessage({ type: MessageType.Heartbeat, requestId: 1, epoch: 2 ** 53 })).to.throw(/safe unsigned integer/);
      expect(() => encodeMessage({ type: MessageType.Heartbeat, requestId: 1 } as Message)).to.throw(/heartbeat lacks epoch/);
    });
  });

  describe('docs/protocol.md', () => {
    it('frame header table matches the first vector', () => {
      const [table] = docTables('## Frame header');
      expect(tableBytes(table ?? [])).to.equal(vectors[0]?.bytes.subarray(0, 16).toString('hex'));
    });

    it('every message table matches its byte vector, offsets and sizes included', () => {
      const seen = new Set<MessageType>();
      for (const { message, bytes } of vectors) {
        if (seen.has(message.type)) continue;
        seen.add(message.type);
        const tables = docTables(`### 0x${message.type.toString(16).padStart(4, '0')} `);
        const payload = bytes.subarray(16).toString('hex');
        const fixed = tableBytes(tables[0] ?? []);
        expect(payload.startsWith(fixed), `${messageTypeName(message.type)} table`).to.equal(true);
        if (message.type === MessageType.Header) {
          expect(fixed.length / 2).to.equal(25);
          expect(tableBytes(tables[1] ?? []), 'page entry table (second entry)').to.equal(payload.slice(-66));
        } else {
          expect(fixed, `${messageTypeName(message.type)} table`).to.equal(payload);
        }
      }
      expect(seen.size).to.equal(31);
    });
  });

  describe('type helpers', () => {
    it('tells responses, one-way messages and names apart', () => {
      expect(isResponseType(MessageType.CommandComplete)).to.equal(true);
      expect(isResponseType(MessageType.HelloRefusal)).to.equal(true);
      expect(isResponseType(MessageType.WritePage)).to.equal(false);
      expect(expectsResponse(MessageType.WritePage)).to.equal(true);
      expect(expectsResponse(MessageType.Heartbeat)).to.equal(false);
      expect(expectsResponse(MessageType.LockStatus)).to.equal(false);
      expect(expectsResponse(MessageType.ForwardedIo)).to.equal(true);
      expect(isResponseType(MessageType.IoData)).to.equal(true);
      expect(MessageType.IoData).to.equal(MessageType.ForwardedIo | 0x0080);
      expect(messageTypeName(MessageType.AllocateWrite)).to.equal('allocate write');
      expect(messageTypeName(MessageType.ForwardedIo)).to.equal('forwarded io');
      expect(messageTypeName(MessageType.IoData)).to.equal('io data');
      expect(messageTypeName(0x7777)).to.equal('unknown type 0x7777');
    });
  });

  describe('encodeBatchParts', () => {
    it('gives the bytes of encodeBatch, with long data as the caller\'s own buffers and short data copied', () => {
      const page = Buffer.alloc(64 * 1024, 0xab);
      const short = Buffer.alloc(BY_REFERENCE_BYTES - 1, 0xcd);
      const batch: Message[] = [
        { type: MessageType.PageClean, requestId: 0, allocation: ALLOCATION, virtualPage: 3, version: 9, pageCount: 1 },
        { type: MessageType.WritePage, requestId: 1, allocation: ALLOCATION, virtualPage: 1, version: 2, pageBytes: page.length, offset: 0, length: page.length, dirty: true, zeroFill: false, data: page },
        { type: MessageType.WritePage, requestId: 2, allocation: ALLOCATION, virtualPage: 2, version: 3, pageBytes: page.length, offset: 5, length: short.length, dirty: true, zeroFill: false, data: short },
        { type: MessageType.IoData, requestId: 3, data: page },
        { type: MessageType.CommandComplete, requestId: 4, requestType: MessageType.WritePage, status: Status.Ok },
      ];
      const parts = encodeBatchParts(batch);
      expect(Buffer.concat(parts).equals(encodeBatch(batch))).to.equal(true);
      expect(parts.filter((part) => part === page), 'the page travels by reference, twice').to.have.length(2);
      expect(parts.some((part) => part === short), 'short data is copied').to.equal(false);
      expect(decodeAll(...parts).map((message) => message.requestId)).to.deep.equal([0, 1, 2, 3, 4]);
    });

    it('sends io data by reference at any length (a reply segment, held until the write completes), other short data copied', () => {
      const reply = Buffer.alloc(4096, 0x5a);
      const tiny = Buffer.alloc(1, 0x11);
      const shortPage = Buffer.alloc(4096, 0x77);
      const batch: Message[] = [
        { type: MessageType.IoData, requestId: 1, data: reply },
        { type: MessageType.CommandComplete, requestId: 2, requestType: MessageType.ForwardedIo, status: Status.Ok },
        { type: MessageType.IoData, requestId: 3, data: tiny },
        { type: MessageType.IoData, requestId: 4, data: Buffer.alloc(0) },
        { type: MessageType.WritePage, requestId: 5, allocation: ALLOCATION, virtualPage: 1, version: 2, pageBytes: 4096, offset: 0, length: 4096, dirty: true, zeroFill: false, data: shortPage },
      ];
      const parts = encodeBatchParts(batch);
      expect(Buffer.concat(parts).equals(encodeBatch(batch))).to.equal(true);
      expect(parts.filter((part) => part === reply || part === tiny), 'both replies by reference').to.have.length(2);
      expect(parts.some((part) => part === shortPage), 'a 4 KiB page image is still copied').to.equal(false);
      expect(parts.every((part) => part.length > 0), 'no empty part').to.equal(true);
      const decoded = decodeAll(...parts);
      expect(decoded.map((message) => message.requestId)).to.deep.equal([1, 2, 3, 4, 5]);
      expect(((decoded[0] as Extract<Message, { type: MessageType.IoData }>).data).equals(reply)).to.equal(true);
    });

    it('encodes one batch after another the same (nothing of the first is left behind for the second)', () => {
      const first: Message[] = [
        { type: MessageType.IoData, requestId: 1, data: Buffer.alloc(64 * 1024, 1) },
        { type: MessageType.IoData, requestId: 2, data: Buffer.alloc(512, 2) },
        { type: MessageType.CommandComplete, requestId: 3, requestType: MessageType.WritePage, status: Status.Ok },
      ];
      const second: Message[] = [{ type: MessageType.CommandComplete, requestId: 4, requestType: MessageType.WritePage, status: Status.Locked }];
      expect(Buffer.concat(encodeBatchParts(first)).equals(encodeBatch(first))).to.equal(true);
      const parts = encodeBatchParts(second);
      expect(parts).to.have.length(1);
      expect((parts[0] as Buffer).equals(encodeBatch(second))).to.equal(true);
    });

    it('takes the request ids from the list given, not from the messages', () => {
      const page = Buffer.alloc(64 * 1024, 3);
      const batch: Message[] = [
        { type: MessageType.IoData, requestId: 1, data: Buffer.alloc(4096, 1) },
        { type: MessageType.ForwardedIo, requestId: 2, op: IoOp.Read, fua: false, allocation: ALLOCATION, offset: 8192, length: 4096, data: Buffer.alloc(0) },
        { type: MessageType.WritePage, requestId: 3, allocation: ALLOCATION, virtualPage: 1, version: 2, pageBytes: page.length, offset: 0, length: page.length, dirty: true, zeroFill: false, data: page },
        { type: MessageType.Heartbeat, requestId: 4, epoch: 9 },
      ];
      const ids = [0xffff_fffe, 77, 0, 5];
      const withoutIds = batch.map(({ requestId: _unused, ...rest }) => rest as unknown as Message);
      const parts = encodeBatchParts(withoutIds, ids);
      const expected = encodeBatch(batch.map((message, index) => ({ ...message, requestId: ids[index] as number })));
      expect(Buffer.concat(parts).equals(expected)).to.equal(true);
      expect(decodeAll(...parts).map((message) => message.requestId)).to.deep.equal(ids);
    });

    it('sends a run of pages gathered from several frames by reference, and decodes it as one range', () => {
      const frames = [Buffer.alloc(4096, 1).subarray(96), Buffer.alloc(4096, 2), Buffer.alloc(4096, 3).subarray(0, 100)];
      const length = frames.reduce((sum, frame) => sum + frame.length, 0);
      const run: Message = { type: MessageType.WritePage, requestId: 9, allocation: ALLOCATION, virtualPage: 4, version: 7, pageBytes: 4096, offset: 96, length, dirty: true, zeroFill: false, data: frames };
      const parts = encodeBatchParts([run]);
      expect(Buffer.concat(parts).equals(encodeBatch([run]))).to.equal(true);
      expect(parts.filter((part) => frames.some((frame) => frame === part)), 'each frame by reference').to.have.length(3);
      const [decoded] = decodeAll(...parts);
      expect(decoded).to.include({ virtualPage: 4, offset: 96, length });
      expect(((decoded as Extract<Message, { type: MessageType.WritePage }>).data as Buffer).equals(Buffer.concat(frames))).to.equal(true);
    });
  });
});
