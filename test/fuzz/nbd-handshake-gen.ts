// Grammar-aware NBD handshake sessions (fixed newstyle, doc/proto.md): client flags, then a sequence
// of options with valid and broken payloads, names up to and past the 4096-byte limit, and
// optionally a final GO or EXPORT_NAME that enters transmission.
import {
  BASE_ALLOCATION,
  HandshakeFlag,
  IHAVEOPT,
  InfoType,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_BYTES,
  MAX_OPTIONS_PER_HANDSHAKE,
  MAX_STRING_BYTES,
  Option,
  OPTION_HEADER_BYTES,
} from '../../src/nbd/constants.js';
import type { LengthField } from './mutate.js';
import type { FuzzRandom } from './random.js';

export const ALL_OPTIONS: readonly number[] = [
  Option.ExportName, Option.Abort, Option.List, Option.PeekExport, Option.StartTls, Option.Info, Option.Go,
  Option.StructuredReply, Option.ListMetaContext, Option.SetMetaContext, Option.ExtendedHeaders,
];
const INFO_TYPES: readonly number[] = [InfoType.Export, InfoType.Name, InfoType.Description, InfoType.BlockSize];

export interface HandshakeCase {
  bytes: Buffer;
  lengthFields: LengthField[];
  /** One word per option, for failure reports. */
  outline: string[];
}

export interface HandshakeSpec {
  /** Names the server exports; most generated names are one of these. */
  exportNames: readonly string[];
  /** End with GO or EXPORT_NAME on this export so the session reaches transmission. */
  attach?: string;
  /** Ask for structured replies (and maybe base:allocation) before attaching. */
  structured?: boolean;
}

/** A payload under construction that remembers where its length fields are. */
class Payload {
  readonly parts: Buffer[] = [];
  readonly lengthFields: LengthField[] = [];
  private length = 0;

  uint(value: number, width: 1 | 2 | 4, limits?: readonly number[]): this {
    const out = Buffer.alloc(width);
    out.writeUIntBE(value, 0, width);
    if (limits) this.lengthFields.push({ at: this.length, width, limits });
    return this.raw(out);
  }

  raw(bytes: Buffer): this {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }

  /** A string with its u32 length; sometimes the declared length lies. */
  string(random: FuzzRandom, value: Buffer): this {
    const declared = random.chance(0.08) ? random.boundary(4, [value.length, MAX_STRING_BYTES]) : value.length;
    return this.uint(declared, 4, [value.length, MAX_STRING_BYTES]).raw(value);
  }

  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export function exportName(random: FuzzRandom, names: readonly string[]): Buffer {
  const roll = random.float();
  if (roll < 0.45 && names.length > 0) return Buffer.from(random.pick(names));
  if (roll < 0.55) return Buffer.alloc(0);
  if (roll < 0.65) return Buffer.from(`x${random.u32().toString(36)}`);
  if (roll < 0.7) return Buffer.alloc(MAX_STRING_BYTES, 0x61);
  if (roll < 0.75) return Buffer.alloc(MAX_STRING_BYTES + 1, 0x62);
  if (roll < 0.8) return Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82]); // invalid UTF-8
  if (roll < 0.85 && names.length > 0) return Buffer.concat([Buffer.from(random.pick(names)), Buffer.from([0])]);
  return random.bytes(random.size(300));
}

function infoPayload(random: FuzzRandom, name: Buffer): Payload {
  const payload = new Payload().string(random, name);
  const requests = Array.from({ length: random.chance(0.8) ? random.below(4) : random.below(40) }, () =>
    random.chance(0.8) ? random.pick(INFO_TYPES) : random.boundary(2),
  );
  const declared = random.chance(0.08) ? random.boundary(2, [requests.length]) : requests.length;
  payload.uint(declared, 2, [requests.length]);
  for (const request of requests) payload.uint(request, 2);
  if (random.chance(0.05)) payload.raw(random.bytes(random.between(1, 5)));
  return payload;
}

function metaContextPayload(random: FuzzRandom, name: Buffer): Payload {
  const payload = new Payload().string(random, name);
  const queries = Array.from({ length: random.chance(0.9) ? random.below(4) : random.below(64) }, () => {
    const roll = random.float();
    if (roll < 0.4) return Buffer.from(BASE_ALLOCATION);
    if (roll < 0.55) return Buffer.from('base:');
    if (roll < 0.6) return Buffer.alloc(0);
    if (roll < 0.65) return Buffer.alloc(MAX_STRING_BYTES + random.below(2), 0x71);
    if (roll < 0.75) return Buffer.from(`${BASE_ALLOCATION}x`);
    return random.bytes(random.size(100));
  });
  const declared = random.chance(0.08) ? random.boundary(4, [queries.length]) : queries.length;
  payload.uint(declared, 4, [queries.length]);
  for (const query of queries) payload.string(random, query);
  if (random.chance(0.05)) payload.raw(random.bytes(random.between(1, 5)));
  return payload;
}

/** Options that take no data get junk now and then: the server must refuse it, not choke. */
function emptyOrJunk(random: FuzzRandom): Payload {
  return random.chance(0.85) ? new Payload() : new Payload().raw(random.bytes(random.size(64)));
}

function optionPayload(random: FuzzRandom, option: number, names: readonly string[]): Payload {
  switch (option) {
    case Option.ExportName:
      return new Payload().raw(exportName(random, names));
    case Option.Info:
    case Option.Go:
      return infoPayload(random, exportName(random, names));
    case Option.ListMetaContext:
    case Option.SetMetaContext:
      return metaContextPayload(random, exportName(random, names));
    default:
      return random.chance(0.9) ? emptyOrJunk(random) : new Payload().raw(random.bytes(random.size(MAX_OPTION_BYTES)));
  }
}

class Session {
  readonly parts: Buffer[] = [];
  readonly lengthFields: LengthField[] = [];
  readonly outline: string[] = [];
  length = 0;

  add(bytes: Buffer, fields: readonly LengthField[] = []): void {
    for (const field of fields) this.lengthFields.push({ ...field, at: field.at + this.length });
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  option(random: FuzzRandom, option: number, payload: Payload, honest = false): void {
    const data = payload.build();
    const header = Buffer.alloc(OPTION_HEADER_BYTES);
    header.writeBigUInt64BE(random.chance(honest ? 0 : 0.02) ? IHAVEOPT ^ 1n : IHAVEOPT, 0);
    header.writeUInt32BE(option >>> 0, 8);
    const declared = !honest && random.chance(0.04) ? random.boundary(4, [data.length, MAX_OPTION_BYTES]) : data.length;
    header.writeUInt32BE(declared, 12);
    const fields: LengthField[] = [{ at: 12, width: 4, limits: [data.length, MAX_OPTION_BYTES] }];
    for (const field of payload.lengthFields) fields.push({ ...field, at: field.at + OPTION_HEADER_BYTES });
    this.add(Buffer.concat([header, data]), fields);
    this.outline.push(`${option}:${data.length}`);
  }
}

function clientFlags(random: FuzzRandom): number {
  if (random.chance(0.95)) return random.pick([KNOWN_CLIENT_FLAGS, KNOWN_CLIENT_FLAGS, HandshakeFlag.FixedNewstyle, HandshakeFlag.NoZeroes, 0]);
  return random.chance(0.5) ? random.boundary(4) : KNOWN_CLIENT_FLAGS | (1 << random.between(2, 31));
}

export function generateHandshake(random: FuzzRandom, spec: HandshakeSpec): HandshakeCase {
  const session = new Session();
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(spec.attach !== undefined ? random.pick([KNOWN_CLIENT_FLAGS, HandshakeFlag.FixedNewstyle]) : clientFlags(random) >>> 0);
  session.add(flags, [{ at: 0, width: 4, limits: [] }]);

  // Meta context options are refused until structured replies are agreed: agree first, mostly.
  if (spec.attach === undefined && random.chance(0.5)) session.option(random, Option.StructuredReply, new Payload());
  const flood = random.chance(0.03);
  const count = flood ? MAX_OPTIONS_PER_HANDSHAKE + random.between(-1, 3) : random.chance(0.8) ? random.below(5) : random.below(24);
  for (let i = 0; i < count; i++) {
    const option = flood ? random.pick([Option.StructuredReply, Option.List]) : random.chance(0.95) ? random.pick(ALL_OPTIONS) : random.boundary(4);
    // A session meant to attach must not be ended early by ABORT, EXPORT_NAME or another GO.
    if (spec.attach !== undefined && (option === Option.Abort || option === Option.ExportName || option === Option.Go)) continue;
    session.option(random, option, optionPayload(random, option, spec.exportNames), spec.attach !== undefined);
  }

  if (spec.attach !== undefined) {
    const name = Buffer.from(spec.attach);
    if (spec.structured) {
      session.option(random, Option.StructuredReply, new Payload(), true);
      if (random.chance(0.6)) {
        const select = new Payload().uint(name.length, 4).raw(name).uint(1, 4).uint(Buffer.byteLength(BASE_ALLOCATION), 4).raw(Buffer.from(BASE_ALLOCATION));
        session.option(random, Option.SetMetaContext, select, true);
      }
    }
    if (random.chance(0.75)) {
      const go = new Payload().uint(name.length, 4).raw(name).uint(0, 2);
      session.option(random, Option.Go, go, true);
    } else {
      session.option(random, Option.ExportName, new Payload().raw(name), true);
    }
  }
  return { bytes: Buffer.concat(session.parts), lengthFields: session.lengthFields, outline: session.outline };
}
