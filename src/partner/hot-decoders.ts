// Hand-written decoders for the messages every mirrored write and every forwarded request brings:
// write page and its command complete, forwarded I/O and its I/O data. The buffer-layout structs in
// codec.ts stay the definition of the wire format and the reference these are tested against
// (test/unit/partner/hot-decoders.test.ts, on random and on damaged frames). The generic walk built
// a field object, a uuid string from hex and a spread copy per frame: about 1 µs for a write page
// or a forwarded I/O, against about 0.1 µs here. They refuse what the layouts refuse, with the same
// PartnerFramingError reason, and build the message of a refusal only then.
import { IoOp, MAX_IO_BYTES, MAX_PAGE_BYTES, MessageType } from './constants.js';
import type { CommandComplete, ForwardedIo, IoData, Message, WritePage } from './messages.js';

/** The error class is codec.ts's; passed in, so this module does not import its importer. */
type FramingErrorOf = (reason: 'bad-field' | 'bad-length', message: string) => Error;

/** Decodes a whole message: `fixed` starts with the fixed part; `tail` is the data after it. */
export type HotDecoder = (requestId: number, fixed: Buffer, tail: Buffer) => Message;

/**
 * A write page range starts in the named page and ends within MAX_PAGE_BYTES of its first byte:
 * one frame carries a run of consecutive pages, never more than one payload's worth.
 */
export const writePageRangeFits = (pageBytes: number, offset: number, length: number): boolean =>
  pageBytes <= MAX_PAGE_BYTES && offset + Math.min(length, 1) <= pageBytes && offset + length <= MAX_PAGE_BYTES;

/** Read and write move data, so their length is bounded; flush, zero and trim may cover any range. */
export const carriesData = (op: IoOp): boolean => op === IoOp.Read || op === IoOp.Write;

/**
 * Allocation ids as strings, by their 16 bytes: a link carries the same few ids on every frame.
 * The most recent ones are kept (four words and the text each), replaced round robin.
 */
const UUID_SLOTS = 16;

class UuidTexts {
  private readonly words = new Uint32Array(UUID_SLOTS * 4);
  private readonly texts: string[] = new Array<string>(UUID_SLOTS).fill('');
  private next = 0;

  text(source: Buffer, at: number): string {
    const a = source.readUInt32BE(at);
    const b = source.readUInt32BE(at + 4);
    const c = source.readUInt32BE(at + 8);
    const d = source.readUInt32BE(at + 12);
    const words = this.words;
    for (let slot = 0; slot < UUID_SLOTS; slot++) {
      const w = slot * 4;
      if (words[w] === a && words[w + 1] === b && words[w + 2] === c && words[w + 3] === d && this.texts[slot] !== '') return this.texts[slot] as string;
    }
    const hex = source.toString('hex', at, at + 16);
    const text = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    const slot = this.next;
    this.next = (slot + 1) % UUID_SLOTS;
    words.set([a, b, c, d], slot * 4);
    this.texts[slot] = text;
    return text;
  }
}

/** The hot types' decoders, given codec.ts's error and its lists of allowed values. */
export function hotDecoders(lists: { completable: readonly number[]; statuses: readonly number[]; ops: readonly number[] }, framingError: FramingErrorOf): Map<number, HotDecoder> {
  const completable = new Set(lists.completable);
  const statuses = new Set(lists.statuses);
  const ops = new Set(lists.ops);
  const uuids = new UuidTexts();

  const u64 = (source: Buffer, at: number, property: string): number => {
    const high = source.readUInt32BE(at);
    if (high > 0x1f_ffff) throw framingError('bad-field', `${property} exceeds 2^53 - 1`);
    return high * 0x1_0000_0000 + source.readUInt32BE(at + 4);
  };
  const flag = (source: Buffer, at: number, property: string): boolean => {
    const value = source[at] as number;
    if (value > 1) throw framingError('bad-field', `${property} ${value} is neither 0 nor 1`);
    return value === 1;
  };
  const choice16 = (source: Buffer, at: number, allowed: ReadonlySet<number>, property: string): number => {
    const value = source.readUInt16BE(at);
    if (!allowed.has(value)) throw framingError('bad-field', `${property} ${value} is not a known value`);
    return value;
  };

  const writePage: HotDecoder = (requestId, fixed, tail) => {
    const message: WritePage = {
      type: MessageType.WritePage,
      requestId,
      allocation: uuids.text(fixed, 0),
      virtualPage: u64(fixed, 16, 'virtualPage'),
      version: u64(fixed, 24, 'version'),
      pageBytes: fixed.readUInt32BE(32),
      offset: fixed.readUInt32BE(36),
      length: fixed.readUInt32BE(40),
      dirty: flag(fixed, 44, 'dirty'),
      zeroFill: flag(fixed, 45, 'zeroFill'),
      data: tail,
    };
    const expected = message.zeroFill ? 0 : message.length;
    if (tail.length !== expected) {
      throw framingError('bad-length', `length field says ${message.length}${message.zeroFill ? ' zero-filled' : ''} bytes, ${tail.length} data bytes follow`);
    }
    if (!writePageRangeFits(message.pageBytes, message.offset, message.length)) {
      throw framingError('bad-field', `range ${message.offset}+${message.length} does not start in a page of ${message.pageBytes} bytes or runs past ${MAX_PAGE_BYTES} bytes`);
    }
    return message;
  };

  const commandComplete: HotDecoder = (requestId, fixed) => {
    const message: CommandComplete = {
      type: MessageType.CommandComplete,
      requestId,
      requestType: choice16(fixed, 0, completable, 'requestType'),
      status: choice16(fixed, 2, statuses, 'status'),
    };
    return message;
  };

  const forwardedIo: HotDecoder = (requestId, fixed, tail) => {
    const op = fixed[0] as number;
    if (!ops.has(op)) throw framingError('bad-field', `op ${op} is not a known value`);
    const message: ForwardedIo = {
      type: MessageType.ForwardedIo,
      requestId,
      op,
      fua: flag(fixed, 1, 'fua'),
      allocation: uuids.text(fixed, 2),
      offset: u64(fixed, 18, 'offset'),
      length: u64(fixed, 26, 'length'),
      data: tail,
    };
    if (carriesData(op) && message.length > MAX_IO_BYTES) throw framingError('bad-field', `length ${message.length} exceeds ${MAX_IO_BYTES} bytes`);
    const expected = op === IoOp.Write ? message.length : 0;
    if (tail.length !== expected) throw framingError('bad-length', `op ${op} of length ${message.length} carries ${expected} data bytes, ${tail.length} follow`);
    return message;
  };

  const ioData: HotDecoder = (requestId, _fixed, tail) => {
    if (tail.length > MAX_IO_BYTES) throw framingError('bad-length', `${tail.length} data bytes, at most ${MAX_IO_BYTES}`);
    const message: IoData = { type: MessageType.IoData, requestId, data: tail };
    return message;
  };

  return new Map<number, HotDecoder>([
    [MessageType.WritePage, writePage],
    [MessageType.CommandComplete, commandComplete],
    [MessageType.ForwardedIo, forwardedIo],
    [MessageType.IoData, ioData],
  ]);
}
