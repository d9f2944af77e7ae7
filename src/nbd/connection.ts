// One client connection: handshake (with STARTTLS), then the transmission phase's request pipeline.
//
// Requests are started as soon as they are framed and answered in completion order (NBD replies
// carry the request's handle, so order is free). Replies are batched: the socket is corked on the
// first reply of an event-loop turn and uncorked in setImmediate, so completions that land in the
// same poll phase leave in one writev.
//
// What a client can make the node hold is bounded from the moment a request is read until its
// reply has been written to the socket (the write callback), not until it was computed: a client
// that stops reading its replies stops being read itself, and one whose replies do not move for
// backlogTimeoutMs is dropped. Every request is admitted by the framer before it starts (requests
// and bytes per connection, bytes per node, requests per turn); while one waits for admission the
// socket is paused, so the kernel's buffers push back on the client.
//
// Per request, nothing large is allocated: a plain socket reads into one buffer per connection
// (socket-reader.ts), WRITE payloads are assembled in pooled buffers that the request owns until
// its write settled, and read replies are computed into pooled buffers given back once written.
import type { Socket } from 'node:net';
import type { RequestBudget, BudgetWaiter } from './budget.js';
import {
  AllocationFlag,
  BASE_ALLOCATION_CONTEXT_ID,
  Command,
  CommandFlag,
  HandshakeFlag,
  MAX_OPTIONS_PER_HANDSHAKE,
  MAX_OPTION_BYTES,
  MAX_PAYLOAD_BYTES,
  NbdErrno,
  REPLY_FLAG_DONE,
  ReplyType,
  SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './constants.js';
import { isProgrammerError, nbdErrnoOf, RequestError } from './errors.js';
import { Negotiator, type ExportCatalog, type Session } from './negotiation.js';
import { OptionFramer } from './option-framer.js';
import { FramingError, RequestFramer, type RequestSink } from './request-framer.js';
import { REPLY_HEADER_ROOM, type BufferPool, type ReplyPool } from './reply-pool.js';
import { HANDSHAKE_READ_BUFFER_BYTES, READ_BUFFER_BYTES, readingInto } from './socket-reader.js';
import type { NbdTls } from './tls.js';
import { encodeServerGreeting, writeOffset64, writeSimpleReplyHeader, writeStructuredReplyHeader, type Request } from './wire.js';
import type { Logger } from '../observe/index.js';
import { PINNED_READ_MIN_BYTES, REQUESTS_PER_TURN, type PinnedRange } from '../volume/index.js';

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
/** Commands whose length is work or memory: reads and writes hold it, cache, trim and zero work on it. */
const COSTED_COMMANDS = new Set<number>([Command.Read, Command.Write, Command.Cache, Command.Trim, Command.WriteZeroes]);
/** Block status extents are 32-bit; answer at most this much of a range per request. */
const MAX_STATUS_BYTES = 0xffff_f000;
const STRUCTURED_ERROR_FIXED_BYTES = 6;

/** What one connection may hold and how long it may dawdle (config `limits`). */
export interface ConnectionLimits {
  requestsInFlight: number;
  bytesInFlight: number;
  backlogTimeoutMs: number;
  handshakeTimeoutMs: number;
  /** 0: never closed for being idle. */
  idleTimeoutMs: number;
}

export interface ConnectionContext {
  catalog: ExportCatalog;
  /** Read reply buffers, shared by the node's connections. */
  replies: ReplyPool;
  /** WRITE payload buffers, shared by the node's connections. */
  payloads: BufferPool;
  logger: Logger;
  limits: ConnectionLimits;
  /** Shared by every connection of the node. */
  budget: RequestBudget;
  tls: NbdTls;
  now(): number;
  /** Told of every reply (metrics); null when nobody counts. */
  observer: RequestObserver | null;
}

/** Per-request accounting at the reply: one call, so the data path carries no metrics of its own. */
export interface RequestObserver {
  requestDone(exportName: string, command: number, bytes: number, durationMs: number, failed: boolean): void;
}

export interface ConnectionEvents {
  onClose(connection: Connection): void;
}

/** Marks a reply written from the header ring in the unwritten list. */
const HEADER_SLOT = Symbol('header slot');

/** A reply sent from lent memory: the loan ends, and a ring header is freed, once it is written. */
interface PinnedReply {
  readonly range: PinnedRange;
  readonly headerSlot: boolean;
}
/** Simple reply headers a connection keeps: more than the replies it may have unwritten at the default bound. */
export const HEADER_RING_SLOTS = 512;

export class Connection implements RequestSink, BudgetWaiter {
  private socket: Socket;
  private options = new OptionFramer();
  private negotiator: Negotiator | null = null;
  private requests: RequestFramer | null = null;
  private session: Session | null = null;
  private optionCount = 0;
  private tlsActive = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  /** The cost of each reply handed to the socket and not yet written, in write order. */
  private readonly unwritten: number[] = [];
  /** Beside `unwritten`: the pooled buffer each reply was written from (given back once written), HEADER_SLOT for a header of the ring, or null. */
  private readonly unwrittenBuffers: Array<Buffer | typeof HEADER_SLOT | PinnedReply | null> = [];
  /**
   * 16-byte simple reply headers used again instead of a Buffer per reply. Slots are taken and
   * freed in write order (write callbacks come in that order), so the next slot is free whenever
   * fewer than HEADER_RING_SLOTS are out; past that (more replies unwritten than the ring has), a
   * reply allocates as before.
   */
  private readonly headerRing: Buffer[] = [];
  private headerNext = 0;
  private headersOut = 0;
  private startedThisTurn = 0;
  private turnReset = false;
  private resumeScheduled = false;
  private paused = false;
  private boundLogged = false;
  private corked = false;
  private disconnecting = false;
  private closed = false;
  /** Reads land in one buffer of this connection's, overwritten by the next read: what is kept is copied. */
  private readsReused = false;
  /** That buffer: small until the client chose an export (a handshake sends little), then READ_BUFFER_BYTES. */
  private readBuffer: Buffer | null = null;
  private readonly openedAtMs: number;
  private lastActivityMs: number;
  /** When the replies last moved (or started to wait): a stalled backlog is measured from here. */
  private lastWriteProgressMs: number;
  readonly peer: string;
  /** The client's address alone (per-address connection limits); 'unix' for unix sockets. */
  readonly address: string;

  constructor(
    socket: Socket,
    private readonly context: ConnectionContext,
    readonly id: number,
    private readonly events: ConnectionEvents,
  ) {
    this.socket = socket;
    this.address = socket.remoteAddress ?? 'unix';
    this.peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    this.openedAtMs = this.lastActivityMs = this.lastWriteProgressMs = context.now();
  }

  /** Requests read and not yet answered on the wire (metrics). */
  get requestsInFlight(): number {
    return this.inFlight;
  }

  /** The export this connection chose, once in transmission (log lines at its close). */
  get exportName(): string | undefined {
    return this.session?.entry.name;
  }

  private get logger(): Logger {
    return this.context.logger;
  }

  /** `socket` was accepted paused (the server's pauseOnConnect): nothing was read from it yet. */
  start(): void {
    // A TLS socket cannot be laid over a handle that reads into a user buffer (the TLS handshake
    // never completes), so a node that offers TLS reads its sockets the usual way.
    const reading = this.context.tls.mode === 'off' ? readingInto(this.socket, this.readBufferOf, this.onData) : null;
    if (reading) {
      this.socket = reading;
      this.readsReused = true;
    }
    this.socket.setNoDelay(true);
    this.listen(this.socket);
    this.socket.on('close', () => this.onSocketClosed());
    this.socket.write(encodeServerGreeting());
    if (!reading) this.socket.resume();
  }

  private readonly readBufferOf = (): Buffer => (this.readBuffer ??= Buffer.allocUnsafeSlow(HANDSHAKE_READ_BUFFER_BYTES));

  private listen(socket: Socket): void {
    if (!this.readsReused) socket.on('data', this.onData);
    socket.on('error', (error) => this.logger.debug('connection error', { conn: this.id, error: error.message }));
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

  /** The server's periodic check: handshake deadline, replies nobody reads, idleness. */
  sweep(nowMs: number): void {
    if (this.closed) return;
    const { limits } = this.context;
    if (this.session === null && nowMs - this.openedAtMs > limits.handshakeTimeoutMs) {
      return this.abort(`no export chosen within ${limits.handshakeTimeoutMs} ms`);
    }
    if (this.unwritten.length > 0 && nowMs - this.lastWriteProgressMs > limits.backlogTimeoutMs) {
      return this.kill(`${this.unwritten.length} replies not read by the client for ${limits.backlogTimeoutMs} ms`);
    }
    if (limits.idleTimeoutMs > 0 && this.session !== null && this.inFlight === 0 && nowMs - this.lastActivityMs > limits.idleTimeoutMs) {
      this.logger.info(`closing connection idle for ${limits.idleTimeoutMs} ms`, { conn: this.id, peer: this.peer });
      this.beginDisconnect();
    }
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.disconnecting || this.closed) return;
    this.lastActivityMs = this.context.now();
    try {
      if (this.requests) {
        this.requests.push(chunk);
        if (this.requests.holding) this.pause();
      } else this.onHandshakeData(chunk);
    } catch (error) {
      if (!(error instanceof FramingError)) throw error;
      this.abort(error.message);
    }
  };

  private onHandshakeData(chunk: Buffer): void {
    // The option framer keeps what it was given until a whole option is in: a reused read buffer is copied (cold path).
    this.options.push(this.readsReused ? Buffer.from(chunk) : chunk);
    const clientFlags = this.options.flags;
    if (clientFlags === null) return;
    // The padding after EXPORT_NAME is dropped only when the client asked for that too.
    this.negotiator ??= new Negotiator(this.context.catalog, (clientFlags & HandshakeFlag.NoZeroes) !== 0, { mode: this.context.tls.mode, active: false, identity: null });
    for (let request = this.options.next(); request !== null; request = this.options.next()) {
      if (++this.optionCount > MAX_OPTIONS_PER_HANDSHAKE) return this.abort('too many options');
      const step = this.negotiator.handle(request.option, request.data);
      for (const reply of step.replies) this.socket.write(reply);
      if (step.verdict === 'close') return this.abort(step.reason ?? `option ${request.option} ended the handshake`, step.clientInitiated);
      if (step.verdict === 'transmit') return this.enterTransmission(this.negotiator.session as Session);
      if (step.verdict === 'starttls') return this.startTls(clientFlags);
    }
  }

  /**
   * The client was told to start TLS: from here the socket carries a TLS handshake, then options
   * again, to a negotiator that starts afresh (the spec: nothing agreed before TLS counts after it).
   */
  private startTls(clientFlags: number): void {
    if (this.options.pendingBytes > 0) return this.abort('data behind NBD_OPT_STARTTLS before the TLS handshake');
    const plain = this.socket;
    plain.off('data', this.onData);
    this.context.tls.upgrade(
      plain,
      (secure) => {
        if (this.closed) return secure.destroy();
        const identity = this.context.tls.identityOf(secure);
        this.socket = secure;
        this.listen(secure);
        this.tlsActive = true;
        this.options = new OptionFramer(MAX_OPTION_BYTES, clientFlags);
        this.negotiator = new Negotiator(this.context.catalog, (clientFlags & HandshakeFlag.NoZeroes) !== 0, { mode: this.context.tls.mode, active: true, identity });
        this.logger.debug('TLS established', { conn: this.id, peer: this.peer, identity: identity ?? '(none)' });
      },
      (error) => this.abort(`TLS handshake failed: ${error.message}`),
    );
  }

  private enterTransmission(session: Session): void {
    this.session = session;
    this.requests = new RequestFramer(this, MAX_PAYLOAD_BYTES, this.context.payloads);
    // From the next read on: requests carry payloads, and fewer, larger reads cost less.
    if (this.readsReused) this.readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    this.logger.info('client attached', {
      conn: this.id,
      peer: this.peer,
      export: session.entry.name,
      structured: session.structuredReplies,
      ...(this.tlsActive ? { tls: true } : {}),
    });
    const rest = this.options.takeRemainder();
    if (rest.length > 0) this.requests.push(rest);
    if (this.requests.holding) this.pause();
  }

  // ---- Admission (RequestSink, BudgetWaiter) ----

  /** A request's share of the byte bounds: its length where that is memory or work, capped at one connection's bound. */
  private costOf(request: Request): number {
    return COSTED_COMMANDS.has(request.type) && !request.oversized ? Math.min(request.length, this.context.limits.bytesInFlight) : 0;
  }

  admits(request: Request): boolean {
    if (this.disconnecting || this.closed) return false;
    if (request.type === Command.Disc) return true;
    if (this.startedThisTurn >= REQUESTS_PER_TURN) {
      this.scheduleResume();
      return false;
    }
    const { limits } = this.context;
    const cost = this.costOf(request);
    // One request may always start on an idle connection: a single request is bounded by the
    // payload limit and its cost is capped, so the bounds never deadlock a client.
    if (this.inFlight >= limits.requestsInFlight || (this.inFlightBytes > 0 && this.inFlightBytes + cost > limits.bytesInFlight)) {
      this.boundBit(`${this.inFlight} requests, ${this.inFlightBytes} bytes in flight (limits ${limits.requestsInFlight}, ${limits.bytesInFlight})`);
      return false;
    }
    if (!this.context.budget.tryTake(cost, this)) {
      this.boundBit(`the node's ${this.context.budget.limitBytes} bytes in flight are taken`);
      return false;
    }
    this.inFlight++;
    this.inFlightBytes += cost;
    this.countTurn();
    return true;
  }

  /** The node budget may have room again. */
  retry(): void {
    this.scheduleResume();
  }

  private countTurn(): void {
    this.startedThisTurn++;
    if (this.turnReset) return;
    this.turnReset = true;
    setImmediate(() => {
      this.turnReset = false;
      this.startedThisTurn = 0;
    });
  }

  private scheduleResume(): void {
    if (this.resumeScheduled || this.closed) return;
    this.resumeScheduled = true;
    setImmediate(() => {
      this.resumeScheduled = false;
      this.resumeFraming();
    });
  }

  private resumeFraming(): void {
    if (!this.requests || this.closed || this.disconnecting) return;
    try {
      this.requests.resume();
    } catch (error) {
      if (!(error instanceof FramingError)) throw error;
      return this.abort(error.message);
    }
    if (this.requests.holding) this.pause();
    else if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  /** Backpressure is routine for a busy client: said once per connection, not per pause. */
  private boundBit(what: string): void {
    if (this.boundLogged) return;
    this.boundLogged = true;
    this.logger.info(`not reading more requests until replies are written: ${what}`, { conn: this.id, peer: this.peer });
  }

  // ---- Requests ----

  onRequest(request: Request): void {
    if (request.type === Command.Disc) return this.beginDisconnect();
    if (this.closed) {
      this.releasePayload(request, true);
      return this.release(this.costOf(request));
    }
    const startedMs = this.context.observer ? this.context.now() : 0;
    const refusal = this.validate(request);
    if (refusal !== null) {
      this.releasePayload(request, true);
      return this.complete(request, refusal, null, startedMs);
    }
    if (request.type === Command.Read && request.length >= PINNED_READ_MIN_BYTES) {
      const pinned = (this.session as Session).entry.volume.pinRead?.(request.offset, request.length) ?? null;
      if (pinned !== null) return this.completePinned(request, pinned, startedMs);
    }
    if (request.type === Command.Read) return this.read(request, startedMs);
    this.execute(request).then(
      (result) => this.complete(request, null, result, startedMs),
      (error: unknown) => this.complete(request, error, null, startedMs),
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

  /**
   * Reads straight into a pooled reply buffer, behind room for whichever reply header this session
   * uses. Not through execute(): the commonest request, it pays for no async frames of its own.
   */
  private read(request: Request, startedMs: number): void {
    const session = this.session as Session;
    const headerBytes = this.readReplyHeaderBytes();
    const pooled = this.context.replies.take(request.length);
    const reply = pooled.subarray(REPLY_HEADER_ROOM - headerBytes, REPLY_HEADER_ROOM + request.length);
    let reading: Promise<void>;
    try {
      reading = session.entry.volume.read(request.offset, reply.subarray(headerBytes));
    } catch (error) {
      reading = Promise.reject(error as Error);
    }
    reading.then(
      () => {
        if (session.structuredReplies) {
          writeStructuredReplyHeader(reply, 0, REPLY_FLAG_DONE, ReplyType.OffsetData, request, 8 + request.length);
          writeOffset64(reply, STRUCTURED_REPLY_HEADER_BYTES, request.offset);
        } else {
          writeSimpleReplyHeader(reply, 0, NbdErrno.Ok, request);
        }
        this.complete(request, null, reply, startedMs, pooled);
      },
      (error: unknown) => this.complete(request, error, null, startedMs, pooled),
    );
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

  /**
   * A WRITE's payload buffers go back to the pool once its write settled. One that failed may
   * still be referenced (a forwarded write queued on a partner link that closed): it is not reused.
   */
  private releasePayload(request: Request, reusable: boolean): void {
    const buffers = request.payloadBuffers;
    if (buffers === null) return;
    request.payloadBuffers = null;
    request.payload = null;
    for (const buffer of buffers) {
      if (reusable) this.context.payloads.give(buffer);
      else this.context.payloads.forget();
    }
  }

  /** `pooled`: the reply buffer a read took `reply` from (given back once written, or now on an error). */
  private complete(request: Request, error: unknown, reply: Buffer | null, startedMs: number, pooled: Buffer | null = null): void {
    this.context.observer?.requestDone((this.session as Session).entry.name, request.type, request.length, this.context.now() - startedMs, error !== null);
    const cost = this.costOf(request);
    this.releasePayload(request, error === null);
    if (error !== null) {
      if (pooled) this.context.replies.give(pooled);
      const { errno, expected } = nbdErrnoOf(error);
      const message = error instanceof Error ? error.message : String(error);
      const fields = { conn: this.id, command: request.type, offset: request.offset, length: request.length, errno };
      if (expected) this.logger.debug(`request refused: ${message}`, fields);
      else this.logger.error(`request failed: ${message}`, isProgrammerError(error) && error instanceof Error ? { ...fields, stack: error.stack } : fields);
      this.send(this.errorReply(request, errno, message), cost, null);
    } else {
      this.send(reply ?? this.okReply(request), cost, pooled);
    }
  }

  /** A read answered from lent memory: the header, then the volume's own bytes, no copy. */
  private completePinned(request: Request, range: PinnedRange, startedMs: number): void {
    this.context.observer?.requestDone((this.session as Session).entry.name, request.type, request.length, this.context.now() - startedMs, false);
    const cost = this.costOf(request);
    let header: Buffer;
    if ((this.session as Session).structuredReplies) {
      header = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
      writeStructuredReplyHeader(header, 0, REPLY_FLAG_DONE, ReplyType.OffsetData, request, 8 + request.length);
      writeOffset64(header, STRUCTURED_REPLY_HEADER_BYTES, request.offset);
    } else {
      header = this.takeHeader();
      writeSimpleReplyHeader(header, 0, NbdErrno.Ok, request);
    }
    const headerSlot = this.isRingHeader(header);
    if (this.closed || this.socket.destroyed) {
      range.release();
      if (headerSlot) this.headersOut--;
      return this.release(cost);
    }
    this.cork();
    if (this.unwritten.length === 0) this.lastWriteProgressMs = this.context.now();
    this.unwritten.push(cost);
    this.unwrittenBuffers.push({ range, headerSlot });
    // One write callback per reply, on its last piece: callbacks come in write order.
    this.socket.write(header);
    const { pieces } = range;
    for (let index = 0; index < pieces.length - 1; index++) this.socket.write(pieces[index] as Buffer);
    this.socket.write(pieces[pieces.length - 1] as Buffer, this.onReplyWritten);
  }

  private okReply(request: Request): Buffer {
    const reply = this.takeHeader();
    writeSimpleReplyHeader(reply, 0, NbdErrno.Ok, request);
    return reply;
  }

  /** A simple reply header: a slot of the ring while one is free, else a new buffer. */
  private takeHeader(): Buffer {
    if (this.headersOut >= HEADER_RING_SLOTS) return Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
    if (this.headerRing.length === 0) {
      const slab = Buffer.allocUnsafeSlow(HEADER_RING_SLOTS * SIMPLE_REPLY_HEADER_BYTES);
      for (let slot = 0; slot < HEADER_RING_SLOTS; slot++) this.headerRing.push(slab.subarray(slot * SIMPLE_REPLY_HEADER_BYTES, (slot + 1) * SIMPLE_REPLY_HEADER_BYTES));
    }
    const header = this.headerRing[this.headerNext] as Buffer;
    this.headerNext = (this.headerNext + 1) % HEADER_RING_SLOTS;
    this.headersOut++;
    return header;
  }

  private isRingHeader(buffer: Buffer): boolean {
    return this.headerRing.length > 0 && buffer.buffer === (this.headerRing[0] as Buffer).buffer;
  }

  /** Reads and block status must answer errors in structured form once it is negotiated. */
  private errorReply(request: Request, errno: number, message: string): Buffer {
    const structured = (this.session as Session).structuredReplies;
    if (!structured || (request.type !== Command.Read && request.type !== Command.BlockStatus)) {
      const reply = this.takeHeader();
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

  // ---- Replies and their release ----

  /** Hands a reply to the socket; the request holds its share of the bounds (and its pooled buffer) until it is written. */
  private send(buffer: Buffer, cost: number, pooled: Buffer | null): void {
    const slot = pooled === null && this.isRingHeader(buffer);
    if (this.closed || this.socket.destroyed) {
      if (pooled) this.context.replies.give(pooled);
      if (slot) this.headersOut--;
      return this.release(cost);
    }
    this.cork();
    if (this.unwritten.length === 0) this.lastWriteProgressMs = this.context.now();
    this.unwritten.push(cost);
    this.unwrittenBuffers.push(slot ? HEADER_SLOT : pooled);
    this.socket.write(buffer, this.onReplyWritten);
  }

  /** Replies handed over in one turn leave in one writev. */
  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    setImmediate(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }

  /** The end of a reply's hold on what it was written from. */
  private settleWritten(held: Buffer | typeof HEADER_SLOT | PinnedReply | null | undefined, error: Error | null | undefined): void {
    if (held === HEADER_SLOT) this.headersOut--;
    else if (held && 'range' in held) {
      // Lent memory goes back in any case: a socket that failed or closed sends nothing more from it.
      if (held.headerSlot) this.headersOut--;
      held.range.release();
    } else if (held) {
      // A write that failed may still be referenced by the dying socket: that buffer is not reused.
      if (error) this.context.replies.forget();
      else this.context.replies.give(held);
    }
  }

  /** Write callbacks come in write order, so the oldest unwritten reply is the one written. */
  private readonly onReplyWritten = (error?: Error | null): void => {
    if (this.unwritten.length === 0) return;
    this.lastWriteProgressMs = this.lastActivityMs = this.context.now();
    this.settleWritten(this.unwrittenBuffers.shift(), error);
    this.release(this.unwritten.shift() as number);
  };

  private release(cost: number): void {
    this.inFlight--;
    this.inFlightBytes -= cost;
    this.context.budget.give(cost);
    if (this.disconnecting && this.inFlight === 0) return this.finishDisconnect();
    if (this.requests?.holding) this.resumeFraming();
  }

  private beginDisconnect(): void {
    if (this.disconnecting) return;
    this.disconnecting = true;
    this.socket.pause();
    this.context.budget.leave(this);
    if (this.inFlight === 0) this.finishDisconnect();
  }

  /**
   * Every reply is written: close. destroySoon, not end: a client that sent more after DISC (its
   * bytes sit unread in the paused socket) would otherwise keep a half-closed connection, and its
   * slot, for ever (found by the fuzzer, test/fuzz/regressions.test.ts).
   */
  private finishDisconnect(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroySoon();
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
    this.context.budget.leave(this);
    // Replies that will never be written give their share back now; late write callbacks find none.
    // Their buffers may still sit in the closed socket's queue: they are left to the collector.
    for (const held of this.unwrittenBuffers.splice(0)) {
      if (held && held !== HEADER_SLOT) {
        if ('range' in held) held.range.release();
        else this.context.replies.forget();
      }
    }
    for (const cost of this.unwritten.splice(0)) this.release(cost);
    // A WRITE whose payload was still arriving was admitted and will never run: its share and buffer go back.
    const partial = this.requests?.dispose() ?? null;
    if (partial) this.release(this.costOf(partial));
    this.events.onClose(this);
  }
}
