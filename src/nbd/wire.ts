// NBD message layouts and pure encoders/decoders. No I/O here.
//
// The layouts are declared once with buffer-layout; handshake messages (cold path) go through them.
// Request headers and reply headers are on the per-I/O hot path, so they are read and written with
// direct Buffer calls into caller-owned memory; test/unit/nbd/wire.test.ts checks that both agree
// byte for byte with the layouts.
import layout from 'buffer-layout';
import {
  IHAVEOPT,
  InfoType,
  NBD_MAGIC,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC,
  SERVER_HANDSHAKE_FLAGS,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';

export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  handle: Buffer;
  offset: number;
  length: number;
}

export const requestHeaderLayout = layout.struct<RequestHeader>([
  layout.u32be('magic'),
  layout.u16be('flags'),
  layout.u16be('type'),
  layout.blob(8, 'handle'),
  layout.nu64be('offset'),
  layout.u32be('length'),
]);

export const simpleReplyHeaderLayout = layout.struct<{ magic: number; error: number; handle: Buffer }>([
  layout.u32be('magic'),
  layout.u32be('error'),
  layout.blob(8, 'handle'),
]);

export const structuredReplyHeaderLayout = layout.struct<{
  magic: number;
  flags: number;
  type: number;
  handle: Buffer;
  length: number;
}>([layout.u32be('magic'), layout.u16be('flags'), layout.u16be('type'), layout.blob(8, 'handle'), layout.u32be('length')]);

export const optionHeaderLayout = layout.struct<{ magic: number; option: number; length: number }>([
  layout.nu64be('magic'),
  layout.u32be('option'),
  layout.u32be('length'),
]);

const optionReplyHeaderLayout = layout.struct<{ magic: number; option: number; type: number; length: number }>([
  layout.nu64be('magic'),
  layout.u32be('option'),
  layout.u32be('type'),
  layout.u32be('length'),
]);

const serverGreetingLayout = layout.struct<{ nbdMagic: number; ihaveopt: number; flags: number }>([
  layout.nu64be('nbdMagic'),
  layout.nu64be('ihaveopt'),
  layout.u16be('flags'),
]);

const infoExportLayout = layout.struct<{ type: number; size: number; flags: number }>([
  layout.u16be('type'),
  layout.nu64be('size'),
  layout.u16be('flags'),
]);

const infoBlockSizeLayout = layout.struct<{ type: number; minimum: number; preferred: number; maximum: number }>([
  layout.u16be('type'),
  layout.u32be('minimum'),
  layout.u32be('preferred'),
  layout.u32be('maximum'),
]);

// ---- Handshake (cold path) ----

/** Magic values above 2^53 do not survive nu64be, so the 64-bit magics are written as bigints. */
export function encodeServerGreeting(): Buffer {
  const out = Buffer.alloc(serverGreetingLayout.span);
  serverGreetingLayout.encode({ nbdMagic: 0, ihaveopt: 0, flags: SERVER_HANDSHAKE_FLAGS }, out);
  out.writeBigUInt64BE(NBD_MAGIC, 0);
  out.writeBigUInt64BE(IHAVEOPT, 8);
  return out;
}

export function encodeOptionReply(option: number, type: number, data: Buffer = EMPTY): Buffer {
  const out = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + data.length);
  optionReplyHeaderLayout.encode({ magic: Number(OPTION_REPLY_MAGIC), option, type, length: data.length }, out);
  data.copy(out, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** An error reply may carry a human-readable message; clients log it. */
export function encodeOptionError(option: number, error: number, message: string): Buffer {
  return encodeOptionReply(option, error, Buffer.from(message, 'utf8'));
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const out = Buffer.alloc(infoExportLayout.span);
  infoExportLayout.encode({ type: InfoType.Export, size: sizeBytes, flags: transmissionFlags }, out);
  return out;
}

export function encodeInfoString(type: InfoType.Name | InfoType.Description, text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(2 + body.length);
  out.writeUInt16BE(type, 0);
  body.copy(out, 2);
  return out;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const out = Buffer.alloc(infoBlockSizeLayout.span);
  infoBlockSizeLayout.encode({ type: InfoType.BlockSize, minimum, preferred, maximum }, out);
  return out;
}

/** NBD_REP_SERVER payload for NBD_OPT_LIST: name length, name, then the optional description. */
export function encodeServerEntry(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descriptionBytes = Buffer.from(description, 'utf8');
  const out = Buffer.alloc(4 + nameBytes.length + descriptionBytes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  descriptionBytes.copy(out, 4 + nameBytes.length);
  return out;
}

export function encodeMetaContext(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const out = Buffer.alloc(4 + nameBytes.length);
  out.writeUInt32BE(contextId, 0);
  nameBytes.copy(out, 4);
  return out;
}

/** Reply to the old-style NBD_OPT_EXPORT_NAME: size, flags, and 124 zeroes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  layout.nu64be().encode(sizeBytes, out, 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

// ---- Transmission (hot path) ----

/**
 * Decoded request header. Objects are reused by the framer only until handed to the caller; the
 * handle is kept as two 32-bit halves so decoding allocates no Buffer.
 */
export interface Request {
  flags: number;
  type: number;
  handleHigh: number;
  handleLow: number;
  /** Offsets above 2^53 lose precision but stay above any export size, so range checks still hold. */
  offset: number;
  length: number;
  /** WRITE payload in pieces (views of `payloadBuffers`, or of small unpooled buffers), when it fitted the payload limit. */
  payload: Buffer[] | null;
  /**
   * The pooled buffers a WRITE payload was assembled in. Their owner is the request: whoever settles
   * the request gives them back to the pool they came from, once nothing reads the payload any more.
   */
  payloadBuffers: Buffer[] | null;
  /** A WRITE whose payload exceeded the limit was read and discarded. */
  oversized: boolean;
}

/** Reads a request header at `at`; the caller has checked the magic and that 28 bytes are there. */
export function decodeRequestHeader(source: Buffer, at: number): Request {
  return {
    flags: source.readUInt16BE(at + 4),
    type: source.readUInt16BE(at + 6),
    handleHigh: source.readUInt32BE(at + 8),
    handleLow: source.readUInt32BE(at + 12),
    offset: source.readUInt32BE(at + 16) * 0x1_0000_0000 + source.readUInt32BE(at + 20),
    length: source.readUInt32BE(at + 24),
    payload: null,
    payloadBuffers: null,
    oversized: false,
  };
}

export function writeSimpleReplyHeader(target: Buffer, at: number, error: number, request: Request): void {
  target.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  target.writeUInt32BE(error, at + 4);
  target.writeUInt32BE(request.handleHigh, at + 8);
  target.writeUInt32BE(request.handleLow, at + 12);
}

export function writeStructuredReplyHeader(
  target: Buffer,
  at: number,
  flags: number,
  type: number,
  request: Request,
  length: number,
): void {
  target.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  target.writeUInt16BE(flags, at + 4);
  target.writeUInt16BE(type, at + 6);
  target.writeUInt32BE(request.handleHigh, at + 8);
  target.writeUInt32BE(request.handleLow, at + 12);
  target.writeUInt32BE(length, at + 16);
}

/** Writes a 64-bit offset as two halves: exact for every safe integer. */
export function writeOffset64(target: Buffer, at: number, value: number): void {
  target.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  target.writeUInt32BE(value >>> 0, at + 4);
}

const EMPTY = Buffer.alloc(0);
