// One hostile client against a running server: it sends a generated (often broken) byte stream in
// random chunks, then reads every reply the server owes it by the client's own reading of what it
// sent (nbd-reference.ts), and checks each against doc/proto.md. It reports problems, and the
// effects on export bytes that the model must follow: writes answered OK, and writes whose outcome
// it never learned.
import net from 'node:net';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import {
  Command,
  HandshakeFlag,
  IHAVEOPT,
  InfoType,
  MAX_PAYLOAD_BYTES,
  NBD_MAGIC,
  NbdErrno,
  Option,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC,
  OptionReply,
  REPLY_FLAG_DONE,
  ReplyType,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
  TransmissionFlag,
} from '../../src/nbd/constants.js';
import { ByteReader, HangError } from './byte-reader.js';
import type { Problem } from './decoder-checks.js';
import { MUTATING_COMMANDS } from './nbd-request-gen.js';
import { planHandshake, planRequests, type HandshakePlan, type PlannedRequest } from './nbd-reference.js';
import type { ServedExport } from './targets.js';
import type { Effect } from './volume-model.js';

export interface HostileScript {
  bytes: Buffer;
  chunks: Buffer[];
  /** Yield to the event loop between chunks, so the server often sees them as separate reads. */
  yieldBetweenChunks: boolean;
  /** Milliseconds to wait after chunk i (regression vectors: the server surely has handled it before the next arrives). */
  gapsMs?: readonly number[];
  /** Do not read replies until the round says so: the server's output backs up meanwhile. */
  stall: boolean;
}

export interface HostileReport {
  problems: Problem[];
  /** The export the session attached to, if it did. */
  attached: string | null;
  /** By export: a session that lost its replies may have attached to any export it asked for. */
  effects: Map<string, Effect[]>;
}

const GREETING_BYTES = 18;
const KNOWN_ERRNOS = new Set<number>([NbdErrno.Eperm, NbdErrno.Eio, NbdErrno.Enomem, NbdErrno.Einval, NbdErrno.Enospc, NbdErrno.Eoverflow, NbdErrno.Enotsup, NbdErrno.Eshutdown]);
const KNOWN_COMMANDS = new Set<number>([Command.Read, Command.Write, Command.Flush, Command.Trim, Command.Cache, Command.WriteZeroes, Command.BlockStatus]);

interface Attachment {
  name: string;
  sizeBytes: bigint;
  transmissionFlags: number;
  structured: boolean;
  /** Offset in the client's stream where transmission starts. */
  from: number;
}

class HostileSession {
  readonly problems: Problem[] = [];
  readonly effects = new Map<string, Effect[]>();
  attached: string | null = null;

  constructor(
    private readonly reader: ByteReader,
    private readonly script: HostileScript,
    private readonly exports: readonly ServedExport[],
  ) {}

  private problem(kind: string, detail: string): void {
    this.problems.push({ kind, detail });
  }

  /**
   * True once the client sent something the server must hang up on. A server that hangs up with
   * unread input makes the kernel reset the connection, and a reset discards replies the client had
   * not read yet: from then on a missing reply is not the server's fault.
   */
  private mayClose = false;
  /** Options whose outcome the client has read. */
  private optionsSettled = 0;

  /** The server closed while replies were still owed: a finding unless the client earned the close. */
  private closedEarly(kind: string, detail: string): 'closed' {
    if (!this.mayClose) this.problem(kind, detail);
    return 'closed';
  }

  /**
   * The session ended before the client learned whether option `from` or a later GO/EXPORT_NAME
   * attached: the server may have run the requests after any of them, so all their writes are unknown.
   */
  private unknownAttachments(plan: HandshakePlan, from: number): void {
    for (const option of plan.options.slice(from)) {
      if (option.code !== Option.Go && option.code !== Option.ExportName) continue;
      const name = option.code === Option.ExportName ? option.data.toString('utf8') : option.data.length >= 4 ? option.data.toString('utf8', 4, 4 + option.data.readUInt32BE(0)) : null;
      const spec = name === null ? undefined : this.exportNamed(name);
      if (!spec) continue;
      const requests = planRequests(this.script.bytes.subarray(option.end), MAX_PAYLOAD_BYTES).requests;
      this.recordEffects(requests, new Map(), spec, false);
    }
  }

  private exportNamed(name: string): ServedExport | undefined {
    return name === '' ? this.exports[0] : this.exports.find((entry) => entry.name === name);
  }

  async verify(): Promise<void> {
    const plan = planHandshake(this.script.bytes);
    // A GO may attach before the client reads its ACK, and what follows it is then requests: if
    // they end in a reason to close, the server may close (and reset) before the client read anything.
    const closesAfterAttaching = (end: number): boolean => planRequests(this.script.bytes.subarray(end), MAX_PAYLOAD_BYTES).stop !== null;
    this.mayClose =
      plan.closesAfter !== null ||
      plan.options.some((option) => option.code === Option.Abort || option.code === Option.ExportName || (option.code === Option.Go && closesAfterAttaching(option.end)));
    const greeting = await this.reader.take(GREETING_BYTES, 'the greeting');
    if (greeting === null) {
      this.closedEarly('server-greeting', 'closed without a greeting');
      return this.unknownAttachments(plan, 0);
    }
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
      return this.problem('server-greeting', `bad greeting: ${greeting.toString('hex')}`);
    }
    const attachment = await this.haggle(plan);
    if (attachment === 'closed') return this.unknownAttachments(plan, this.optionsSettled);
    if (attachment === null) {
      if (plan.closesAfter !== null) await this.reader.untilClosed(`the close after ${plan.closesAfter}`);
      return;
    }
    await this.transmit(attachment);
  }

  /** Follows the replies option by option; returns how the session attached, null if it did not, 'closed' if the server hung up as allowed. */
  private async haggle(plan: HandshakePlan): Promise<Attachment | null | 'closed'> {
    const noZeroes = ((plan.flags ?? 0) & HandshakeFlag.NoZeroes) !== 0;
    let structured = false;
    for (const [index, option] of plan.options.entries()) {
      this.optionsSettled = index;
      const what = `replies to option ${index} (${option.code})`;
      if (option.code === Option.ExportName) {
        const reply = await this.reader.take(noZeroes ? 10 : 134, what);
        if (reply === null) return 'closed'; // an unknown export (no error reply exists), or a reset that ate the reply
        return { name: option.data.toString('utf8'), sizeBytes: reply.readBigUInt64BE(0), transmissionFlags: reply.readUInt16BE(8), structured, from: option.end };
      }
      const replies: Array<{ type: number; data: Buffer }> = [];
      for (;;) {
        const header = await this.reader.take(OPTION_REPLY_HEADER_BYTES, what);
        if (header === null) return this.closedEarly('server-closed-in-handshake', `closed before answering option ${index} (${option.code}, ${option.data.length} bytes)`);
        if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC || header.readUInt32BE(8) !== option.code >>> 0) {
          this.problem('server-option-reply', `option ${index} (${option.code}): reply header ${header.toString('hex')}`);
          return 'closed';
        }
        const data = await this.reader.take(header.readUInt32BE(16), what);
        if (data === null) return this.closedEarly('server-closed-in-handshake', `closed inside a reply to option ${index}`);
        const type = header.readUInt32BE(12);
        replies.push({ type, data });
        if (type === OptionReply.Ack || type >= 0x8000_0000) break;
      }
      const final = (replies[replies.length - 1] as { type: number }).type;
      if (option.code === Option.Abort) {
        await this.reader.untilClosed('the close after ABORT');
        return 'closed';
      }
      if (option.code === Option.StructuredReply && final === OptionReply.Ack) structured = true;
      if (option.code === Option.Go && final === OptionReply.Ack) {
        const info = replies.find((reply) => reply.type === OptionReply.Info && reply.data.readUInt16BE(0) === InfoType.Export);
        if (!info) {
          this.problem('server-option-reply', 'GO acknowledged without NBD_INFO_EXPORT');
          return 'closed';
        }
        const nameLength = option.data.readUInt32BE(0);
        return { name: option.data.toString('utf8', 4, 4 + nameLength), sizeBytes: info.data.readBigUInt64BE(2), transmissionFlags: info.data.readUInt16BE(10), structured, from: option.end };
      }
    }
    return null;
  }

  private async transmit(attachment: Attachment): Promise<void> {
    const spec = this.exportNamed(attachment.name);
    if (!spec) return this.problem('server-attached-unknown', `attached to '${attachment.name.slice(0, 40)}', which is not exported`);
    this.attached = spec.name;
    if (attachment.sizeBytes !== BigInt(spec.sizeBytes)) this.problem('server-export-size', `${spec.name}: advertised ${attachment.sizeBytes}, is ${spec.sizeBytes}`);
    if (((attachment.transmissionFlags & TransmissionFlag.ReadOnly) !== 0) !== spec.readOnly) this.problem('server-export-flags', `${spec.name}: READ_ONLY flag wrong`);

    const plan = planRequests(this.script.bytes.subarray(attachment.from), MAX_PAYLOAD_BYTES);
    const handles = new Set(plan.requests.map((request) => request.handle));
    const answered = new Map<PlannedRequest, number>();
    try {
      // Replies find their request by handle; with a handle used twice they cannot, so such a
      // session only has to end (close, or go quiet) and its writes become unknown.
      if (handles.size !== plan.requests.length) return await this.drainUnverifiable();
      // DISC promises the replies to what came before it (doc/proto.md), unless more bytes follow
      // it: then the server may find them unread when it closes, and the reset may eat replies.
      if (plan.stop === 'bad-magic' || (plan.stop === 'disc' && plan.afterStop)) this.mayClose = true;
      const closedEarly = await this.readReplies(plan.requests, attachment, spec, answered);
      if (closedEarly) {
        this.closedEarly('server-closed-with-requests-outstanding', `${plan.requests.length - answered.size} of ${plan.requests.length} requests unanswered at close (stop: ${plan.stop ?? 'none'})`);
      } else if (plan.stop !== null) {
        await this.reader.untilClosed(`the close after ${plan.stop}`);
      }
    } finally {
      this.recordEffects(plan.requests, answered, spec, handles.size === plan.requests.length);
    }
  }

  /** Reads replies until each request has one; true if the server closed first. */
  private async readReplies(requests: readonly PlannedRequest[], attachment: Attachment, spec: ServedExport, answered: Map<PlannedRequest, number>): Promise<boolean> {
    const byHandle = new Map(requests.map((request) => [request.handle, request]));
    const partial = new Map<PlannedRequest, { error: number }>();
    while (answered.size < requests.length) {
      const what = `replies (${answered.size} of ${requests.length} in)`;
      const magicBytes = await this.reader.peek(4, what);
      if (magicBytes === null) return true;
      const magic = magicBytes.readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const header = await this.reader.take(SIMPLE_REPLY_HEADER_BYTES, what);
        if (header === null) return true;
        const request = byHandle.get(header.readBigUInt64BE(8));
        if (!request || answered.has(request)) {
          this.problem('server-reply-handle', `simple reply for handle ${header.readBigUInt64BE(8)}, which is not outstanding`);
          return true;
        }
        const error = header.readUInt32BE(4);
        if (attachment.structured && (request.type === Command.Read || request.type === Command.BlockStatus)) this.problem('server-reply-form', `simple reply to command ${request.type} after structured replies were agreed`);
        if (error === 0 && request.type === Command.Read) {
          if ((await this.reader.take(request.length, what)) === null) return true;
        }
        this.settle(request, error, spec, answered);
        continue;
      }
      if (magic !== STRUCTURED_REPLY_MAGIC) {
        this.problem('server-reply-magic', `reply magic 0x${magic.toString(16)}`);
        return true;
      }
      const header = await this.reader.take(STRUCTURED_REPLY_HEADER_BYTES, what);
      if (header === null) return true;
      if (!attachment.structured) this.problem('server-reply-form', 'structured reply without NBD_OPT_STRUCTURED_REPLY');
      const flags = header.readUInt16BE(4);
      const type = header.readUInt16BE(6);
      const request = byHandle.get(header.readBigUInt64BE(8));
      const payload = await this.reader.take(header.readUInt32BE(16), what);
      if (payload === null) return true;
      if (!request || answered.has(request)) {
        this.problem('server-reply-handle', `structured reply for handle ${header.readBigUInt64BE(8)}, which is not outstanding`);
        return true;
      }
      const state = partial.get(request) ?? { error: 0 };
      partial.set(request, state);
      const broken = this.checkChunk(request, type, payload);
      if (broken) this.problem('server-reply-chunk', `command ${request.type}, chunk type ${type}: ${broken}`);
      if (type >= 0x8000 && payload.length >= 4) state.error = payload.readUInt32BE(0);
      if ((flags & REPLY_FLAG_DONE) !== 0) this.settle(request, state.error, spec, answered);
    }
    return false;
  }

  private checkChunk(request: PlannedRequest, type: number, payload: Buffer): string | null {
    if (type === ReplyType.OffsetData) {
      if (request.type !== Command.Read || payload.length < 8) return 'OFFSET_DATA outside a read';
      const offset = payload.readBigUInt64BE(0);
      if (offset < request.offset || offset + BigInt(payload.length - 8) > request.offset + BigInt(request.length)) return `data at ${offset}+${payload.length - 8} outside the request`;
      return null;
    }
    if (type === ReplyType.BlockStatus) {
      if (request.type !== Command.BlockStatus || payload.length < 12 || (payload.length - 4) % 8 !== 0) return `block status payload of ${payload.length} bytes`;
      for (let at = 4; at < payload.length; at += 8) if (payload.readUInt32BE(at) === 0) return 'an extent of length 0';
      return null;
    }
    if (type === ReplyType.Error || type === ReplyType.ErrorOffset) {
      if (payload.length < 6 || payload.readUInt16BE(4) > payload.length - 6) return 'error chunk message length runs past the chunk';
      return null;
    }
    return type === ReplyType.None ? null : 'unknown chunk type';
  }

  /** One reply per request, and an OK only for what the spec allows. */
  private settle(request: PlannedRequest, error: number, spec: ServedExport, answered: Map<PlannedRequest, number>): void {
    answered.set(request, error);
    if (error !== 0) {
      if (!KNOWN_ERRNOS.has(error)) this.problem('server-errno', `command ${request.type} answered with errno ${error}, not one doc/proto.md lists`);
      return;
    }
    const end = request.offset + BigInt(request.length);
    if (!KNOWN_COMMANDS.has(request.type)) this.problem('server-accepted-invalid', `unknown command ${request.type} answered OK`);
    else if (request.type !== Command.Flush && end > BigInt(spec.sizeBytes)) this.problem('server-accepted-invalid', `command ${request.type} at ${request.offset}+${request.length} past the end (${spec.sizeBytes}) answered OK`);
    else if (spec.readOnly && MUTATING_COMMANDS.has(request.type)) this.problem('server-accepted-invalid', `command ${request.type} on read-only ${spec.name} answered OK`);
    else if ((request.type === Command.Read || request.type === Command.Write) && request.length > MAX_PAYLOAD_BYTES) this.problem('server-accepted-invalid', `${request.length}-byte command ${request.type} over the advertised maximum answered OK`);
  }

  private async drainUnverifiable(): Promise<void> {
    // Quiet for a while after the last byte counts as done: this loop only bounds the wait.
    for (;;) {
      const before = this.reader.received;
      const closed = await Promise.race([this.reader.untilClosed('the end of an unverifiable session').then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 300))]);
      if (closed || this.reader.received === before) return;
    }
  }

  private recordEffects(requests: readonly PlannedRequest[], answered: ReadonlyMap<PlannedRequest, number>, spec: ServedExport, verifiable: boolean): void {
    for (const request of requests) {
      if (!MUTATING_COMMANDS.has(request.type) || request.offset >= BigInt(spec.sizeBytes)) continue;
      const offset = Number(request.offset);
      const length = Math.min(request.length, spec.sizeBytes - offset);
      const error = verifiable ? answered.get(request) : undefined;
      const effects = this.effects.get(spec.name) ?? [];
      this.effects.set(spec.name, effects);
      if (error === undefined) effects.push({ kind: 'unknown', offset, length });
      else if (error !== 0) continue;
      else if (request.type === Command.Write && request.payload) effects.push({ kind: 'write', offset, data: request.payload.subarray(0, length) });
      else if (request.type === Command.WriteZeroes) effects.push({ kind: 'zero', offset, length });
      else effects.push({ kind: 'unknown', offset, length });
    }
  }
}

/**
 * Runs one hostile session. `sent` resolves once every chunk was handed to the socket; a stalled
 * session then waits for `resume` before it reads anything.
 */
export async function runHostile(
  target: { host: string; port: number; exports: readonly ServedExport[] },
  script: HostileScript,
  deadlineMs: number,
  hooks: { sent: () => void; resume: Promise<void> },
): Promise<HostileReport> {
  const socket = net.connect(target.port, target.host);
  socket.on('error', () => undefined); // EPIPE/ECONNRESET after the server hangs up are expected
  const reader = new ByteReader(socket);
  if (script.stall) socket.pause();
  const session = new HostileSession(reader, script, target.exports);
  let timer: NodeJS.Timeout | null = null;
  try {
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    for (const [index, chunk] of script.chunks.entries()) {
      if (socket.destroyed) break;
      socket.write(chunk);
      const gap = script.gapsMs?.[index];
      if (gap) await new Promise((resolve) => setTimeout(resolve, gap));
      else if (script.yieldBetweenChunks) await yieldTurn();
    }
    hooks.sent();
    await hooks.resume;
    socket.resume();
    timer = setTimeout(() => reader.expire(`no answer within ${deadlineMs} ms`), deadlineMs);
    await session.verify();
  } catch (error) {
    if (error instanceof HangError) session.problems.push({ kind: 'server-hang', detail: error.message });
    else session.problems.push({ kind: 'hostile-client-error', detail: (error as Error).stack ?? String(error) });
  } finally {
    hooks.sent();
    if (timer) clearTimeout(timer);
    socket.destroy();
  }
  return { problems: session.problems, attached: session.attached, effects: session.effects };
}
