// Partner link codec: messages to frames and back. Pure: no sockets, no memory manager.
//
//   frame   = header (16 bytes) + payload                      all integers big-endian
//   header  = magic u32 | version u16 | type u16 | request id u32 | payload length u32
//   payload = the type's fixed struct [+ tail: data (write page, forwarded io, io data) or page entries (header)]
//
// The framer judges a header completely before it keeps one byte of the payload: magic, version,
// type, the declared length against MAX_PAYLOAD_BYTES and against the type's layout. So a peer
// that declares 4 GiB costs nothing, and a fixed-layout type with a wrong length is refused before
// its payload arrives. A payload that arrives whole in one chunk is decoded in place: page and I/O
// data are a view into that chunk, not a copy.
//
// Hello and hello refusal are version-neutral: their layouts are frozen, and the framer decodes
// them under any protocol version, so a node can tell a peer of another version why it refuses it
// instead of just dropping the link. Every other type must carry PROTOCOL_VERSION.
import { InputError, type SegmentPool } from '../core/index.js';
import assert from 'node:assert';
import layout, { type Layout, type Structure } from 'buffer-layout';
import {
  FRAME_HEADER_BYTES,
  IoOp,
  LockMode,
  MAX_HEADER_ENTRIES,
  MAX_IO_BYTES,
  MAX_PAGE_BYTES,
  MAX_PAGE_CLEAN_PAGES,
  MAX_PAYLOAD_BYTES,
  MessageType,
  NONCE_BYTES,
  PARTNER_MAGIC,
  PAYLOAD_HEADER_ALLOWANCE_BYTES,
  PROOF_BYTES,
  PROTOCOL_VERSION,
  RESPONSE_TYPE_BIT,
  RefusalReason,
  SenseKind,
  Status,
} from './constants.js';
import { carriesData, hotDecoders, writePageRangeFits, type HotDecoder } from './hot-decoders.js';
import { hotEncoders, type FixedEncoder } from './hot-encoders.js';
import type { ForwardedIo, Header, HeaderPageEntry, IoData, Message, WritePage } from './messages.js';

export type FramingFailure = 'bad-magic' | 'wrong-version' | 'unknown-type' | 'oversized' | 'bad-length' | 'bad-field';

/** The byte stream is not a partner link we can follow: the link must be closed (with a log line). */
export class PartnerFramingError extends InputError {
  override name = 'PartnerFramingError';
  constructor(
    readonly reason: FramingFailure,
    message: string,
  ) {
    super(message);
  }
}

// ---- Field layouts buffer-layout lacks: each refuses what it cannot represent exactly ----

type Fields = Record<string, unknown>;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** 16 raw bytes on the wire, a canonical lowercase uuid string in the message. */
class UuidLayout extends layout.Layout<string> {
  constructor(property: string) {
    super(16, property);
  }
  override decode(source: Buffer, at = 0): string {
    const hex = source.toString('hex', at, at + 16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  override encode(value: string, target: Buffer, at = 0): number {
    assert(UUID_PATTERN.test(value), `${this.property} is not a canonical uuid: ${value}`);
    target.write(value.replace(/-/g, ''), at, 16, 'hex');
    return 16;
  }
}

/** u64 as a number; a value beyond 2^53 - 1 would be rounded, so it is refused instead. */
class SafeU64Layout extends layout.Layout<number> {
  constructor(property: string) {
    super(8, property);
  }
  override decode(source: Buffer, at = 0): number {
    const high = source.readUInt32BE(at);
    if (high > 0x1f_ffff) throw new PartnerFramingError('bad-field', `${this.property} exceeds 2^53 - 1`);
    return high * 0x1_0000_0000 + source.readUInt32BE(at + 4);
  }
  override encode(value: number, target: Buffer, at = 0): number {
    assert(Number.isSafeInteger(value) && value >= 0, `${this.property} must be a safe unsigned integer, got ${value}`);
    target.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
    target.writeUInt32BE(value >>> 0, at + 4);
    return 8;
  }
}

/** An enumerated u8/u16: a value outside the enumeration is a malformed frame. */
class ChoiceLayout extends layout.Layout<number> {
  constructor(
    private readonly width: 1 | 2,
    private readonly allowed: ReadonlySet<number>,
    property: string,
  ) {
    super(width, property);
  }
  override decode(source: Buffer, at = 0): number {
    const value = source.readUIntBE(at, this.width);
    if (!this.allowed.has(value)) throw new PartnerFramingError('bad-field', `${this.property} ${value} is not a known value`);
    return value;
  }
  override encode(value: number, target: Buffer, at = 0): number {
    assert(this.allowed.has(value), `${this.property} ${value} is not a known value`);
    return target.writeUIntBE(value, at, this.width) - at;
  }
}

/** A boolean as one byte, 0 or 1. */
class FlagLayout extends layout.Layout<boolean> {
  constructor(property: string) {
    super(1, property);
  }
  override decode(source: Buffer, at = 0): boolean {
    const value = source.readUInt8(at);
    if (value > 1) throw new PartnerFramingError('bad-field', `${this.property} ${value} is neither 0 nor 1`);
    return value === 1;
  }
  override encode(value: boolean, target: Buffer, at = 0): number {
    target.writeUInt8(value ? 1 : 0, at);
    return 1;
  }
}

/** A u32 that must lie in [min, max]; anything else is a malformed frame. */
class BoundedU32Layout extends layout.Layout<number> {
  constructor(
    private readonly min: number,
    private readonly max: number,
    property: string,
  ) {
    super(4, property);
  }
  override decode(source: Buffer, at = 0): number {
    const value = source.readUInt32BE(at);
    if (value < this.min || value > this.max) throw new PartnerFramingError('bad-field', `${this.property} ${value} is outside ${this.min}…${this.max}`);
    return value;
  }
  override encode(value: number, target: Buffer, at = 0): number {
    assert(Number.isInteger(value) && value >= this.min && value <= this.max, `${this.property} ${value} is outside ${this.min}…${this.max}`);
    target.writeUInt32BE(value, at);
    return 4;
  }
}

const uuid = (property: string): Layout => new UuidLayout(property);
const u64 = (property: string): Layout => new SafeU64Layout(property);
const u32 = (property: string): Layout => layout.u32be(property);
const u16 = (property: string): Layout => layout.u16be(property);
const flag = (property: string): Layout => new FlagLayout(property);
const choice = (width: 1 | 2, property: string, allowed: readonly number[]): Layout => new ChoiceLayout(width, new Set(allowed), property);
const struct = (fields: Layout[]): Structure<Fields> => layout.struct<Fields>(fields);

const ALL_LOCK_MODES = [LockMode.None, LockMode.Shared, LockMode.Exclusive];
const HELD_LOCK_MODES = [LockMode.Shared, LockMode.Exclusive];
const SENSE_KINDS = [SenseKind.Node, SenseKind.Allocation];
const IO_OPS = [IoOp.Probe, IoOp.Read, IoOp.Write, IoOp.Flush, IoOp.Zero, IoOp.Trim];
const STATUSES = [
  Status.Ok, Status.NoSpace, Status.Locked, Status.UnknownAllocation, Status.NotResident,
  Status.StaleEpoch, Status.NotPartner, Status.Invalid, Status.IoError, Status.ShuttingDown,
];
const REFUSAL_REASONS = [
  RefusalReason.VersionMismatch, RefusalReason.ClusterMismatch, RefusalReason.NodeIdConflict,
  RefusalReason.StaleEpoch, RefusalReason.UnknownNode, RefusalReason.ImplausibleEpoch,
];
/** What command complete may answer: every request except hello (hello reply/refusal) and heartbeat (unanswered). */
const COMPLETABLE_TYPES = [
  MessageType.SpaceRequest, MessageType.AllocateMemory, MessageType.ReleaseMemory, MessageType.LockRequest,
  MessageType.ReadHeader, MessageType.WritePage, MessageType.SenseRequest, MessageType.AllocateRead,
  MessageType.AllocateWrite, MessageType.ReleasePointer, MessageType.PageClean, MessageType.VolumeHandover,
  MessageType.HolderAnnouncement, MessageType.MirrorReclaim, MessageType.OwnerNotice,
  MessageType.CatalogChange, MessageType.VolumeRemoval, MessageType.ResyncBegin, MessageType.ResyncEnd, MessageType.ForwardedIo,
];

// ---- Payload layouts ----

interface FrameHeader {
  magic: number;
  version: number;
  type: number;
  requestId: number;
  payloadLength: number;
}

const frameHeaderLayout = layout.struct<FrameHeader>([
  layout.u32be('magic'),
  layout.u16be('version'),
  layout.u16be('type'),
  layout.u32be('requestId'),
  layout.u32be('payloadLength'),
]);

/** What follows a type's fixed struct, for the types whose payload is not fixed. */
interface Tail {
  /** Asserts the message is self-consistent and returns the tail's length. */
  bytes(message: Message): number;
  write(message: Message, target: Buffer, at: number): void;
  /** For data tails: the bytes themselves (maybe in pieces), so a batch can send them by reference instead of copying. */
  data?(message: Message): Buffer | readonly Buffer[];
  /** Data at least this long goes by reference; BY_REFERENCE_BYTES if not given. */
  byReferenceFrom?: number;
  /** The message fields carried by the tail; throws PartnerFramingError when it does not fit the fixed part. */
  read(fixed: Fields, tail: Buffer): Fields;
}

interface MessageCodec {
  name: string;
  fixed: Structure<Fields>;
  /** The fixed part written by hand (hot types, hot-encoders.ts): the same bytes as `fixed`. */
  encodeFixed?: FixedEncoder;
  /** The whole message read by hand (hot types, hot-decoders.ts): the same message as `fixed` and `tail`. */
  decodeHot?: HotDecoder;
  tail?: Tail;
  versionNeutral?: boolean;
  /** Decoded fields would be views of the payload (blobs): never decoded from a buffer that is used again. */
  aliases?: boolean;
}

const pageAddress = (): Layout[] => [uuid('allocation'), u64('virtualPage')];
const bytes = (length: number, property: string): Layout => layout.blob(length, property);
const identity = (): Layout[] => [uuid('clusterId'), u32('nodeId'), u64('epoch'), u16('protocolVersion'), bytes(PROOF_BYTES, 'proof')];
const lockGrant = (): Structure<Fields> => struct([...pageAddress(), u32('nodeId'), flag('pageIn')]);
const resyncMark = (): Structure<Fields> => struct([u64('epoch'), u32('allocationCount'), u32('pageCount')]);

/** Total bytes of data that may be gathered from several buffers. */
const bytesOf = (data: Buffer | readonly Buffer[]): number => {
  if (Buffer.isBuffer(data)) return data.length;
  let bytes = 0;
  for (const piece of data as readonly Buffer[]) bytes += piece.length;
  return bytes;
};

const writePageTail: Tail = {
  bytes(message) {
    const { data, offset, length, pageBytes, zeroFill } = message as WritePage;
    const bytes = bytesOf(data);
    if (!(bytes === (zeroFill ? 0 : length))) assert.fail(`write page data is ${bytes} bytes for a length of ${length}${zeroFill ? ' (zero fill)' : ''}`);
    if (!(writePageRangeFits(pageBytes, offset, length))) assert.fail(`write page range ${offset}+${length} does not start in a page of ${pageBytes} or runs past ${MAX_PAGE_BYTES} bytes`);
    return bytes;
  },
  write(message, target, at) {
    const { data } = message as WritePage;
    if (Buffer.isBuffer(data)) data.copy(target, at);
    else for (const piece of data as readonly Buffer[]) at += piece.copy(target, at);
  },
  data: (message) => (message as WritePage).data,
  read(fixed, tail) {
    const { offset, length, pageBytes, zeroFill } = fixed as Pick<WritePage, 'offset' | 'length' | 'pageBytes' | 'zeroFill'>;
    const expected = zeroFill ? 0 : length;
    if (tail.length !== expected) {
      throw new PartnerFramingError('bad-length', `length field says ${length}${zeroFill ? ' zero-filled' : ''} bytes, ${tail.length} data bytes follow`);
    }
    if (!writePageRangeFits(pageBytes, offset, length)) {
      throw new PartnerFramingError('bad-field', `range ${offset}+${length} does not start in a page of ${pageBytes} bytes or runs past ${MAX_PAGE_BYTES} bytes`);
    }
    return { data: tail };
  },
};

const forwardedIoTail: Tail = {
  bytes(message) {
    const { op, length, data } = message as ForwardedIo;
    if (!(!carriesData(op) || length <= MAX_IO_BYTES)) assert.fail(`forwarded io of ${length} bytes, at most ${MAX_IO_BYTES}`);
    const bytes = bytesOf(data);
    if (!(bytes === (op === IoOp.Write ? length : 0))) assert.fail(`forwarded io data is ${bytes} bytes for op ${op} of length ${length}`);
    return bytes;
  },
  write(message, target, at) {
    const { data } = message as ForwardedIo;
    if (Buffer.isBuffer(data)) data.copy(target, at);
    else for (const piece of data as readonly Buffer[]) at += piece.copy(target, at);
  },
  data: (message) => (message as ForwardedIo).data,
  read(fixed, tail) {
    const { op, length } = fixed as Pick<ForwardedIo, 'op' | 'length'>;
    if (carriesData(op) && length > MAX_IO_BYTES) {
      throw new PartnerFramingError('bad-field', `length ${length} exceeds ${MAX_IO_BYTES} bytes`);
    }
    const expected = op === IoOp.Write ? length : 0;
    if (tail.length !== expected) {
      throw new PartnerFramingError('bad-length', `op ${op} of length ${length} carries ${expected} data bytes, ${tail.length} follow`);
    }
    return { data: tail };
  },
};

const ioDataTail: Tail = {
  bytes(message) {
    const { data, lent } = message as IoData;
    const bytes = lent ? bytesOf(lent.pieces) : data.length;
    if (!(bytes <= MAX_IO_BYTES)) assert.fail(`io data of ${bytes} bytes, at most ${MAX_IO_BYTES}`);
    return bytes;
  },
  write(message, target, at) {
    const { data, lent } = message as IoData;
    if (!lent) data.copy(target, at);
    else for (const piece of lent.pieces) at += piece.copy(target, at);
  },
  data: (message) => (message as IoData).lent?.pieces ?? (message as IoData).data,
  // A reply's data is a segment of the link's pool or pages lent to it, held until the socket
  // write completes (PartnerLink.settle): copying even 4 KiB into the batch buffer was a second
  // copy of every forwarded read on the owner, for nothing.
  byReferenceFrom: 1,
  read(_fixed, tail) {
    if (tail.length > MAX_IO_BYTES) throw new PartnerFramingError('bad-length', `${tail.length} data bytes, at most ${MAX_IO_BYTES}`);
    return { data: tail };
  },
};

const headerEntryLayout = struct([
  u64('virtualPage'),
  u64('version'),
  u32('ownerNodeId'),
  u32('readerCount'),
  u32('dirtyOffset'),
  u32('dirtyLength'),
  choice(1, 'lockMode', ALL_LOCK_MODES),
]);

const headerTail: Tail = {
  bytes(message) {
    const { pages } = message as Header;
    assert(pages.length <= MAX_HEADER_ENTRIES, `header of ${pages.length} entries, at most ${MAX_HEADER_ENTRIES}`);
    return pages.length * headerEntryLayout.span;
  },
  write(message, target, at) {
    (message as Header).pages.forEach((entry, index) => headerEntryLayout.encode(entry as unknown as Fields, target, at + index * headerEntryLayout.span));
  },
  read(_fixed, tail) {
    const count = tail.length / headerEntryLayout.span;
    if (!Number.isInteger(count) || count > MAX_HEADER_ENTRIES) {
      throw new PartnerFramingError('bad-length', `${tail.length} bytes of page entries is not a whole count of at most ${MAX_HEADER_ENTRIES}`);
    }
    const pages: HeaderPageEntry[] = [];
    for (let index = 0; index < count; index++) pages.push(headerEntryLayout.decode(tail, index * headerEntryLayout.span) as unknown as HeaderPageEntry);
    return { pages };
  },
};

const CODECS = new Map<number, MessageCodec>([
  [MessageType.SpaceRequest, { name: 'space request', fixed: struct([u64('bytesWanted')]) }],
  [MessageType.AllocateMemory, { name: 'allocate memory', fixed: struct([uuid('allocation'), u64('sizeBytes'), u32('pageBytes'), u32('ownerNodeId')]) }],
  [MessageType.ReleaseMemory, { name: 'release memory', fixed: struct([uuid('allocation')]) }],
  [MessageType.LockRequest, { name: 'lock request', fixed: struct([...pageAddress(), u32('requestingNodeId'), choice(1, 'mode', HELD_LOCK_MODES)]) }],
  [MessageType.ReadHeader, { name: 'read header', fixed: struct([uuid('allocation'), u64('firstVirtualPage'), u32('maxEntries')]) }],
  [
    MessageType.WritePage,
    {
      name: 'write page',
      fixed: struct([...pageAddress(), u64('version'), u32('pageBytes'), u32('offset'), u32('length'), flag('dirty'), flag('zeroFill')]),
      tail: writePageTail,
    },
  ],
  [MessageType.SenseRequest, { name: 'sense request', fixed: struct([choice(2, 'kind', SENSE_KINDS), uuid('allocation')]) }],
  [MessageType.AllocateRead, { name: 'allocate read', fixed: lockGrant() }],
  [MessageType.AllocateWrite, { name: 'allocate write', fixed: lockGrant() }],
  [MessageType.ReleasePointer, { name: 'release pointer', fixed: struct([...pageAddress(), u32('nodeId'), choice(1, 'mode', HELD_LOCK_MODES), flag('modified')]) }],
  [MessageType.CommandComplete, { name: 'command complete', fixed: struct([choice(2, 'requestType', COMPLETABLE_TYPES), choice(2, 'status', STATUSES)]) }],
  [MessageType.SpaceStatus, { name: 'space status', fixed: struct([u64('freeBytes'), u64('reclaimableBytes')]) }],
  [MessageType.LockStatus, { name: 'lock status', fixed: struct([u32('ownerNodeId'), u32('readerCount'), choice(1, 'mode', ALL_LOCK_MODES)]) }],
  [
    MessageType.Header,
    { name: 'header', fixed: struct([u64('sizeBytes'), u32('pageBytes'), u32('ownerNodeId'), u64('nextVirtualPage'), flag('final')]), tail: headerTail },
  ],
  [
    MessageType.SenseInformation,
    {
      name: 'sense information',
      fixed: struct([
        choice(2, 'kind', SENSE_KINDS), u64('epoch'), u64('poolBytes'), u64('freeBytes'),
        u32('residentPages'), u32('dirtyPages'), u32('pagingQueueLength'), u32('destageQueueLength'),
      ]),
    },
  ],
  [MessageType.Challenge, { name: 'challenge', fixed: struct([u16('protocolVersion'), bytes(NONCE_BYTES, 'nonce')]), versionNeutral: true }],
  [MessageType.Hello, { name: 'hello', fixed: struct(identity()) }],
  [MessageType.HelloReply, { name: 'hello reply', fixed: struct(identity()) }],
  [MessageType.HelloRefusal, { name: 'hello refusal', fixed: struct([choice(2, 'reason', REFUSAL_REASONS), ...identity()]) }],
  [MessageType.Heartbeat, { name: 'heartbeat', fixed: struct([u64('epoch')]) }],
  [MessageType.PageClean, { name: 'page clean', fixed: struct([...pageAddress(), u64('version'), new BoundedU32Layout(1, MAX_PAGE_CLEAN_PAGES, 'pageCount')]) }],
  [MessageType.VolumeHandover, { name: 'volume handover', fixed: struct([uuid('allocation'), u32('fromNodeId'), u32('toNodeId'), u64('epoch')]) }],
  [MessageType.HolderAnnouncement, { name: 'holder announcement', fixed: struct([u32('previousNodeId'), u32('holderNodeId'), u64('epoch')]) }],
  [MessageType.MirrorReclaim, { name: 'mirror reclaim', fixed: struct([uuid('allocation'), u32('nodeId'), u64('epoch')]) }],
  [MessageType.OwnerNotice, { name: 'owner notice', fixed: struct([uuid('allocation'), u32('ownerNodeId'), u64('epoch')]) }],
  [MessageType.CatalogChange, { name: 'catalog change', fixed: struct([uuid('allocation'), u64('epoch')]) }],
  [MessageType.VolumeRemoval, { name: 'volume removal', fixed: struct([uuid('allocation'), u64('epoch'), flag('commit'), flag('force')]) }],
  [MessageType.ResyncBegin, { name: 'resync begin', fixed: resyncMark() }],
  [MessageType.ResyncEnd, { name: 'resync end', fixed: resyncMark() }],
  [
    MessageType.ForwardedIo,
    {
      name: 'forwarded io',
      fixed: struct([choice(1, 'op', IO_OPS), flag('fua'), uuid('allocation'), u64('offset'), u64('length')]),
      tail: forwardedIoTail,
    },
  ],
  [MessageType.IoData, { name: 'io data', fixed: struct([]), tail: ioDataTail }],
]);

for (const type of [MessageType.Challenge, MessageType.Hello, MessageType.HelloReply, MessageType.HelloRefusal]) (CODECS.get(type) as MessageCodec).aliases = true;

for (const [type, encodeFixed] of hotEncoders({ completable: COMPLETABLE_TYPES, statuses: STATUSES, ops: IO_OPS })) {
  (CODECS.get(type) as MessageCodec).encodeFixed = encodeFixed;
}
const framingError = (reason: FramingFailure, message: string): Error => new PartnerFramingError(reason, message);
for (const [type, decodeHot] of hotDecoders({ completable: COMPLETABLE_TYPES, statuses: STATUSES, ops: IO_OPS }, framingError)) {
  (CODECS.get(type) as MessageCodec).decodeHot = decodeHot;
}

// The limits in constants.ts must leave room for the largest payloads these layouts make.
const codecOf = (type: number): MessageCodec => CODECS.get(type) as MessageCodec;
assert(codecOf(MessageType.WritePage).fixed.span + MAX_PAGE_BYTES <= MAX_PAYLOAD_BYTES, 'a whole page must fit one write page frame');
assert(codecOf(MessageType.ForwardedIo).fixed.span + MAX_IO_BYTES <= MAX_PAYLOAD_BYTES, 'a whole forwarded write must fit one frame');
assert(codecOf(MessageType.IoData).fixed.span + MAX_IO_BYTES <= MAX_PAYLOAD_BYTES, 'a whole forwarded read must fit one frame');
assert(codecOf(MessageType.Header).fixed.span + MAX_HEADER_ENTRIES * headerEntryLayout.span <= MAX_PAYLOAD_BYTES, 'a full header must fit one frame');
for (const codec of CODECS.values()) assert(codec.fixed.span <= PAYLOAD_HEADER_ALLOWANCE_BYTES, `${codec.name} fixed part exceeds the allowance`);

// ---- Encoding ----

/** One message as one frame. */
export function encodeMessage(message: Message): Buffer {
  return encodeBatch([message]);
}

/** Several frames in one buffer, for one socket write; page data is copied once, into place. */
export function encodeBatch(messages: readonly Message[]): Buffer {
  const payloadSizes = messages.map(payloadBytesOf);
  const total = payloadSizes.reduce((sum, bytes) => sum + FRAME_HEADER_BYTES + bytes, 0);
  // Unsafe is fine: writeFrame asserts every field is present, so every byte gets written.
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  messages.forEach((message, index) => {
    at = writeFrame(message, message.requestId, payloadSizes[index] as number, out, at);
  });
  return out;
}

/** The command complete that answers `request` with `status` (same request id, its type echoed). */
/** The pages a write page's range touches, from its `virtualPage` on (a run may span several). */
export function pagesTouched(write: { offset: number; length: number; pageBytes: number }): number {
  return Math.max(1, Math.ceil((write.offset + write.length) / write.pageBytes));
}

export function commandComplete(request: Message, status: Status): Message {
  return { type: MessageType.CommandComplete, requestId: request.requestId, requestType: request.type, status };
}

/** Data at least this long travels by reference in encodeBatchParts; shorter data is cheaper to copy than to add an iovec. */
export const BY_REFERENCE_BYTES = 8 * 1024;

/**
 * The same bytes as encodeBatch, as a list of buffers for one corked (writev) socket write: headers,
 * fixed parts and short data are copied into one buffer; long data (page images, forwarded I/O) is
 * passed as the caller's own buffer, never copied. The caller must not change such data until the
 * message is answered or the link is closed. `requestIds`, when given, are the frames' request ids
 * and the messages' own are not read: a link sends its callers' objects as they are (copying one
 * to add the id was the dearest step of sending a request).
 */
export function encodeBatchParts(messages: readonly Message[], requestIds: readonly number[] | null = null): Buffer[] {
  // One pass to size the copied part, one to write it; the per-message facts live in scratch
  // arrays kept between batches (every batch sends, so they would be made again at once).
  const count = messages.length;
  let copied = 0;
  for (let index = 0; index < count; index++) {
    const message = messages[index] as Message;
    const codec = codecOf(message.type);
    const payload = payloadBytesOf(message);
    const data = codec.tail?.data?.(message);
    const long = data !== undefined && bytesOf(data) >= (codec.tail?.byReferenceFrom ?? BY_REFERENCE_BYTES);
    batchPayloads[index] = payload;
    batchReferenced[index] = long ? (data as Buffer | readonly Buffer[]) : null;
    copied += FRAME_HEADER_BYTES + (long ? codec.fixed.span : payload);
  }
  const out = Buffer.allocUnsafe(copied);
  const parts: Buffer[] = [];
  let at = 0;
  let partStart = 0;
  for (let index = 0; index < count; index++) {
    const message = messages[index] as Message;
    const requestId = requestIds === null ? message.requestId : (requestIds[index] as number);
    const payload = batchPayloads[index] as number;
    const data = batchReferenced[index];
    batchReferenced[index] = null;
    if (!data) {
      at = writeFrame(message, requestId, payload, out, at);
      continue;
    }
    // Header and fixed part here, the data by reference right after them.
    const codec = codecOf(message.type);
    writeFrameHeader(message.type, requestId, payload, out, at);
    writeFixed(codec, message, out, at + FRAME_HEADER_BYTES);
    at += FRAME_HEADER_BYTES + codec.fixed.span;
    parts.push(out.subarray(partStart, at));
    if (Buffer.isBuffer(data)) parts.push(data);
    else for (const piece of data as readonly Buffer[]) if (piece.length > 0) parts.push(piece);
    partStart = at;
  }
  if (partStart < at) parts.push(out.subarray(partStart, at));
  return parts;
}

const batchPayloads: number[] = [];
const batchReferenced: Array<Buffer | readonly Buffer[] | null> = [];

function payloadBytesOf(message: Message): number {
  // Messages of refusals are built only on failure: this runs for every frame sent.
  const codec = CODECS.get(message.type);
  if (!codec) assert.fail(`no codec for message type ${message.type}`);
  const bytes = codec.fixed.span + (codec.tail?.bytes(message) ?? 0);
  if (bytes > MAX_PAYLOAD_BYTES) assert.fail(`${codec.name} payload of ${bytes} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  return bytes;
}

function writeFrame(message: Message, requestId: number, payloadLength: number, target: Buffer, at: number): number {
  const codec = codecOf(message.type);
  writeFrameHeader(message.type, requestId, payloadLength, target, at);
  const payloadAt = at + FRAME_HEADER_BYTES;
  writeFixed(codec, message, target, payloadAt);
  codec.tail?.write(message, target, payloadAt + codec.fixed.span);
  return payloadAt + payloadLength;
}

/** The frame header, as frameHeaderLayout lays it out. */
function writeFrameHeader(type: MessageType, requestId: number, payloadLength: number, target: Buffer, at: number): void {
  target.writeUInt32BE(PARTNER_MAGIC, at);
  target.writeUInt16BE(PROTOCOL_VERSION, at + 4);
  target.writeUInt16BE(type, at + 6);
  target.writeUInt32BE(requestId, at + 8);
  target.writeUInt32BE(payloadLength, at + 12);
}

function writeFixed(codec: MessageCodec, message: Message, target: Buffer, at: number): void {
  if (codec.encodeFixed) codec.encodeFixed(message, target, at);
  else writeFixedByLayout(codec, message, target, at);
}

function writeFixedByLayout(codec: MessageCodec, message: Message, target: Buffer, at: number): void {
  const fields = message as unknown as Fields;
  for (const field of codec.fixed.fields) assert(fields[field.property as string] !== undefined, `${codec.name} lacks ${field.property}`);
  codec.fixed.encode(fields, target, at);
}

/**
 * One message as one frame, every part through the buffer-layout structs (no hand-written
 * encoder, frame header included): the reference the hand-written encoders are tested against.
 */
export function encodeMessageByLayout(message: Message): Buffer {
  const payloadLength = payloadBytesOf(message);
  const out = Buffer.alloc(FRAME_HEADER_BYTES + payloadLength);
  frameHeaderLayout.encode({ magic: PARTNER_MAGIC, version: PROTOCOL_VERSION, type: message.type, requestId: message.requestId, payloadLength }, out, 0);
  const codec = codecOf(message.type);
  writeFixedByLayout(codec, message, out, FRAME_HEADER_BYTES);
  codec.tail?.write(message, out, FRAME_HEADER_BYTES + codec.fixed.span);
  return out;
}

// ---- Decoding ----

/** A data tail at least this long still to come is read by the socket straight into its segment. */
export const IN_PLACE_TAIL_BYTES = 64 * 1024;

/**
 * Incremental framer: socket chunks in, whole messages out. Keeps a partial header in a fixed
 * 16-byte buffer. Without a segment pool (handshake, tests, the simulator), a partial payload goes
 * into one buffer of exactly the (checked) declared length, and decoded `data` (write page,
 * forwarded io, io data) aliases the chunk it arrived in, or that payload buffer, which the framer
 * never reuses.
 *
 * With `segments` set (a link whose socket reads into one buffer used again for every read), the
 * data of those three types always lands in a segment of its own, taken when the header arrives:
 * the chunks are gone once push() returns. Such a message's `data` is its segment, and whoever
 * handles the message gives it back (PartnerLink: after the handler, or after the reader of a
 * response). `readTarget` tells the socket where the next read should go: into the segment itself
 * while a long tail is still to come, so a 1 MiB payload is not copied at all. An io data reply may
 * land in its requester's buffer instead (`place`), which spares the requester a copy out of the segment.
 *
 * After a PartnerFramingError every later push throws it again: the stream has no
 * resynchronisation point, so the link must be closed, and frames decoded earlier in the failing
 * push are dropped with it (the link's in-flight requests fail together).
 */
export class MessageFramer {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  /** The frame being read: its codec once its header was judged, null between frames. */
  private codec: MessageCodec | null = null;
  private type = 0;
  private requestId = 0;
  private payloadLength = 0;
  /** A plain frame's payload split across chunks. */
  private payload: Buffer | null = null;
  private payloadFilled = 0;
  /** A pooled frame: its fixed part (copied here) and its data segment. */
  private readonly fixedPart = Buffer.alloc(PAYLOAD_HEADER_ALLOWANCE_BYTES);
  private fixedFilled = 0;
  private tail: Buffer | null = null;
  private tailFilled = 0;
  /** The tail is a requester's buffer (place), not a segment. */
  private tailPlaced = false;
  private failure: PartnerFramingError | null = null;

  /**
   * `maxPayloadBytes`: the largest payload a frame may declare. A link not yet authenticated
   * allows only MAX_HANDSHAKE_PAYLOAD_BYTES, and raises it to MAX_PAYLOAD_BYTES once it is.
   */
  /**
   * With `segments` set: where an io data reply's data should land instead of a segment (the
   * requester's own buffer, of exactly that length), or null. The reply's `data` is then that buffer.
   */
  place: ((requestId: number, bytes: number) => Buffer | null) | null = null;

  constructor(
    public maxPayloadBytes = MAX_PAYLOAD_BYTES,
    public segments: SegmentPool | null = null,
  ) {}

  push(chunk: Buffer): Message[] {
    if (this.failure) throw this.failure;
    try {
      return this.consume(chunk);
    } catch (error) {
      if (error instanceof PartnerFramingError) this.failure = error;
      throw error;
    }
  }

  /** True when the stream stands between two frames (nothing half-read). */
  get idle(): boolean {
    return this.codec === null && this.headerFilled === 0;
  }

  /** True while an io data reply is being read into its requester's buffer (place): that buffer is still written. */
  get placing(): boolean {
    return this.tail !== null && this.tailPlaced;
  }

  /** Where the next socket read should land, when that is a data segment rather than the link's read buffer. */
  get readTarget(): Buffer | null {
    const tail = this.tail;
    if (tail === null || this.fixedFilled < (this.codec as MessageCodec).fixed.span || tail.length - this.tailFilled < IN_PLACE_TAIL_BYTES) return null;
    return tail.subarray(this.tailFilled);
  }

  private consume(chunk: Buffer): Message[] {
    const messages: Message[] = [];
    let at = 0;
    for (;;) {
      if (this.codec === null) {
        at = this.takeHeader(chunk, at);
        if (this.codec === null) return messages;
      }
      const codec: MessageCodec = this.codec;
      if (this.tail !== null) {
        at = this.takePooled(codec, chunk, at);
        if (this.tailFilled < this.tail.length) return messages;
        messages.push(decodePayload(codec, this.type, this.requestId, this.fixedPart, this.tail));
        this.tail = null;
        this.tailFilled = 0;
        this.fixedFilled = 0;
        this.codec = null;
        continue;
      }
      const length = this.payloadLength;
      if (this.payload === null && chunk.length - at >= length) {
        const payload = chunk.subarray(at, at + length);
        // A chunk of a reused read buffer is overwritten by the next read: nothing decoded may point into it.
        messages.push(decodePayload(codec, this.type, this.requestId, this.segments !== null && codec.aliases ? Buffer.from(payload) : payload, null));
        at += length;
        this.codec = null;
        continue;
      }
      at = this.takePayload(chunk, at);
      if (this.payloadFilled < length) return messages;
      messages.push(decodePayload(codec, this.type, this.requestId, this.payload as Buffer, null));
      this.codec = null;
      this.payload = null;
      this.payloadFilled = 0;
    }
  }

  private takeHeader(chunk: Buffer, at: number): number {
    if (this.headerFilled === 0 && chunk.length - at >= FRAME_HEADER_BYTES) {
      this.judgeHeader(chunk, at);
      return at + FRAME_HEADER_BYTES;
    }
    const take = Math.min(FRAME_HEADER_BYTES - this.headerFilled, chunk.length - at);
    chunk.copy(this.header, this.headerFilled, at, at + take);
    this.headerFilled += take;
    if (this.headerFilled === FRAME_HEADER_BYTES) {
      this.headerFilled = 0;
      this.judgeHeader(this.header, 0);
    }
    return at + take;
  }

  /** Read by hand: a decoded header object per frame was garbage at every frame. */
  private judgeHeader(source: Buffer, at: number): void {
    const type = source.readUInt16BE(at + 6);
    const requestId = source.readUInt32BE(at + 8);
    const payloadLength = source.readUInt32BE(at + 12);
    const codec = checkFrameHeader(source.readUInt32BE(at), source.readUInt16BE(at + 4), type, requestId, payloadLength, this.maxPayloadBytes);
    this.type = type;
    this.requestId = requestId;
    this.payloadLength = payloadLength;
    const tailBytes = payloadLength - codec.fixed.span;
    if (this.segments !== null && codec.tail?.data !== undefined && tailBytes > 0) {
      const placed = type === MessageType.IoData ? (this.place?.(requestId, tailBytes) ?? null) : null;
      this.tail = placed ?? this.segments.take(tailBytes);
      this.tailPlaced = placed !== null;
    }
    this.codec = codec;
  }

  /** Only reached for a payload split across chunks; its length was checked in checkFrameHeader. */
  private takePayload(chunk: Buffer, at: number): number {
    this.payload ??= Buffer.allocUnsafe(this.payloadLength);
    const take = Math.min(this.payloadLength - this.payloadFilled, chunk.length - at);
    chunk.copy(this.payload, this.payloadFilled, at, at + take);
    this.payloadFilled += take;
    return at + take;
  }

  /** The fixed part into fixedPart, the data into its segment (unless the socket read it there itself). */
  private takePooled(codec: MessageCodec, chunk: Buffer, at: number): number {
    const tail = this.tail as Buffer;
    const fixedBytes = codec.fixed.span;
    if (this.fixedFilled < fixedBytes) {
      const take = Math.min(fixedBytes - this.fixedFilled, chunk.length - at);
      chunk.copy(this.fixedPart, this.fixedFilled, at, at + take);
      this.fixedFilled += take;
      at += take;
      if (this.fixedFilled < fixedBytes) return at;
    }
    const take = Math.min(tail.length - this.tailFilled, chunk.length - at);
    const inPlace = chunk.buffer === tail.buffer && chunk.byteOffset + at === tail.byteOffset + this.tailFilled;
    if (!inPlace) chunk.copy(tail, this.tailFilled, at, at + take);
    this.tailFilled += take;
    return at + take;
  }
}

function checkFrameHeader(magic: number, version: number, type: number, requestId: number, payloadLength: number, maxPayloadBytes: number): MessageCodec {
  if (magic !== PARTNER_MAGIC) throw new PartnerFramingError('bad-magic', `bad frame magic 0x${hex32(magic)}`);
  const codec = CODECS.get(type);
  if (version !== PROTOCOL_VERSION && !codec?.versionNeutral) {
    throw new PartnerFramingError('wrong-version', `frame of protocol version ${version}, this node speaks ${PROTOCOL_VERSION}`);
  }
  if (!codec) throw new PartnerFramingError('unknown-type', `unknown message type 0x${type.toString(16).padStart(4, '0')}`);
  if (payloadLength > maxPayloadBytes) {
    throw new PartnerFramingError('oversized', `${codec.name} (request ${requestId}) declares ${payloadLength} payload bytes, at most ${maxPayloadBytes}`);
  }
  const fixedBytes = codec.fixed.span;
  if (codec.tail ? payloadLength < fixedBytes : payloadLength !== fixedBytes) {
    throw new PartnerFramingError('bad-length', `${codec.name} (request ${requestId}) payload of ${payloadLength} bytes, its layout takes ${fixedBytes}${codec.tail ? ' or more' : ''}`);
  }
  return codec;
}

/**
 * `fixedSource` starts with the fixed part; the tail follows it there, or is `tail` (a pooled
 * frame's segment). Fixed-layout lengths were checked with the header.
 */
function decodePayload(codec: MessageCodec, type: number, requestId: number, fixedSource: Buffer, tail: Buffer | null): Message {
  try {
    if (codec.decodeHot) return codec.decodeHot(requestId, fixedSource, tail ?? fixedSource.subarray(codec.fixed.span));
    return decodeByLayout(codec, type, requestId, fixedSource, tail);
  } catch (error) {
    if (!(error instanceof PartnerFramingError)) throw error;
    throw new PartnerFramingError(error.reason, `${codec.name} (request ${requestId}): ${error.message}`);
  }
}

function decodeByLayout(codec: MessageCodec, type: number, requestId: number, fixedSource: Buffer, tail: Buffer | null): Message {
  const fixed = codec.fixed.decode(fixedSource, 0);
  const tailFields = codec.tail?.read(fixed, tail ?? fixedSource.subarray(codec.fixed.span));
  return { type, requestId, ...fixed, ...tailFields } as unknown as Message;
}

/**
 * One whole frame decoded through the buffer-layout structs only (no hand-written decoder): the
 * reference the hot decoders are tested against. Throws PartnerFramingError as the framer would.
 */
export function decodeFrameByLayout(frame: Buffer): Message {
  const type = frame.readUInt16BE(6);
  const requestId = frame.readUInt32BE(8);
  const payloadLength = frame.readUInt32BE(12);
  const codec = checkFrameHeader(frame.readUInt32BE(0), frame.readUInt16BE(4), type, requestId, payloadLength, MAX_PAYLOAD_BYTES);
  if (frame.length !== FRAME_HEADER_BYTES + payloadLength) throw new PartnerFramingError('bad-length', `frame of ${frame.length} bytes declares ${payloadLength} payload bytes`);
  try {
    return decodeByLayout(codec, type, requestId, frame.subarray(FRAME_HEADER_BYTES), null);
  } catch (error) {
    if (!(error instanceof PartnerFramingError)) throw error;
    throw new PartnerFramingError(error.reason, `${codec.name} (request ${requestId}): ${error.message}`);
  }
}

/** The types whose data a pooled framer puts in a segment (and a link gives back). */
export function carriesPayload(message: Message): message is WritePage | ForwardedIo | IoData {
  return message.type === MessageType.WritePage || message.type === MessageType.ForwardedIo || message.type === MessageType.IoData;
}

// ---- Helpers for the link and for log lines ----

export function isResponseType(type: MessageType): boolean {
  return (type & RESPONSE_TYPE_BIT) !== 0;
}

/** Every request is answered exactly once, except the one-way heartbeat. */
export function expectsResponse(type: MessageType): boolean {
  return !isResponseType(type) && type !== MessageType.Heartbeat;
}

export function messageTypeName(type: number): string {
  return CODECS.get(type)?.name ?? `unknown type 0x${type.toString(16).padStart(4, '0')}`;
}

const hex32 = (value: number): string => value.toString(16).padStart(8, '0');
