// Oracles for the three decoders. Each check feeds one byte stream under several chunkings and
// reports every way the decoder broke its contract:
//   - only the documented error type may be thrown (FramingError, PartnerFramingError; the
//     Negotiator never throws);
//   - every chunking gives the same outcome;
//   - what was decoded re-encodes to the bytes it came from;
//   - memory retained after a run is bounded by the bytes fed, not by any declared length.
import {
  InfoType,
  MAX_OPTION_BYTES,
  Option,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC,
  OptionReply,
  REQUEST_HEADER_BYTES,
} from '../../src/nbd/constants.js';
import type { ExportCatalog } from '../../src/nbd/negotiation.js';
import { encodeMessage, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES as PARTNER_MAX_PAYLOAD_BYTES, MessageFramer, PROTOCOL_VERSION, type Message } from '../../src/partner/index.js';
import { chunkings } from './chunking.js';
import { comparable } from './comparable.js';
import { encodeRequestHeader } from './nbd-request-gen.js';
import { HEADER_FIELD } from './partner-gen.js';
import type { FuzzRandom } from './random.js';
import { runHandshake, runPartnerFramer, runRequestFramer, type FramedRequest, type HandshakeEvent } from './targets.js';

/** One broken contract. `kind` is stable across seeds (it names the oracle), `detail` is for people. */
export interface Problem {
  kind: string;
  detail: string;
}

const MIB = 1024 * 1024;

/** Growth of Buffer memory across `run`, with its result still alive (so retained memory counts). */
function bufferGrowth<T>(run: () => T): { result: T; grown: number } {
  const before = process.memoryUsage().arrayBuffers;
  const result = run();
  return { result, grown: process.memoryUsage().arrayBuffers - before };
}

function memoryProblem(target: string, grown: number, fed: number, allowance: number): Problem[] {
  const bound = 4 * fed + allowance + MIB;
  return grown > bound ? [{ kind: `${target}-memory`, detail: `Buffer memory grew by ${grown} bytes after ${fed} input bytes (bound ${bound})` }] : [];
}

// ---- (a) handshake ----

/** doc/proto.md option haggling: what each verdict's replies must look like. */
function handshakeGrammar(event: HandshakeEvent, catalog: ExportCatalog): string | null {
  if (event.option === Option.ExportName && event.verdict === 'transmit') {
    const reply = event.replies[0];
    if (event.replies.length !== 1 || !reply || (reply.length !== 10 && reply.length !== 134)) return 'EXPORT_NAME reply is not size + flags (+ 124 zeroes)';
    return null;
  }
  if (event.option === Option.ExportName && event.verdict === 'close') return event.replies.length === 0 ? null : 'a refused EXPORT_NAME sent replies';
  const types: number[] = [];
  for (const reply of event.replies) {
    if (reply.length < OPTION_REPLY_HEADER_BYTES || reply.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) return 'option reply without the reply magic';
    if (reply.readUInt32BE(8) !== event.option >>> 0) return `reply echoes option ${reply.readUInt32BE(8)}, not ${event.option}`;
    if (reply.readUInt32BE(16) !== reply.length - OPTION_REPLY_HEADER_BYTES) return 'option reply length field does not match its data';
    types.push(reply.readUInt32BE(12));
  }
  const last = types[types.length - 1];
  const final = (type: number | undefined): boolean => type === OptionReply.Ack || (type !== undefined && type >= 0x8000_0000);
  if (!final(last)) return 'the replies do not end with ACK or an error';
  if (types.slice(0, -1).some(final)) return 'ACK or error before the last reply';
  if (event.verdict === 'close' && event.option !== Option.Abort) return `option ${event.option} closed the session`;
  if (event.verdict === 'transmit') {
    if (event.option !== Option.Go) return `option ${event.option} entered transmission`;
    if (last !== OptionReply.Ack) return 'GO entered transmission without ACK';
    const exportInfo = event.replies.find((reply) => reply.readUInt32BE(12) === OptionReply.Info && reply.readUInt16BE(OPTION_REPLY_HEADER_BYTES) === InfoType.Export);
    if (!exportInfo) return 'GO entered transmission without NBD_INFO_EXPORT';
    const nameLength = event.data.readUInt32BE(0);
    const entry = catalog.find(event.data.toString('utf8', 4, 4 + nameLength));
    const size = exportInfo.readBigUInt64BE(OPTION_REPLY_HEADER_BYTES + 2);
    if (!entry || BigInt(entry.volume.sizeBytes) !== size) return `GO advertised size ${size} for an export that is not that size`;
  }
  return null;
}

export function checkHandshake(bytes: Buffer, catalog: ExportCatalog, random: FuzzRandom): Problem[] {
  const problems: Problem[] = [];
  const runs = chunkings(bytes, random).map(({ kind, chunks }) => {
    const { result, grown } = kind === 'whole' ? bufferGrowth(() => runHandshake(chunks, catalog)) : { result: runHandshake(chunks, catalog), grown: 0 };
    if (kind === 'whole') problems.push(...memoryProblem('handshake', grown, bytes.length, 2 * MAX_OPTION_BYTES));
    return { kind, outcome: result };
  });
  for (const { kind, outcome } of runs) {
    if (outcome.unexpected) problems.push({ kind: 'handshake-threw', detail: `${kind}: ${outcome.unexpected.name}: ${outcome.unexpected.message}` });
  }
  const [first, ...rest] = runs.map(({ kind, outcome }) => ({ kind, text: comparable({ events: outcome.events, refused: outcome.refused, remainder: outcome.remainder }) }));
  for (const other of rest) {
    if (first && other.text !== first.text) problems.push({ kind: 'handshake-chunking', detail: `${first.kind} vs ${other.kind}: ${first.text.slice(0, 300)} ≠ ${other.text.slice(0, 300)}` });
  }
  for (const event of runs[0]?.outcome.events ?? []) {
    const broken = handshakeGrammar(event, catalog);
    if (broken) problems.push({ kind: 'handshake-grammar', detail: `option ${event.option} (${event.data.length} bytes, ${event.verdict}): ${broken}` });
  }
  return problems;
}

// ---- (b) transmission requests ----

/** The framed requests, encoded again, must be the stream they came from (an oversized payload is skipped, not kept). */
function reencodeRequests(bytes: Buffer, requests: readonly FramedRequest[], maxPayloadBytes: number): { consumed: number; broken: string | null } {
  let at = 0;
  for (const [index, request] of requests.entries()) {
    const header = encodeRequestHeader({ magic: bytes.readUInt32BE(at), flags: request.flags, type: request.type, handle: request.handle, offset: BigInt(bytes.readBigUInt64BE(at + 16)), length: request.length, payload: null });
    if (!header.equals(bytes.subarray(at, at + REQUEST_HEADER_BYTES))) return { consumed: at, broken: `request ${index}: header differs from its bytes` };
    // Offsets past 2^53 are documented to lose precision, but must stay past any export's end.
    const exact = Number(bytes.readBigUInt64BE(at + 16));
    if (request.offset !== exact) return { consumed: at, broken: `request ${index}: offset ${request.offset}, wire says ${exact}` };
    at += REQUEST_HEADER_BYTES;
    const isWrite = request.type === 1;
    const oversized = isWrite && request.length > maxPayloadBytes;
    if (request.oversized !== oversized) return { consumed: at, broken: `request ${index}: oversized=${request.oversized} for a ${request.length}-byte ${isWrite ? 'WRITE' : 'request'}` };
    if (isWrite && !oversized && request.length > 0) {
      if (!request.payload || !request.payload.equals(bytes.subarray(at, at + request.length))) return { consumed: at, broken: `request ${index}: payload differs from its bytes` };
    } else if (request.payload && request.payload.length > 0) {
      return { consumed: at, broken: `request ${index}: a payload on a request that carries none` };
    }
    if (isWrite) at += request.length;
  }
  return { consumed: at, broken: null };
}

export function checkRequests(bytes: Buffer, maxPayloadBytes: number, random: FuzzRandom): Problem[] {
  const problems: Problem[] = [];
  const runs = chunkings(bytes, random).map(({ kind, chunks }) => {
    const { result, grown } = kind === 'whole' ? bufferGrowth(() => runRequestFramer(chunks, maxPayloadBytes)) : { result: runRequestFramer(chunks, maxPayloadBytes), grown: 0 };
    if (kind === 'whole') problems.push(...memoryProblem('requests', grown, bytes.length, 0));
    return { kind, outcome: result };
  });
  for (const { kind, outcome } of runs) {
    if (outcome.unexpected) problems.push({ kind: 'requests-threw', detail: `${kind}: ${outcome.unexpected.name}: ${outcome.unexpected.message}` });
    if (outcome.afterRefusal) problems.push({ kind: 'requests-after-refusal', detail: `${kind}: ${outcome.afterRefusal}` });
  }
  const [first, ...rest] = runs.map(({ kind, outcome }) => ({ kind, text: comparable({ requests: outcome.requests, refused: outcome.refused, idle: outcome.idle }) }));
  for (const other of rest) {
    if (first && other.text !== first.text) problems.push({ kind: 'requests-chunking', detail: `${first.kind} vs ${other.kind}: ${first.text.slice(0, 300)} ≠ ${other.text.slice(0, 300)}` });
  }
  const whole = runs[0]?.outcome;
  if (whole && !whole.unexpected) {
    const { consumed, broken } = reencodeRequests(bytes, whole.requests, maxPayloadBytes);
    if (broken) problems.push({ kind: 'requests-reencode', detail: broken });
    else if (!whole.refused && whole.idle !== (consumed === bytes.length)) {
      problems.push({ kind: 'requests-idle', detail: `idle=${whole.idle} after consuming ${consumed} of ${bytes.length} bytes` });
    }
  }
  return problems;
}

// ---- (c) partner frames ----

function frameSlices(bytes: Buffer, count: number): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < count && at + FRAME_HEADER_BYTES <= bytes.length; i++) {
    const end = at + FRAME_HEADER_BYTES + bytes.readUInt32BE(at + HEADER_FIELD.payloadLength);
    frames.push(bytes.subarray(at, end));
    at = end;
  }
  return frames;
}

function decodeOne(frame: Buffer): Message[] {
  return new MessageFramer().push(frame);
}

/** decode(x) re-encodes to x (same version) or at least to a frame that decodes to the same message. */
function partnerRoundTrip(message: Message, frame: Buffer | undefined): string | null {
  let encoded: Buffer;
  try {
    encoded = encodeMessage(message);
  } catch (error) {
    return `the encoder refuses a message the decoder accepted: ${(error as Error).message}`;
  }
  if (frame && frame.readUInt16BE(HEADER_FIELD.version) === PROTOCOL_VERSION && !encoded.equals(frame)) {
    return `re-encoded bytes differ: ${encoded.subarray(0, 64).toString('hex')} vs ${frame.subarray(0, 64).toString('hex')}`;
  }
  let again: Message[];
  try {
    again = decodeOne(encoded);
  } catch (error) {
    return `the decoder refuses its own encoding: ${(error as Error).message}`;
  }
  return again.length === 1 && comparable(again[0]) === comparable(message) ? null : 'decode(encode(m)) is not m';
}

export function checkPartner(bytes: Buffer, random: FuzzRandom, generated?: { messages: readonly Message[]; mutated: boolean }): Problem[] {
  const problems: Problem[] = [];
  const runs = chunkings(bytes, random).map(({ kind, chunks }) => {
    const { result, grown } = kind === 'whole' ? bufferGrowth(() => runPartnerFramer(chunks)) : { result: runPartnerFramer(chunks), grown: 0 };
    if (kind === 'whole') problems.push(...memoryProblem('partner', grown, bytes.length, PARTNER_MAX_PAYLOAD_BYTES));
    return { kind, outcome: result };
  });
  for (const { kind, outcome } of runs) {
    if (outcome.unexpected) problems.push({ kind: 'partner-threw', detail: `${kind}: ${outcome.unexpected.name}: ${outcome.unexpected.message}` });
    if (outcome.sticky) problems.push({ kind: 'partner-not-sticky', detail: `${kind}: ${outcome.sticky}` });
  }
  // A failing push drops the messages it decoded (documented), so chunkings agree on the error and
  // on a prefix of the messages; the byte-at-a-time run delivers the most.
  const longest = runs.reduce((best, run) => (run.outcome.messages.length > best.outcome.messages.length ? run : best), runs[0] as (typeof runs)[number]);
  const longestTexts = longest.outcome.messages.map(comparable);
  for (const { kind, outcome } of runs) {
    if (comparable(outcome.refused) !== comparable(longest.outcome.refused)) {
      problems.push({ kind: 'partner-chunking', detail: `${kind} ended with ${outcome.refused?.message ?? 'no error'}, ${longest.kind} with ${longest.outcome.refused?.message ?? 'no error'}` });
    }
    const texts = outcome.messages.map(comparable);
    const prefix = texts.every((text, index) => text === longestTexts[index]);
    if (!prefix || (!outcome.refused && texts.length !== longestTexts.length)) {
      problems.push({ kind: 'partner-chunking', detail: `${kind} decoded ${texts.length} messages that are not a prefix of ${longest.kind}'s ${longestTexts.length}` });
    }
  }
  const frames = frameSlices(bytes, longest.outcome.messages.length);
  longest.outcome.messages.forEach((message, index) => {
    const broken = partnerRoundTrip(message, frames[index]);
    if (broken) problems.push({ kind: 'partner-roundtrip', detail: `message ${index} (type 0x${message.type.toString(16)}): ${broken}` });
  });
  if (generated && !generated.mutated) {
    const whole = runs[0]?.outcome;
    if (whole?.refused) problems.push({ kind: 'partner-valid-refused', detail: `a stream of valid messages was refused: ${whole.refused.message}` });
    else if (whole && comparable(whole.messages) !== comparable(generated.messages)) {
      problems.push({ kind: 'partner-valid-changed', detail: 'valid messages did not decode to themselves' });
    }
  }
  return problems;
}
