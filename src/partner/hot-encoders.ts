// Hand-written encoders for the fixed parts of the messages every replicated write sends: write
// page (the change), command complete (its answer), forwarded I/O and I/O data. The buffer-layout
// structs in codec.ts stay the definition of the wire format; these write the same bytes with
// direct Buffer calls, without a field object or a generic walk over the layout per message
// (test/unit/partner/hot-encoders.test.ts checks them against the layouts on random messages). They
// refuse what the layouts refuse (AssertionError), and build the message of a refusal only then.
import { AssertionError } from 'node:assert';
import { IoOp, MessageType, Status } from './constants.js';
import type { CommandComplete, ForwardedIo, Message, WritePage } from './messages.js';

/** Writes a message's fixed part at `at` of `target`; the span is the layout's. */
export type FixedEncoder = (message: Message, target: Buffer, at: number) => void;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Allocation ids repeat on every message: each is parsed once. Bounded, as ids come and go. */
const uuidBytes = new Map<string, Buffer>();
const MAX_CACHED_UUIDS = 4096;

function refuse(message: string): never {
  throw new AssertionError({ message });
}

function writeUuid(value: unknown, property: string, target: Buffer, at: number): void {
  let bytes = typeof value === 'string' ? uuidBytes.get(value) : undefined;
  if (bytes === undefined) {
    if (typeof value !== 'string' || !UUID_PATTERN.test(value)) refuse(`${property} is not a canonical uuid: ${String(value)}`);
    bytes = Buffer.from(value.replace(/-/g, ''), 'hex');
    if (uuidBytes.size >= MAX_CACHED_UUIDS) uuidBytes.clear();
    uuidBytes.set(value, bytes);
  }
  bytes.copy(target, at);
}

function writeU64(value: unknown, property: string, target: Buffer, at: number): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) refuse(`${property} must be a safe unsigned integer, got ${String(value)}`);
  target.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  target.writeUInt32BE(value >>> 0, at + 4);
}

function writeU32(value: unknown, property: string, target: Buffer, at: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) refuse(`${property} is not a u32: ${String(value)}`);
  target.writeUInt32BE(value, at);
}

function writeFlag(value: unknown, property: string, target: Buffer, at: number): void {
  if (typeof value !== 'boolean') refuse(`${property} is not a boolean: ${String(value)}`);
  target[at] = value ? 1 : 0;
}

function writeChoice16(value: unknown, allowed: ReadonlySet<number>, property: string, target: Buffer, at: number): void {
  if (typeof value !== 'number' || !allowed.has(value)) refuse(`${property} ${String(value)} is not a known value`);
  target.writeUInt16BE(value, at);
}

/** The fixed part of write page: allocation, virtual page, version, page bytes, offset, length, dirty, zero fill (46 bytes). */
const writePage: FixedEncoder = (message, target, at) => {
  const m = message as WritePage;
  writeUuid(m.allocation, 'allocation', target, at);
  writeU64(m.virtualPage, 'virtualPage', target, at + 16);
  writeU64(m.version, 'version', target, at + 24);
  writeU32(m.pageBytes, 'pageBytes', target, at + 32);
  writeU32(m.offset, 'offset', target, at + 36);
  writeU32(m.length, 'length', target, at + 40);
  writeFlag(m.dirty, 'dirty', target, at + 44);
  writeFlag(m.zeroFill, 'zeroFill', target, at + 45);
};

/**
 * Command complete: the answered request's type and a status (4 bytes). `completable` and
 * `statuses` are codec.ts's own lists, so both encoders accept the same values.
 */
function commandComplete(completable: ReadonlySet<number>, statuses: ReadonlySet<number>): FixedEncoder {
  return (message, target, at) => {
    const m = message as CommandComplete;
    writeChoice16(m.requestType, completable, 'requestType', target, at);
    writeChoice16(m.status, statuses, 'status', target, at + 2);
  };
}

/** Forwarded I/O: op, fua, allocation, offset, length (34 bytes). */
function forwardedIo(ops: ReadonlySet<number>): FixedEncoder {
  return (message, target, at) => {
    const m = message as ForwardedIo;
    if (typeof m.op !== 'number' || !ops.has(m.op)) refuse(`op ${String(m.op)} is not a known value`);
    target[at] = m.op;
    writeFlag(m.fua, 'fua', target, at + 1);
    writeUuid(m.allocation, 'allocation', target, at + 2);
    writeU64(m.offset, 'offset', target, at + 18);
    writeU64(m.length, 'length', target, at + 26);
  };
}

/** I/O data has no fixed part: its data is all tail. */
const ioData: FixedEncoder = () => undefined;

/** The hot types' encoders, given codec.ts's lists of allowed values. */
export function hotEncoders(lists: { completable: readonly number[]; statuses: readonly Status[]; ops: readonly IoOp[] }): Map<number, FixedEncoder> {
  return new Map<number, FixedEncoder>([
    [MessageType.WritePage, writePage],
    [MessageType.CommandComplete, commandComplete(new Set(lists.completable), new Set(lists.statuses))],
    [MessageType.ForwardedIo, forwardedIo(new Set(lists.ops))],
    [MessageType.IoData, ioData],
  ]);
}
