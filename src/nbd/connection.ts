// One client connection: handshake, then the transmission phase's request pipeline.
//
// Requests are started as soon as they are framed and answered in completion order (NBD replies
// carry the request's handle, so order is free). Replies are batched: the socket is corked on the
// first reply of an event-loop turn and uncorked in setImmediate, so completions that land in the
// same poll phase leave in one writev. Input is paused while too much is in flight.
import type { Socket } from 'node:net';
import {
  AllocationFlag,
  BASE_ALLOCATION_CONTEXT_ID,
  Command,
  CommandFlag,
  HANDSHAKE_TIMEOUT_MS,
  HandshakeFlag,
  MAX_IN_FLIGHT_BYTES,
  MAX_IN_FLIGHT_REQUESTS,
  MAX_OPTIONS_PER_HANDSHAKE,
  MAX_PAYLOAD_BYTES,
  NbdErrno,
  REPLY_FLAG_DONE,
  ReplyType,
  SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './constants.js';
import { nbdErrnoOf, RequestError } from './errors.js';
import { Negotiator, type ExportCatalog, type Session } from './negotiation.js';
import { OptionFramer } from './option-framer.js';
import { FramingError, RequestFramer } from './request-framer.js';
import { encodeServerGreeting, writeOffset64, writeSimpleReplyHeader, writeStructuredReplyHeader, type Request } from './wire.js';
import type { Logger } from '../observe/index.js';

/** Flags each command accepts besides FUA, which the spec says must be accepted (and may be ignored) everywhere. */
const ALLOWED_FLAGS: Record<number, number> = {
  [Command.Read]: CommandFlag.Df,
  [Command.Write]: 0,
  [Command.Disc]: 0,
  [Command.Flush]: 0,
  [Command.Trim]: 0,
  [Command.Cache]: 0,
  [Command.WriteZeroes]: CommandFlag.NoHole | CommandFlag.FastZero,
  [Command.BlockStatus]: CommandFlag.ReqOne,
};
const WRITING_COMMANDS = new Set<number>([Command.Write, Command.Trim, Command.WriteZeroes]);
/** Block status extents are 32-bit; answer at most this much of a range per request. */
const MAX_STATUS_BYTES = 0xffff_f000;
const STRUCTURED_ERROR_FIXED_BYTES = 6;

export interface ConnectionEvents {
  onClose(connection: Connection): void;
}

export class Connection {
  private readonly options = new OptionFramer();
  private negotiator: Negotiator | null = null;
  private requests: RequestFramer | null = null;
  private session: Session | null = null;
  private optionCount = 0;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private inFlight = 0;
  private inFlightBytes = 0;
  private paused = false;
  private corked = false;
  private disconnecting = false;
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly catalog: ExportCatalog,
    private readonly logger: Logger,
    readonly id: number,
    private readonly events: ConnectionEvents,
  ) {}

  get peer(): string {
    return this.socket.remoteAddress ? `${this.socket.remoteAddress}:${this.socket.remotePort}` : 'unix';
  }

  start(): void {
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (error) => this.logger.debug('connection error', { conn: this.id, error: error.message }));
    this.socket.on('close', () => this.onSocketClosed());
    this.handshakeTimer = setTimeout(() => this.abort('handshake timed out'), HANDSHAKE_TIMEOUT_MS);
    this.socket.write(encodeServerGreeting());
  }

  /** Closes now, sending nothing more: replies still being worked on are never sent (a fenced node). */
  kill(reason: string): void {
    if (!this.closed) this.logger.warn(`closing connection: ${reason}`, { conn: this.id, peer: this.peer });
    this.closed = true;
    this.socket.destroy();
  }

  /** Stops taking requests, lets in-flight ones finish, then closes (server shutdown). */
  shutdown(): void {
    if (this.session === null) return this.abort('server shutting down');
    this.beginDisconnect();
  }

  private onData(chunk: Buffer): void {
    if (this.disconnecting || this.closed) return;
    try {
      if (this.requests) this.requests.push(chunk);
      else this.onHandshakeData(chunk);
    } catch (error) {
      if (!(error instanceof FramingError)) throw error;
      this.abort(error.message);
    }
  }

  private onHandshakeData(chunk: Buffer): void {
    this.options.push(chunk);
    const clientFlags = this.options.flags;
    if (clientFlags === null) return;
    // The padding after EXPORT_NAME is dropped only when the client asked for that too.
    this.negotiator ??= new Negotiator(this.catalog, (clientFlags & HandshakeFlag.NoZeroes) !== 0);
    for (let request = this.options.next(); request !== null; request = this.options.next()) {
      if (++this.optionCount > MAX_OPTIONS_PER_HANDSHAKE) return this.abort('too many options');
      const step = this.negotiator.handle(request.option, request.data);
      for (const reply of step.replies) this.socket.write(reply);
      if (step.verdict === 'close') return this.abort(step.reason ?? `option ${request.option} ended the handshake`, step.clientInitiated);
      if (step.verdict === 'transmit') return this.enterTransmission(this.negotiator.session as Session);
    }
  }

  private enterTransmission(session: Session): void {
    this.session = session;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.requests = new RequestFramer({ onRequest: (request) => this.onRequest(request) }, MAX_PAYLOAD_BYTES);
    this.logger.info('client attached', {
      conn: this.id,
      peer: this.peer,
      export: session.entry.name,
      structured: session.structuredReplies,
    });
    const rest = this.options.takeRemainder();
    if (rest.length > 0) this.requests.push(rest);
  }

  private onRequest(request: Request): void {
    if (this.disconnecting) return;
    if (request.type === Command.Disc) return this.beginDisconnect();
    const refusal = this.validate(request);
    this.track(request, +1);
    if (refusal !== null) return this.complete(request, refusal, null);
    this.execute(request).then(
      (result) => this.complete(request, null, result),
      (error: unknown) => this.complete(request, error, null),
    );
  }

  /** All checks on client input happen here, once; below this point only valid requests travel. */
  private validate(request: Request): RequestError | null {
    const session = this.session as Session;
    const sizeBytes = session.entry.volume.sizeBytes;
    const allowed = ALLOWED_FLAGS[request.type];
    if (allowed === undefined) return new RequestError(NbdErrno.Einval, `unknown command ${request.type}`);
    if ((request.flags & ~(allowed | CommandFlag.Fua)) !== 0) {
      return new RequestError(NbdErrno.Einval, `flags 0x${request.flags.toString(16)} not valid for command ${request.type}`);
    }
    if (request.oversized || (request.type === Command.Read && request.length > MAX_PAYLOAD_BYTES)) {
      return new RequestError(NbdErrno.Einval, `${request.length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
    }
    if (session.entry.readOnly && WRITING_COMMANDS.has(request.type)) {
      return new RequestError(NbdErrno.Eperm, `export ${session.entry.name} is read-only`);
    }
    if (request.type === Command.BlockStatus && !session.baseAllocation) {
      return new RequestError(NbdErrno.Einval, 'block status without a negotiated base:allocation context');
    }
    if (request.type === Command.Flush) return null;
    if (request.length === 0) return new RequestError(NbdErrno.Einval, 'zero-length request');
    if (request.offset + request.length > sizeBytes) {
      const errno = request.type === Command.Write || request.type === Command.WriteZeroes ? NbdErrno.Enospc : NbdErrno.Einval;
      return new RequestError(errno, `range ${request.offset}+${request.length} is past the end (${sizeBytes})`);
    }
    return null;
  }

  private async execute(request: Request): Promise<Buffer | null> {
    const volume = (this.session as Session).entry.volume;
    const fua = (request.flags & CommandFlag.Fua) !== 0;
    switch (request.type) {
      case Command.Read:
        return this.read(request);
      case Command.Write:
        await volume.write(request.offset, request.payload as Buffer[], fua);
        return null;
      case Command.Flush:
        await volume.flush();
        return null;
      case Command.Trim:
        await volume.trim(request.offset, request.length, fua);
        return null;
      case Command.WriteZeroes:
        await volume.zero(request.offset, request.length, {
          fua,
          noHole: (request.flags & CommandFlag.NoHole) !== 0,
          fastZero: (request.flags & CommandFlag.FastZero) !== 0,
        });
        return null;
      case Command.Cache:
        await volume.cache(request.offset, request.length);
        return null;
      default:
        return this.blockStatus(request);
    }
  }

  /** Reads straight into the reply buffer, behind room for whichever reply header this session uses. */
  private async read(request: Request): Promise<Buffer> {
    const headerBytes = this.readReplyHeaderBytes();
    const reply = Buffer.allocUnsafe(headerBytes + request.length);
    await (this.session as Session).entry.volume.read(request.offset, reply.subarray(headerBytes));
    if ((this.session as Session).structuredReplies) {
      writeStructuredReplyHeader(reply, 0, REPLY_FLAG_DONE, ReplyType.OffsetData, request, 8 + request.length);
      writeOffset64(reply, STRUCTURED_REPLY_HEADER_BYTES, request.offset);
    } else {
      writeSimpleReplyHeader(reply, 0, NbdErrno.Ok, request);
    }
    return reply;
  }

  private readReplyHeaderBytes(): number {
    return (this.session as Session).structuredReplies ? STRUCTURED_REPLY_HEADER_BYTES + 8 : SIMPLE_REPLY_HEADER_BYTES;
  }

  private async blockStatus(request: Request): Promise<Buffer> {
    const volume = (this.session as Session).entry.volume;
    const wanted = Math.min(request.length, MAX_STATUS_BYTES);
    let extents = await volume.blockStatus(request.offset, wanted);
    if ((request.flags & CommandFlag.ReqOne) !== 0) extents = extents.slice(0, 1);
    const payloadBytes = 4 + extents.length * 8;
    const reply = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
    writeStructuredReplyHeader(reply, 0, REPLY_FLAG_DONE, ReplyType.BlockStatus, request, payloadBytes);
    reply.writeUInt32BE(BASE_ALLOCATION_CONTEXT_ID, STRUCTURED_REPLY_HEADER_BYTES);
    let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
    for (const extent of extents) {
      reply.writeUInt32BE(Math.min(extent.lengthBytes, wanted), at);
      reply.writeUInt32BE(extent.flags & (AllocationFlag.Hole | AllocationFlag.Zero), at + 4);
      at += 8;
    }
    return reply;
  }

  private complete(request: Request, error: unknown, reply: Buffer | null): void {
    this.track(request, -1);
    if (error !== null) {
      const { errno, expected } = nbdErrnoOf(error);
      const message = error instanceof Error ? error.message : String(error);
      const fields = { conn: this.id, command: request.type, offset: request.offset, length: request.length, errno };
      if (expected) this.logger.debug(`request refused: ${message}`, fields);
      else this.logger.error(`request failed: ${message}`, fields);
      this.send(this.errorReply(request, errno, message));
    } else {
      this.send(reply ?? this.okReply(request));
    }
    if (this.disconnecting && this.inFlight === 0) this.finishDisconnect();
  }

  private okReply(request: Request): Buffer {
    const reply = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
    writeSimpleReplyHeader(reply, 0, NbdErrno.Ok, request);
    return reply;
  }

  /** Reads and block status must answer errors in structured form once it is negotiated. */
  private errorReply(request: Request, errno: number, message: string): Buffer {
    const structured = (this.session as Session).structuredReplies;
    if (!structured || (request.type !== Command.Read && request.type !== Command.BlockStatus)) {
      const reply = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
      writeSimpleReplyHeader(reply, 0, errno, request);
      return reply;
    }
    const text = Buffer.from(message.slice(0, 200), 'utf8');
    const payloadBytes = STRUCTURED_ERROR_FIXED_BYTES + text.length;
    const reply = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
    writeStructuredReplyHeader(reply, 0, REPLY_FLAG_DONE, ReplyType.Error, request, payloadBytes);
    reply.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_BYTES);
    reply.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
    text.copy(reply, STRUCTURED_REPLY_HEADER_BYTES + STRUCTURED_ERROR_FIXED_BYTES);
    return reply;
  }

  private track(request: Request, direction: 1 | -1): void {
    this.inFlight += direction;
    const bytes = request.type === Command.Read || request.type === Command.Write ? request.length : 0;
    this.inFlightBytes += direction * bytes;
    const busy = this.inFlight >= MAX_IN_FLIGHT_REQUESTS || this.inFlightBytes >= MAX_IN_FLIGHT_BYTES;
    if (busy && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!busy && this.paused && !this.disconnecting) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private send(buffer: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(buffer);
  }

  private beginDisconnect(): void {
    if (this.disconnecting) return;
    this.disconnecting = true;
    this.socket.pause();
    if (this.inFlight === 0) this.finishDisconnect();
  }

  private finishDisconnect(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
  }

  /** Closes at once; a close the client asked for (ABORT) is routine, anything else is worth a warning. */
  private abort(reason: string, clientInitiated = false): void {
    if (this.closed) return;
    this.logger.log(clientInitiated ? 'debug' : 'warn', `closing connection: ${reason}`, { conn: this.id, peer: this.peer });
    this.closed = true;
    this.socket.destroySoon();
  }

  private onSocketClosed(): void {
    this.closed = true;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.events.onClose(this);
  }
}
