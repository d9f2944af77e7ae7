// Partner link frames (docs/protocol.md): a valid message of every type with random field values,
// and frames broken at the header (magic, version, type, declared length up to 2^32 - 1) or inside
// the payload (fields set to boundary values).
import {
  FRAME_HEADER_BYTES,
  IoOp,
  LockMode,
  MAX_HEADER_ENTRIES,
  MAX_IO_BYTES,
  MAX_PAGE_BYTES,
  MAX_PAYLOAD_BYTES,
  MessageType,
  MIN_PAGE_BYTES,
  NIL_ALLOCATION,
  NO_NODE,
  PROTOCOL_VERSION,
  NONCE_BYTES,
  PROOF_BYTES,
  RefusalReason,
  RESPONSE_TYPE_BIT,
  SenseKind,
  Status,
  type HeaderPageEntry,
  type Message,
} from '../../src/partner/index.js';
import { encodeBatch } from '../../src/partner/index.js';
import type { LengthField } from './mutate.js';
import type { FuzzRandom } from './random.js';

/** Frame header layout (docs/protocol.md): magic u32 | version u16 | type u16 | request id u32 | payload length u32. */
export const HEADER_FIELD = { magic: 0, version: 4, type: 6, requestId: 8, payloadLength: 12 } as const;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const uuid = (random: FuzzRandom): string => {
  if (random.chance(0.1)) return NIL_ALLOCATION;
  const hex = random.bytes(16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};
const u64 = (random: FuzzRandom): number => (random.chance(0.2) ? random.pick([0, 1, 2 ** 32 - 1, 2 ** 32, MAX_SAFE]) : random.below(2 ** 40));
const u32 = (random: FuzzRandom): number => (random.chance(0.2) ? random.boundary(4) : random.below(2 ** 20));
const nodeId = (random: FuzzRandom): number => (random.chance(0.2) ? NO_NODE : random.below(8));
const bool = (random: FuzzRandom): boolean => random.chance(0.5);
const heldMode = (random: FuzzRandom): LockMode.Shared | LockMode.Exclusive => random.pick([LockMode.Shared, LockMode.Exclusive]);
const anyMode = (random: FuzzRandom): LockMode => random.pick([LockMode.None, LockMode.Shared, LockMode.Exclusive]);
const STATUSES: readonly Status[] = [
  Status.Ok, Status.NoSpace, Status.Locked, Status.UnknownAllocation, Status.NotResident,
  Status.StaleEpoch, Status.NotPartner, Status.Invalid, Status.IoError, Status.ShuttingDown,
];
const pageBytes = (random: FuzzRandom): number => {
  const sizes: number[] = [];
  for (let size = MIN_PAGE_BYTES; size <= MAX_PAGE_BYTES; size *= 2) sizes.push(size);
  return random.pick(sizes);
};
/** Data lengths: mostly small, sometimes the whole limit. */
const dataLength = (random: FuzzRandom, max: number): number => (random.chance(0.05) ? max : random.size(Math.min(max, 16 * 1024)));

const identity = (random: FuzzRandom) => ({
  clusterId: uuid(random),
  nodeId: nodeId(random),
  epoch: u64(random),
  protocolVersion: random.chance(0.8) ? PROTOCOL_VERSION : random.boundary(2),
  proof: random.bytes(PROOF_BYTES),
});

function writePage(random: FuzzRandom, requestId: number): Message {
  const page = pageBytes(random);
  const offset = random.below(page);
  const length = random.chance(0.1) ? 0 : random.between(0, Math.min(dataLength(random, MAX_PAGE_BYTES), MAX_PAGE_BYTES - offset));
  const zeroFill = random.chance(0.2);
  return {
    type: MessageType.WritePage, requestId, allocation: uuid(random), virtualPage: u64(random), version: u64(random), pageBytes: page,
    offset, length, dirty: bool(random), zeroFill, data: zeroFill ? Buffer.alloc(0) : random.bytes(length),
  };
}

function forwardedIo(random: FuzzRandom, requestId: number): Message {
  const op = random.pick([IoOp.Probe, IoOp.Read, IoOp.Write, IoOp.Flush, IoOp.Zero, IoOp.Trim]);
  const carries = op === IoOp.Read || op === IoOp.Write;
  const length = carries ? dataLength(random, MAX_IO_BYTES) : u64(random);
  return { type: MessageType.ForwardedIo, requestId, op, fua: bool(random), allocation: uuid(random), offset: u64(random), length, data: op === IoOp.Write ? random.bytes(length) : Buffer.alloc(0) };
}

function headerPages(random: FuzzRandom): HeaderPageEntry[] {
  const count = random.chance(0.02) ? MAX_HEADER_ENTRIES : random.below(12);
  return Array.from({ length: count }, () => ({
    virtualPage: u64(random), version: u64(random), ownerNodeId: nodeId(random), readerCount: u32(random), lockMode: anyMode(random), dirtyOffset: u32(random), dirtyLength: u32(random),
  }));
}

type Builder = (random: FuzzRandom, requestId: number) => Message;

/** One builder per message type; a type added to the protocol needs one here too (the coverage test checks). */
export const BUILDERS = new Map<MessageType, Builder>([
  [MessageType.SpaceRequest, (r, requestId) => ({ type: MessageType.SpaceRequest, requestId, bytesWanted: u64(r) })],
  [MessageType.AllocateMemory, (r, requestId) => ({ type: MessageType.AllocateMemory, requestId, allocation: uuid(r), sizeBytes: u64(r), pageBytes: pageBytes(r), ownerNodeId: nodeId(r) })],
  [MessageType.ReleaseMemory, (r, requestId) => ({ type: MessageType.ReleaseMemory, requestId, allocation: uuid(r) })],
  [MessageType.LockRequest, (r, requestId) => ({ type: MessageType.LockRequest, requestId, allocation: uuid(r), virtualPage: u64(r), requestingNodeId: nodeId(r), mode: heldMode(r) })],
  [MessageType.ReadHeader, (r, requestId) => ({ type: MessageType.ReadHeader, requestId, allocation: uuid(r), firstVirtualPage: u64(r), maxEntries: u32(r) })],
  [MessageType.WritePage, writePage],
  [MessageType.SenseRequest, (r, requestId) => ({ type: MessageType.SenseRequest, requestId, kind: r.pick([SenseKind.Node, SenseKind.Allocation]), allocation: uuid(r) })],
  [MessageType.AllocateRead, (r, requestId) => ({ type: MessageType.AllocateRead, requestId, allocation: uuid(r), virtualPage: u64(r), nodeId: nodeId(r), pageIn: bool(r) })],
  [MessageType.AllocateWrite, (r, requestId) => ({ type: MessageType.AllocateWrite, requestId, allocation: uuid(r), virtualPage: u64(r), nodeId: nodeId(r), pageIn: bool(r) })],
  [MessageType.ReleasePointer, (r, requestId) => ({ type: MessageType.ReleasePointer, requestId, allocation: uuid(r), virtualPage: u64(r), nodeId: nodeId(r), mode: heldMode(r), modified: bool(r) })],
  [
    MessageType.CommandComplete,
    (r, requestId) => ({
      type: MessageType.CommandComplete, requestId, status: r.pick(STATUSES),
      requestType: r.pick([MessageType.SpaceRequest, MessageType.WritePage, MessageType.PageClean, MessageType.ForwardedIo, MessageType.ReleasePointer]),
    }),
  ],
  [MessageType.SpaceStatus, (r, requestId) => ({ type: MessageType.SpaceStatus, requestId, freeBytes: u64(r), reclaimableBytes: u64(r) })],
  [MessageType.LockStatus, (r, requestId) => ({ type: MessageType.LockStatus, requestId, mode: anyMode(r), readerCount: u32(r), ownerNodeId: nodeId(r) })],
  [
    MessageType.Header,
    (r, requestId) => ({ type: MessageType.Header, requestId, sizeBytes: u64(r), pageBytes: pageBytes(r), ownerNodeId: nodeId(r), nextVirtualPage: u64(r), final: bool(r), pages: headerPages(r) }),
  ],
  [
    MessageType.SenseInformation,
    (r, requestId) => ({
      type: MessageType.SenseInformation, requestId, kind: r.pick([SenseKind.Node, SenseKind.Allocation]), epoch: u64(r), poolBytes: u64(r), freeBytes: u64(r),
      residentPages: u32(r), dirtyPages: u32(r), pagingQueueLength: u32(r), destageQueueLength: u32(r),
    }),
  ],
  [MessageType.Challenge, (r, requestId) => ({ type: MessageType.Challenge, requestId, protocolVersion: r.chance(0.8) ? PROTOCOL_VERSION : r.boundary(2), nonce: r.bytes(NONCE_BYTES) })],
  [MessageType.Hello, (r, requestId) => ({ type: MessageType.Hello, requestId, ...identity(r) })],
  [MessageType.HelloReply, (r, requestId) => ({ type: MessageType.HelloReply, requestId, ...identity(r) })],
  [
    MessageType.HelloRefusal,
    (r, requestId) => ({
      type: MessageType.HelloRefusal, requestId, reason: r.pick([RefusalReason.VersionMismatch, RefusalReason.ClusterMismatch, RefusalReason.NodeIdConflict, RefusalReason.StaleEpoch, RefusalReason.UnknownNode, RefusalReason.ImplausibleEpoch]), ...identity(r),
    }),
  ],
  [MessageType.Heartbeat, (r, requestId) => ({ type: MessageType.Heartbeat, requestId, epoch: u64(r) })],
  [MessageType.PageClean, (r, requestId) => ({ type: MessageType.PageClean, requestId, allocation: uuid(r), virtualPage: u64(r), version: u64(r), pageCount: r.chance(0.8) ? r.between(1, 64) : r.pick([1, 0xffffffff]) })],
  [MessageType.VolumeHandover, (r, requestId) => ({ type: MessageType.VolumeHandover, requestId, allocation: uuid(r), fromNodeId: nodeId(r), toNodeId: nodeId(r), epoch: u64(r) })],
  [MessageType.HolderAnnouncement, (r, requestId) => ({ type: MessageType.HolderAnnouncement, requestId, previousNodeId: nodeId(r), holderNodeId: nodeId(r), epoch: u64(r) })],
  [MessageType.MirrorReclaim, (r, requestId) => ({ type: MessageType.MirrorReclaim, requestId, allocation: uuid(r), nodeId: nodeId(r), epoch: u64(r) })],
  [MessageType.OwnerNotice, (r, requestId) => ({ type: MessageType.OwnerNotice, requestId, allocation: uuid(r), ownerNodeId: nodeId(r), epoch: u64(r) })],
  [MessageType.CatalogChange, (r, requestId) => ({ type: MessageType.CatalogChange, requestId, allocation: uuid(r), epoch: u64(r) })],
  [MessageType.VolumeRemoval, (r, requestId) => ({ type: MessageType.VolumeRemoval, requestId, allocation: uuid(r), epoch: u64(r), commit: bool(r), force: bool(r) })],
  [MessageType.ResyncBegin, (r, requestId) => ({ type: MessageType.ResyncBegin, requestId, epoch: u64(r), allocationCount: u32(r), pageCount: u32(r) })],
  [MessageType.ResyncEnd, (r, requestId) => ({ type: MessageType.ResyncEnd, requestId, epoch: u64(r), allocationCount: u32(r), pageCount: u32(r) })],
  [MessageType.ForwardedIo, forwardedIo],
  [MessageType.IoData, (r, requestId) => ({ type: MessageType.IoData, requestId, data: r.bytes(dataLength(r, MAX_IO_BYTES)) })],
]);
export const MESSAGE_TYPES: readonly MessageType[] = [...BUILDERS.keys()];

export interface PartnerCase {
  /** The valid messages the stream was made from (before any mutation). */
  messages: Message[];
  bytes: Buffer;
  lengthFields: LengthField[];
  mutated: boolean;
}

export function validMessage(random: FuzzRandom, type: MessageType = random.pick(MESSAGE_TYPES)): Message {
  return (BUILDERS.get(type) as Builder)(random, random.chance(0.1) ? random.boundary(4) : random.u32());
}

/** Breaks one frame at a header field or inside its payload. */
function breakFrame(random: FuzzRandom, frame: Buffer): Buffer {
  const out = Buffer.from(frame);
  const payloadLength = frame.length - FRAME_HEADER_BYTES;
  switch (random.below(6)) {
    case 0:
      out.writeUInt32BE(random.chance(0.5) ? random.u32() : (out.readUInt32BE(HEADER_FIELD.magic) ^ (1 << random.below(32))) >>> 0, HEADER_FIELD.magic);
      break;
    case 1:
      out.writeUInt16BE(random.pick([0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 0xffff]), HEADER_FIELD.version);
      break;
    case 2: {
      const type = random.pick([...MESSAGE_TYPES, MessageType.IoData + 1, RESPONSE_TYPE_BIT, 0, 0xffff, random.below(0x10000)]);
      out.writeUInt16BE(type, HEADER_FIELD.type);
      break;
    }
    case 3:
      out.writeUInt32BE(random.boundary(4, [payloadLength, MAX_PAYLOAD_BYTES]), HEADER_FIELD.payloadLength);
      break;
    default: {
      if (payloadLength === 0) break;
      const width = random.pick([1, 2, 4] as const);
      const at = FRAME_HEADER_BYTES + random.below(Math.max(1, payloadLength - width + 1));
      if (at + width <= out.length) out.writeUIntBE(random.boundary(width), at, width);
      break;
    }
  }
  return out;
}

export function generatePartnerStream(random: FuzzRandom): PartnerCase {
  const count = random.chance(0.9) ? random.between(1, 6) : random.between(7, 40);
  const messages = Array.from({ length: count }, () => validMessage(random));
  const frames = messages.map((message) => encodeBatch([message]));
  const mutated = random.chance(0.6);
  if (mutated) {
    const victim = random.below(frames.length);
    frames[victim] = breakFrame(random, frames[victim] as Buffer);
  }
  const lengthFields: LengthField[] = [];
  let at = 0;
  for (const frame of frames) {
    lengthFields.push({ at: at + HEADER_FIELD.payloadLength, width: 4, limits: [frame.length - FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES] });
    at += frame.length;
  }
  return { messages, bytes: Buffer.concat(frames), lengthFields, mutated };
}
