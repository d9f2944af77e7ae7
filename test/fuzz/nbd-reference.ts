// A hostile client's own reading of the bytes it sent, per doc/proto.md: which options the server
// must answer, whether it must hang up, and which requests it owes a reply. This is the client
// side of the protocol, not a copy of the server: it never decides an option's outcome, it only
// knows where the frames are (the server's replies say what became of each option).
import {
  Command,
  IHAVEOPT,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_BYTES,
  MAX_OPTIONS_PER_HANDSHAKE,
  OPTION_HEADER_BYTES,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
} from '../../src/nbd/constants.js';

export interface PlannedOption {
  code: number;
  data: Buffer;
  /** Offset just past this option in the client's stream: where transmission starts if it attaches. */
  end: number;
}

export interface HandshakePlan {
  flags: number | null;
  /** Complete options, in order, that the server reads (it stops at the first reason to close). */
  options: PlannedOption[];
  /** Why the server must hang up once those options are answered, or null if it must wait for more. */
  closesAfter: string | null;
}

export function planHandshake(bytes: Buffer): HandshakePlan {
  if (bytes.length < 4) return { flags: null, options: [], closesAfter: null };
  const flags = bytes.readUInt32BE(0);
  if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) return { flags, options: [], closesAfter: 'unknown client flags' };
  const options: PlannedOption[] = [];
  let at = 4;
  while (at + OPTION_HEADER_BYTES <= bytes.length) {
    if (bytes.readBigUInt64BE(at) !== IHAVEOPT) return { flags, options, closesAfter: 'bad option magic' };
    const length = bytes.readUInt32BE(at + 12);
    if (length > MAX_OPTION_BYTES) return { flags, options, closesAfter: 'option longer than the limit' };
    const end = at + OPTION_HEADER_BYTES + length;
    if (end > bytes.length) break;
    if (options.length === MAX_OPTIONS_PER_HANDSHAKE) return { flags, options, closesAfter: 'too many options' };
    options.push({ code: bytes.readUInt32BE(at + 8), data: bytes.subarray(at + OPTION_HEADER_BYTES, end), end });
    at = end;
  }
  return { flags, options, closesAfter: null };
}

export interface PlannedRequest {
  type: number;
  flags: number;
  handle: bigint;
  offset: bigint;
  length: number;
  /** A WRITE's payload when it was within the limit (the server may apply it). */
  payload: Buffer | null;
}

export interface RequestPlan {
  /** Complete requests the server owes a reply, DISC excluded, in stream order. */
  requests: PlannedRequest[];
  /** The server must close: a DISC, or a header without the request magic. */
  stop: 'disc' | 'bad-magic' | null;
  /** Bytes follow the stop: what the server does with them is its own business. */
  afterStop: boolean;
}

export function planRequests(bytes: Buffer, maxPayloadBytes: number): RequestPlan {
  const requests: PlannedRequest[] = [];
  let at = 0;
  while (at + REQUEST_HEADER_BYTES <= bytes.length) {
    if (bytes.readUInt32BE(at) !== REQUEST_MAGIC) return { requests, stop: 'bad-magic', afterStop: at + REQUEST_HEADER_BYTES < bytes.length };
    const request: PlannedRequest = {
      flags: bytes.readUInt16BE(at + 4),
      type: bytes.readUInt16BE(at + 6),
      handle: bytes.readBigUInt64BE(at + 8),
      offset: bytes.readBigUInt64BE(at + 16),
      length: bytes.readUInt32BE(at + 24),
      payload: null,
    };
    at += REQUEST_HEADER_BYTES;
    if (request.type === Command.Disc) return { requests, stop: 'disc', afterStop: at < bytes.length };
    if (request.type === Command.Write) {
      if (at + request.length > bytes.length) break;
      if (request.length <= maxPayloadBytes) request.payload = bytes.subarray(at, at + request.length);
      at += request.length;
    }
    requests.push(request);
  }
  return { requests, stop: null, afterStop: false };
}
