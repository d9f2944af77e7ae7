// CRC32C and the pieces every checksummed on-disk record shares: the error type, the trailing-CRC
// seal, and the "two alternating copies, newest valid one wins" rule.
//
// Every record that must survive a torn write (superblock, cluster record, lease) is stored twice.
// A writer puts sequence n into copy n mod 2, so a write torn by a crash damages only the copy being
// replaced; the reader takes the valid copy with the higher counter and falls back to the older one.
import { StorageError } from '../core/index.js';
import { crc32c } from '@node-rs/crc32';
import { BLOCK_BYTES } from './layout.js';

/** CRC32C of `buffers` as if they were concatenated (crc32c's second argument continues a CRC). */
export function crc32cOf(...buffers: Buffer[]): number {
  let state = 0;
  for (const buffer of buffers) state = crc32c(buffer, state);
  return state;
}

/** Every block of a fresh member reads as zeroes, so this is every checksum of a fresh array. */
export const ZERO_BLOCK_CRC = crc32cOf(Buffer.alloc(BLOCK_BYTES));

export type FormatErrorCode =
  | 'blank' // all zeroes: the copy was never written (a fresh member or slot), not damaged
  | 'bad-magic'
  | 'bad-version'
  | 'bad-checksum'
  | 'bad-value' // the checksum holds but a field is impossible: a writer bug or a foreign format
  | 'too-large'
  | 'no-valid-copy';

/** On-disk bytes that cannot be decoded: an operating error the caller recovers from. */
export class FormatError extends StorageError {
  override name = 'FormatError';
  constructor(
    readonly code: FormatErrorCode,
    message: string,
  ) {
    super(message);
  }
}

type FormatErrorClass = new (code: FormatErrorCode, message: string) => FormatError;

/** Writes the CRC32C of all bytes but the last four into the last four (big-endian). */
export function sealTrailingCrc(record: Buffer): Buffer {
  const crcAt = record.length - 4;
  record.writeUInt32BE(crc32cOf(record.subarray(0, crcAt)), crcAt);
  return record;
}

export function trailingCrcMatches(record: Buffer): boolean {
  const crcAt = record.length - 4;
  return record.readUInt32BE(crcAt) === crc32cOf(record.subarray(0, crcAt));
}

/** Throws `blank` for a never-written copy and `bad-magic` for anything else that is not ours. */
export function expectMagic(buffer: Buffer, magic: Buffer, ErrorClass: FormatErrorClass, notOurs: string): void {
  if (buffer.length >= magic.length && buffer.subarray(0, magic.length).equals(magic)) return;
  if (isAllZero(buffer)) throw new ErrorClass('blank', `${notOurs}: never written (all zeroes)`);
  throw new ErrorClass('bad-magic', notOurs);
}

const ZEROES = Buffer.alloc(64 * 1024);

/** Compared natively in 64 KiB pieces: a cluster record copy is read at every start and every owner change. */
function isAllZero(buffer: Buffer): boolean {
  for (let at = 0; at < buffer.length; at += ZEROES.length) {
    const piece = buffer.subarray(at, Math.min(buffer.length, at + ZEROES.length));
    if (!piece.equals(ZEROES.subarray(0, piece.length))) return false;
  }
  return true;
}

/**
 * Decodes both copies and returns the valid one with the higher counter (copy A on a tie). Throws
 * only when neither decodes; the error names both reasons, and is `blank` when both were never
 * written, so a caller can tell "fresh" from "damaged".
 */
export function newestValidCopy<T>(
  copyA: Buffer,
  copyB: Buffer,
  decode: (copy: Buffer) => T,
  counterOf: (decoded: T) => number,
  ErrorClass: FormatErrorClass,
  what: string,
): T {
  const a = tryDecode(copyA, decode);
  const b = tryDecode(copyB, decode);
  if (a instanceof FormatError && b instanceof FormatError) {
    const code = a.code === 'blank' && b.code === 'blank' ? 'blank' : 'no-valid-copy';
    throw new ErrorClass(code, `no valid ${what}: copy A: ${a.message}; copy B: ${b.message}`);
  }
  if (a instanceof FormatError) return b as T;
  if (b instanceof FormatError) return a;
  return counterOf(b) > counterOf(a) ? b : a;
}

/** Only format errors mean "this copy is bad"; anything else is a bug and propagates. */
function tryDecode<T>(copy: Buffer, decode: (copy: Buffer) => T): T | FormatError {
  try {
    return decode(copy);
  } catch (error) {
    if (error instanceof FormatError) return error;
    throw error;
  }
}
