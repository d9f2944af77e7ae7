// Grammar-aware NBD transmission-phase request streams: valid headers for every command and flag,
// bad magic, offsets past the end and past 2^63, huge lengths, oversized WRITE payloads and long
// pipelined bursts.
import { Command, CommandFlag, MAX_PAYLOAD_BYTES, REQUEST_HEADER_BYTES, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from '../../src/nbd/constants.js';
import type { LengthField } from './mutate.js';
import type { FuzzRandom } from './random.js';

export const ALL_COMMANDS: readonly number[] = [
  Command.Read, Command.Write, Command.Disc, Command.Flush, Command.Trim, Command.Cache, Command.WriteZeroes, Command.BlockStatus,
];
const ALL_FLAGS: readonly number[] = [CommandFlag.Fua, CommandFlag.NoHole, CommandFlag.Df, CommandFlag.ReqOne, CommandFlag.FastZero];
/** Commands that change the export's bytes: the server model follows them. */
export const MUTATING_COMMANDS: ReadonlySet<number> = new Set([Command.Write, Command.WriteZeroes, Command.Trim]);

export interface RequestSpec {
  magic: number;
  flags: number;
  type: number;
  handle: bigint;
  offset: bigint;
  length: number;
  /** WRITE payload bytes actually sent after the header (may be fewer than `length` for the last request). */
  payload: Buffer | null;
}

export interface RequestStreamSpec {
  /** Size of the export the requests aim at. */
  sizeBytes: number;
  /** The payload limit the decoder enforces. */
  maxPayloadBytes: number;
  /** WRITE payloads longer than this are never generated in full (the stream ends inside them instead). */
  maxSentPayloadBytes: number;
  /** Requests in a non-burst stream. */
  maxRequests: number;
  /** Keep the magic right (for server rounds that should reach deep states). */
  validMagic?: boolean;
  /** Leave out DISC, so a stream does not end itself early. */
  noDisc?: boolean;
}

export interface RequestStream {
  requests: RequestSpec[];
  bytes: Buffer;
  lengthFields: LengthField[];
}

function offsetFor(random: FuzzRandom, sizeBytes: number): bigint {
  const roll = random.float();
  if (roll < 0.6) return BigInt(random.below(sizeBytes));
  if (roll < 0.7) return BigInt(random.below(sizeBytes / 512) * 512);
  if (roll < 0.8) return BigInt(Math.max(0, sizeBytes - random.between(0, 4096)));
  return random.pick([BigInt(sizeBytes), BigInt(sizeBytes) + 1n, 1n << 32n, (1n << 53n) - 1n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 512n]);
}

function lengthFor(random: FuzzRandom, spec: RequestStreamSpec): number {
  const roll = random.float();
  if (roll < 0.55) return random.between(1, 4096);
  if (roll < 0.65) return 0;
  if (roll < 0.8) return random.between(1, spec.sizeBytes);
  return random.boundary(4, [spec.maxPayloadBytes, MAX_PAYLOAD_BYTES, spec.sizeBytes]);
}

function flagsFor(random: FuzzRandom): number {
  if (random.chance(0.5)) return 0;
  if (random.chance(0.8)) return ALL_FLAGS.filter(() => random.chance(0.3)).reduce((sum, flag) => sum | flag, 0);
  return random.boundary(2);
}

function magicFor(random: FuzzRandom, spec: RequestStreamSpec): number {
  if (spec.validMagic || random.chance(0.97)) return REQUEST_MAGIC;
  return random.pick([SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, (REQUEST_MAGIC ^ (1 << random.below(32))) >>> 0, random.u32(), 0]);
}

function typeFor(random: FuzzRandom, spec: RequestStreamSpec): number {
  const choices = spec.noDisc ? ALL_COMMANDS.filter((type) => type !== Command.Disc) : ALL_COMMANDS;
  if (random.chance(0.95)) return random.pick(choices);
  return random.pick([Command.BlockStatus + 1, 0xffff, random.boundary(2)].filter((type) => !spec.noDisc || type !== Command.Disc));
}

export function encodeRequestHeader(request: RequestSpec): Buffer {
  const out = Buffer.alloc(REQUEST_HEADER_BYTES);
  out.writeUInt32BE(request.magic, 0);
  out.writeUInt16BE(request.flags, 4);
  out.writeUInt16BE(request.type, 6);
  out.writeBigUInt64BE(request.handle, 8);
  out.writeBigUInt64BE(request.offset, 16);
  out.writeUInt32BE(request.length, 24);
  return out;
}

/** A WRITE's payload: a cheap fill for big ones (the bytes do not matter, only their count). */
function payloadFor(random: FuzzRandom, length: number): Buffer {
  return length <= 64 * 1024 ? random.bytes(length) : Buffer.alloc(length, random.below(256));
}

function single(random: FuzzRandom, spec: RequestStreamSpec, handle: bigint): RequestSpec {
  const type = typeFor(random, spec);
  return { magic: magicFor(random, spec), flags: flagsFor(random), type, handle, offset: offsetFor(random, spec.sizeBytes), length: lengthFor(random, spec), payload: null };
}

/** Many requests of one shape at once: what fills the in-flight window and the reply queue. */
function burst(random: FuzzRandom, spec: RequestStreamSpec, firstHandle: bigint): RequestSpec[] {
  const type = random.pick([Command.Read, Command.Write, Command.Flush, Command.BlockStatus, Command.WriteZeroes]);
  const length = type === Command.Write ? random.between(1, 512) : random.chance(0.8) ? random.between(1, 4096) : random.between(1, spec.sizeBytes);
  return Array.from({ length: random.between(50, 700) }, (_, i) => ({
    magic: REQUEST_MAGIC, flags: 0, type, handle: firstHandle + BigInt(i),
    offset: BigInt(random.below(Math.max(1, spec.sizeBytes - length + 1))), length, payload: null,
  }));
}

export function generateRequests(random: FuzzRandom, spec: RequestStreamSpec): RequestStream {
  let handle = BigInt(random.u32()) << BigInt(random.below(33));
  const requests: RequestSpec[] = [];
  const count = random.between(1, spec.maxRequests);
  while (requests.length < count) {
    if (random.chance(0.05)) {
      const group = burst(random, spec, handle);
      handle += BigInt(group.length);
      requests.push(...group);
    } else {
      // Now and then a handle repeats: the server must answer each request, not each handle.
      requests.push(single(random, spec, random.chance(0.02) && requests.length > 0 ? (requests[requests.length - 1] as RequestSpec).handle : handle++));
    }
  }
  const parts: Buffer[] = [];
  const lengthFields: LengthField[] = [];
  let at = 0;
  for (let i = 0; i < requests.length; i++) {
    const request = requests[i] as RequestSpec;
    let body: Buffer | null = null;
    if (request.type === Command.Write && request.length > 0) {
      if (request.length <= spec.maxSentPayloadBytes) body = payloadFor(random, request.length);
      else {
        // Too big to send whole: it becomes the last request, cut short; the decoder must wait for the rest.
        body = payloadFor(random, random.below(Math.min(request.length, spec.maxSentPayloadBytes)));
        requests.length = i + 1;
      }
    }
    request.payload = body;
    const header = encodeRequestHeader(request);
    lengthFields.push({ at: at + 24, width: 4, limits: [spec.maxPayloadBytes, spec.sizeBytes, body?.length ?? 0] });
    parts.push(header);
    at += header.length;
    if (body) {
      parts.push(body);
      at += body.length;
    }
  }
  return { requests, bytes: Buffer.concat(parts), lengthFields };
}
