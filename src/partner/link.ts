// The partner link: one TCP (or TLS) connection between two nodes, carrying the paging
// synchronization messages both ways once the handshake (handshake.ts, introduce.ts) has
// authenticated both ends.
//
// Many requests are in flight at once and answered in any order, so an unrelated slow page never
// holds up another. Outgoing frames queue and leave in one socket write per event-loop turn; a
// forwarded read behind many others waits for the peer's next frame (FORWARD_HOLD_MIN_IN_FLIGHT).
//
// A plain TCP link reads into one buffer of its own (core/socket-reader.ts), not a fresh 64 KiB
// ArrayBuffer per read: a forwarded 1 MiB read made V8 run a mark-compact collection per request
// or so. The data of write page, forwarded io and io data then lands in a segment of the link's
// pool (MessageFramer), and every such segment has one release point: a request's after its
// handler settled (a handler that failed may have left work behind that still reads it: that one
// is left to the collector), a response's once its requester copied it out (release()), and a
// pooled reply's once its socket write completed. A request still waiting in its handler when the
// link closes keeps its segment until the handler is done: nothing else writes it. A frame
// that does not decode, a response nobody asked for, or an epoch no claim could have made closes
// the link with a log line: after such a frame the stream cannot be trusted, and the peer reconnects.
import { ClusterError, every, readingInto, SegmentPool, type Clock } from '../core/index.js';
import type { Logger } from '../observe/index.js';
import { carriesPayload, encodeBatch, encodeBatchParts, expectsResponse, isResponseType, type MessageFramer, messageTypeName, PartnerFramingError } from './codec.js';
import { IoOp, MAX_REQUESTS_IN_FLIGHT, MessageType, Status } from './constants.js';
import { introduceAsConnector, introduceAsListener, type Identity, type LinkSecurity } from './introduce.js';
import type { Message } from './messages.js';
import type { LinkListening, LinkSocket, PartnerTransport } from './transport.js';

/** Forwarded I/O in flight per link and direction: half the room, the rest is kept for replication. */
export const MAX_FORWARDED_IN_FLIGHT = MAX_REQUESTS_IN_FLIGHT / 2;

/**
 * Handshakes a listener works on at once. A stranger opening more pushes out the oldest (a partner
 * finishes its handshake in a round trip or two, so a flood cannot keep it out for long).
 */
export const MAX_PENDING_HANDSHAKES = 32;

/** One read's worth: a forwarded 1 MiB payload is read straight into its segment, this takes the rest. */
export const LINK_READ_BUFFER_BYTES = 256 * 1024;

/** Free payload segments a link keeps: a few dozen 1 MiB forwarded I/Os in flight. */
export const LINK_SEGMENT_RETAIN_BYTES = 64 * 1024 * 1024;

/**
 * A forwarded read queued while more than this many forwarded requests of the link await their
 * answers waits for the next frame from the peer (or HOLD_MS) and leaves with whatever else came
 * meanwhile. Without it a client's reads, arriving one or two per socket read, left one or two per
 * socket write: a loopback write costs the forwarding node ~9 µs of its own CPU. With it, 4 KiB
 * reads at QD32 through the partner made a fifth of the link writes and the forwarding node spent
 * 12.7 instead of 15.8 µs per read (docs/benchmarks.md, session 18). A client with few requests in
 * flight never waits; forwarded writes are not held (no gain measured: their answers wait for
 * the mirror's round trip anyway).
 */
export const FORWARD_HOLD_MIN_IN_FLIGHT = 8;
/** The longest a held forwarded request waits (answers that take longer: a cold page, a flush). */
const HOLD_MS = 1;

/** Failed handshakes are logged at most this often per listener (the rest are counted into the next line). */
const REFUSAL_LOG_INTERVAL_MS = 1000;

/** Answers the peer's requests; returns the response (same request id), or null for one-way messages. */
export type RequestHandler = (message: Message, link: PartnerLink) => Promise<Message | null> | Message | null;

interface Waiter {
  resolve: (message: Message) => void;
  reject: (error: Error) => void;
  /** Where the data of an io data reply of exactly its length is read to (MessageFramer.place). */
  into: Buffer | null;
  /** A forwarded request: counted in forwardedPending until it is answered or the link closes. */
  forwarded: boolean;
}

export class LinkClosedError extends ClusterError {
  override name = 'LinkClosedError';
}

type Outgoing = Message extends infer M ? (M extends Message ? Omit<M, 'requestId'> : never) : never;

export interface LinkStatistics {
  framesSent: number;
  socketWrites: number;
  framesReceived: number;
}

export class PartnerLink {
  private readonly pending = new Map<number, Waiter>();
  private readonly waitingForRoom: Array<() => void> = [];
  private readonly waitingForwarded: Array<() => void> = [];
  private outgoing: Array<Message | Outgoing> = [];
  /** The request id each outgoing message goes with: the caller's object is sent as it is, not copied to carry it. */
  private outgoingIds: number[] = [];
  private flushScheduled = false;
  /** Forwarded requests are held for the peer's next frame (FORWARD_HOLD_MIN_IN_FLIGHT); cancels the HOLD_MS timer. */
  private holdTimer: (() => void) | null = null;
  private nextRequestId = 1;
  private closedReason: string | null = null;
  private lastHeardMs: number;
  private stopHeartbeats: (() => void) | null = null;
  private epochNow: (() => number) | null = null;
  private heartbeatSequence = 0;
  private forwardedPending = 0;
  readonly statistics: LinkStatistics = { framesSent: 0, socketWrites: 0, framesReceived: 0 };
  /** Data segments of this link's received frames, and of pooled replies it sends (responder). */
  readonly payloads = new SegmentPool(LINK_SEGMENT_RETAIN_BYTES);
  private readonly readBuffer: Buffer | null;
  private socket: LinkSocket;
  onClose: (reason: string) => void = () => undefined;

  constructor(
    socket: LinkSocket,
    private readonly framer: MessageFramer,
    readonly peer: Identity,
    private readonly handler: RequestHandler,
    private readonly logger: Logger,
    /** An epoch no claim could have made (heartbeat, takeover) closes the link instead of being adopted. */
    private readonly plausibleEpoch: (epoch: number) => boolean,
    private readonly clock: Clock,
    /** How logs and errors name the peer: its name in the config where the node knows it. */
    private readonly peerName = `node ${peer.nodeId}`,
  ) {
    this.lastHeardMs = clock.now();
    const onBytes = (chunk: Buffer): void => {
      this.lastHeardMs = clock.now();
      this.onData(chunk);
    };
    const readBuffer = Buffer.allocUnsafeSlow(LINK_READ_BUFFER_BYTES);
    const reading = readingInto(socket, () => (this.isOpen ? this.framer.readTarget : null) ?? readBuffer, onBytes);
    if (reading) {
      this.readBuffer = readBuffer;
      this.framer.segments = this.payloads;
      this.framer.place = (requestId, bytes) => {
        const into = this.pending.get(requestId)?.into ?? null;
        return into !== null && into.length === bytes ? into : null;
      };
      this.socket = reading as LinkSocket;
    } else {
      // TLS or a simulated socket: every chunk is a buffer of its own, decoded data may alias it.
      this.readBuffer = null;
      this.socket = socket;
      socket.on('data', onBytes);
    }
    this.socket.on('close', () => this.closed('connection closed'));
    this.socket.on('error', (error) => this.closed(error.message));
  }

  /** Whether this link reads into its own buffer and pools the data of the frames it receives. */
  get pooled(): boolean {
    return this.readBuffer !== null;
  }

  /**
   * Gives back the data segment of a response (io data) once its requester copied it out; nothing
   * may read `message.data` afterwards. Anything else, or data of no segment, is left as it is.
   */
  release(message: Message): void {
    if (message.type === MessageType.IoData && message.lent) return message.lent.release();
    const data = dataOf(message);
    if (data !== null) this.payloads.give(data);
  }

  get isOpen(): boolean {
    return this.closedReason === null;
  }

  /**
   * Liveness: a heartbeat every `intervalMs`, and the link is closed when nothing at all arrived
   * for `deadAfterMs`. A partner that hangs without closing its socket (stopped, swapping, cut off
   * without a reset) then stops holding up every write that waits for its command complete: the
   * link fails, and the memory manager goes write-through.
   */
  watch(liveness: { intervalMs: number; deadAfterMs: number; epoch: () => number }): void {
    if (this.stopHeartbeats || !this.isOpen) return;
    this.epochNow = liveness.epoch;
    this.lastHeardMs = this.clock.now();
    this.stopHeartbeats = every(this.clock, liveness.intervalMs, () => {
      const silentMs = Math.round(this.clock.now() - this.lastHeardMs);
      if (silentMs > liveness.deadAfterMs) {
        this.logger.error(`partner link to ${this.peerName}: nothing heard for ${silentMs} ms (limit ${liveness.deadAfterMs}); closing it`);
        this.socket.destroy();
        this.closed(`no heartbeat for ${silentMs} ms`);
        return;
      }
      this.beat();
    });
  }

  /**
   * A heartbeat now, with this node's epoch as it is now. Sent at once after a claim: the partner
   * adopts the epoch before anything sent after it on this link (a mirrored write of the new epoch),
   * so it is not fenced by that epoch if this node dies a moment later.
   */
  beat(): void {
    if (!this.isOpen || !this.epochNow) return;
    this.heartbeatSequence = (this.heartbeatSequence % 0xffff_ffff) + 1;
    this.queue({ type: MessageType.Heartbeat, epoch: this.epochNow() }, this.heartbeatSequence);
  }

  /**
   * Sends a request and resolves with its response; waits for room past the in-flight limit.
   * Forwarded I/O may use only part of the room: the owner's handler of a forwarded write sends a
   * write page back over the same pair of links, and if forwarded requests could fill both
   * directions, each side's handlers would wait for room the other side never frees.
   *
   * A forwarded read may give `into`, its own buffer of the read's length: on a link that pools its
   * data, an io data reply of that length is read straight into it (the reply's `data` is `into`,
   * which release() leaves alone). If the request fails, `into` may hold part of a reply.
   */
  request(message: Outgoing, into: Buffer | null = null): Promise<Message> {
    // Not an async function: a request with room (nearly every one) costs one promise, not three.
    const forwarded = message.type === MessageType.ForwardedIo;
    if (this.isOpen && !this.hasRoom(forwarded)) return this.requestWhenRoom(message, into, forwarded);
    return this.send1(message, forwarded ? into : null, forwarded);
  }

  private hasRoom(forwarded: boolean): boolean {
    return this.pending.size < MAX_REQUESTS_IN_FLIGHT && (!forwarded || this.forwardedPending < MAX_FORWARDED_IN_FLIGHT);
  }

  private async requestWhenRoom(message: Outgoing, into: Buffer | null, forwarded: boolean): Promise<Message> {
    while (this.isOpen && !this.hasRoom(forwarded)) {
      await new Promise<void>((resolve) => (forwarded ? this.waitingForwarded : this.waitingForRoom).push(resolve));
    }
    return this.send1(message, forwarded ? into : null, forwarded);
  }

  /** One of each kind re-checks; forwarded requests wait apart, so they never hold up the others. */
  private wakeWaiting(): void {
    this.waitingForRoom.shift()?.();
    this.waitingForwarded.shift()?.();
  }

  private send1(message: Outgoing, into: Buffer | null, forwarded: boolean): Promise<Message> {
    if (!this.isOpen) return Promise.reject(new LinkClosedError(`link to ${this.peerName} is closed: ${this.closedReason}`));
    const requestId = this.nextRequestId;
    this.nextRequestId = (this.nextRequestId % 0xffff_ffff) + 1;
    // Not the requester's own buffer if it is one of this link's segments: release() would give it back.
    const place = into !== null && into.length > 0 && this.readBuffer !== null && !this.payloads.owns(into) ? into : null;
    if (forwarded) this.forwardedPending++;
    return new Promise<Message>((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject, into: place, forwarded });
      this.queue(message, requestId);
    });
  }

  /** Sends a message that has no response (heartbeat, page clean). */
  send(message: Outgoing): void {
    if (!this.isOpen) return;
    this.queue(message, 0);
  }

  close(reason: string): void {
    if (!this.isOpen) return;
    this.flush();
    // Frames the kernel has not taken yet are dropped, not sent later: their requests fail now, and
    // a failed request's data goes back to its owner, which may use it again (a forwarded WRITE's
    // pooled payload, retried on the next owner and then reused) while a slow peer still reads.
    // Likewise for a reply being read into its requester's buffer: a half-closed socket goes on
    // reading, and its next read would land there after the request failed and the buffer moved on.
    if ((this.socket.writableLength ?? 0) > 0 || this.framer.placing) this.socket.destroy();
    else this.socket.end();
    this.closed(reason);
  }

  private queue(message: Message | Outgoing, requestId: number): void {
    this.outgoing.push(message);
    this.outgoingIds.push(requestId);
    if (this.flushScheduled) return;
    // forwardedPending counts this read already. Anything else (a reply, a mirrored page, a write) ends a hold.
    if (message.type === MessageType.ForwardedIo && message.op === IoOp.Read && requestId !== 0 && this.forwardedPending > FORWARD_HOLD_MIN_IN_FLIGHT) {
      this.holdTimer ??= this.clock.setTimer(HOLD_MS, () => this.scheduleFlush());
      return;
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    this.holdTimer?.();
    this.holdTimer = null;
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.clock.defer(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    this.holdTimer?.();
    this.holdTimer = null;
    if (this.outgoing.length === 0) return;
    // Their own requestId fields are not read (Outgoing has none): requestIds gives each frame's.
    const batch = this.outgoing as Message[];
    const requestIds = this.outgoingIds;
    this.outgoing = [];
    this.outgoingIds = [];
    if (this.socket.destroyed) {
      // Never sent: lent pages go back now (their holders wait for them), pooled segments to the collector.
      for (const message of batch) if (message.type === MessageType.IoData && message.lent) message.lent.release();
      return;
    }
    // Page data goes by reference (writev): a batch of whole pages is not copied into one buffer.
    // The memory manager holds a page's lock until every partner answered, so the bytes cannot
    // change while they wait in the socket.
    const parts = encodeBatchParts(batch, requestIds);
    const sent = this.pooledReplies(batch);
    const last = parts.length - 1;
    if (last > 0) this.socket.cork();
    for (let index = 0; index < last; index++) this.socket.write(parts[index] as Buffer);
    // The last write's callback comes once the whole corked batch is written: the segments are free then.
    if (sent === null) this.socket.write(parts[last] as Buffer);
    else this.socket.write(parts[last] as Buffer, (error) => this.settle(sent, !error, batch));
    if (last > 0) this.socket.uncork();
    this.statistics.framesSent += batch.length;
    this.statistics.socketWrites++;
  }

  /**
   * The segments of this link's pool that a batch sends by reference (pooled io data replies); an
   * empty list when it sends only lent pages; null when it holds neither (no write callback needed).
   */
  private pooledReplies(batch: readonly Message[]): Buffer[] | null {
    let sent: Buffer[] | null = null;
    for (const message of batch) {
      if (message.type !== MessageType.IoData) continue;
      if (message.lent) sent ??= [];
      else if (this.payloads.owns(message.data)) (sent ??= []).push(message.data);
    }
    return sent;
  }

  /**
   * A failed socket write may still be read by the kernel as far as we know: its segments are left
   * to the collector. Lent pages go back either way: a socket that failed sends nothing more, and
   * their volume's writers wait for them.
   */
  private settle(segments: readonly Buffer[], written: boolean, batch: readonly Message[]): void {
    for (const segment of segments) {
      if (written) this.payloads.give(segment);
      else this.payloads.forget(segment);
    }
    for (const message of batch) if (message.type === MessageType.IoData && message.lent) message.lent.release();
  }

  /** Messages that arrived behind the handshake, from the authenticated peer. */
  deliver(messages: Message[]): void {
    for (const message of messages) {
      if (!this.isOpen) return;
      this.dispatch(message);
    }
  }

  private onData(chunk: Buffer): void {
    // Closed by this side (half-closed socket): what still arrives answers requests already failed
    // with LinkClosedError, or asks for work nobody will answer. Neither is an error.
    if (!this.isOpen) return;
    let messages: Message[];
    try {
      messages = this.framer.push(chunk);
    } catch (error) {
      if (!(error instanceof PartnerFramingError)) throw error;
      return this.fail(error.message);
    }
    for (const message of messages) {
      if (!this.isOpen) return;
      this.dispatch(message);
    }
    // The peer's frame arrived: held forwarded requests leave after this turn, with the ones it starts.
    if (this.holdTimer !== null) this.scheduleFlush();
  }

  /** The peer broke the protocol: nothing more it sent counts. */
  private fail(reason: string): void {
    this.logger.error(`partner link to ${this.peerName}: ${reason}; closing it`);
    this.socket.destroy();
    this.closed(reason);
  }

  private dispatch(message: Message): void {
    this.statistics.framesReceived++;
    if (carriesEpoch(message) && !this.plausibleEpoch(message.epoch)) {
      return this.fail(`${messageTypeName(message.type)} states epoch ${message.epoch}, further ahead than any claim could take it`);
    }
    if (isResponseType(message.type)) this.onResponse(message);
    else this.onRequest(message);
  }

  private onResponse(message: Message): void {
    const waiter = this.pending.get(message.requestId);
    if (!waiter) return this.fail(`${messageTypeName(message.type)} answers unknown request ${message.requestId}`);
    this.pending.delete(message.requestId);
    if (waiter.forwarded) this.forwardedPending--;
    this.wakeWaiting();
    waiter.resolve(message);
  }

  private onRequest(message: Message): void {
    // A forwarded read changes nothing here, so it may start within this step instead of after
    // the chunk's other frames: a read of resident pages is answered at once (Responder.residentRead),
    // without two microtask hops and their closures per read on the owner.
    if (message.type === MessageType.ForwardedIo && message.op === IoOp.Read) {
      let answer: Promise<Message | null> | Message | null;
      try {
        answer = this.handler(message, this);
      } catch (error) {
        return this.handlerFailed(message, error as Error);
      }
      if (answer instanceof Promise) answer.then((response) => this.answered(message, response), (error: Error) => this.handlerFailed(message, error));
      else this.answered(message, answer);
      return;
    }
    Promise.resolve()
      .then(() => this.handler(message, this))
      .then(
        (response) => this.answered(message, response),
        (error: Error) => this.handlerFailed(message, error),
      );
  }

  private answered(request: Message, response: Message | null): void {
    const data = dataOf(request);
    if (data !== null) this.settle1(data, response === null || succeeded(response));
    if (response === null) return;
    if (!expectsResponse(request.type) || !this.isOpen) return this.release(response);
    this.queue(response, request.requestId);
  }

  private handlerFailed(request: Message, error: Error): void {
    const data = dataOf(request);
    if (data !== null) this.payloads.forget(data);
    this.logger.error(`partner request ${messageTypeName(request.type)} failed: ${error.message}; closing the link`);
    this.close(`handler failed: ${error.message}`);
  }

  private settle1(segment: Buffer, done: boolean): void {
    if (done) this.payloads.give(segment);
    else this.payloads.forget(segment);
  }

  private closed(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.stopHeartbeats?.();
    this.stopHeartbeats = null;
    const error = new LinkClosedError(`link to ${this.peerName} closed: ${reason}`);
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
    this.forwardedPending = 0;
    for (const wake of this.waitingForRoom.splice(0)) wake();
    for (const wake of this.waitingForwarded.splice(0)) wake();
    this.onClose(reason);
  }
}


/** The received data of a message that carries a payload (decoded data is always one buffer). */
function dataOf(message: Message): Buffer | null {
  return carriesPayload(message) && Buffer.isBuffer(message.data) ? message.data : null;
}

/** A handler that answered this is done with the request's data; after any other answer, work it started may still read it. */
function succeeded(response: Message): boolean {
  return response.type === MessageType.IoData || (response.type === MessageType.CommandComplete && response.status === Status.Ok);
}

/** Messages that state the sender's epoch, which a receiver may adopt: only plausible ones are. */
function carriesEpoch(message: Message): message is Message & { epoch: number } {
  switch (message.type) {
    case MessageType.Heartbeat:
    case MessageType.VolumeHandover:
    case MessageType.HolderAnnouncement:
    case MessageType.MirrorReclaim:
    case MessageType.OwnerNotice:
    case MessageType.CatalogChange:
    case MessageType.VolumeRemoval:
      return true;
    default:
      return false;
  }
}

/** How the socket of a new link is written during the handshake (before the link owns it). */
function writer(socket: LinkSocket): (message: Message) => void {
  return (message) => {
    if (!socket.destroyed) socket.write(encodeBatch([message]));
  };
}

/** An IPv4 peer on a dual-stack socket reads as ::ffff:a.b.c.d; the config names it a.b.c.d. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** What a node brings to each of its links: who it is, how it judges peers, what it runs over. */
export interface LinkContext {
  readonly local: Identity;
  readonly security: LinkSecurity;
  readonly transport: PartnerTransport;
  readonly handler: RequestHandler;
  readonly logger: Logger;
  readonly clock: Clock;
  /** A node's name in the config, for log lines (`node 1` where absent or unknown). */
  readonly nodeName?: (nodeId: number) => string | undefined;
}

/** "node b" where the config names the id, else "node 1". */
function nodeLabel(context: LinkContext, nodeId: number): string {
  return `node ${context.nodeName?.(nodeId) ?? nodeId}`;
}

/**
 * Connects to a partner, proves this node and checks the partner's proof, and resolves once the
 * partner accepted. `localAddress` binds the connection to this node's own partner host, which is
 * what the partner checks this node's id against.
 */
export async function connectPartner(
  address: { host: string; port: number; nodeId: number; localAddress?: string },
  context: LinkContext,
  /**
   * Called with the link before anything that arrived with the hello reply is handled, so the
   * caller's bookkeeping for a new partner happens before the partner's first message does.
   */
  onReady: (link: PartnerLink) => void = () => undefined,
): Promise<PartnerLink> {
  const { local, security, handler, logger, clock } = context;
  const socket = await context.transport.dial(address);
  try {
    const introduced = await introduceAsConnector(socket, local, security, address.nodeId, writer(socket), clock);
    const name = nodeLabel(context, introduced.peer.nodeId);
    logger.info(`partner link to ${name} up (${address.host}:${address.port}${security.tls ? ', TLS' : ''})`);
    const link = new PartnerLink(socket, introduced.framer, introduced.peer, handler, logger, security.plausibleEpoch, clock, name);
    onReady(link);
    link.deliver(introduced.rest);
    return link;
  } catch (error) {
    socket.destroy();
    throw error;
  }
}

/**
 * Accepts partner links. A connection from an address no node of the config has is closed before a
 * byte is read; the others must finish the handshake, and only then does anything they send count.
 */
export class PartnerListener {
  private listening: LinkListening | null = null;
  private readonly links = new Map<number, PartnerLink>();
  private readonly pending = new Set<LinkSocket>();
  private lastRefusalLogMs = Number.NEGATIVE_INFINITY;
  private refusalsUnlogged = 0;
  onLink: (link: PartnerLink) => void = () => undefined;

  constructor(private readonly context: LinkContext) {}

  async listen(address: { host: string; port: number }): Promise<void> {
    this.listening = await this.context.transport.listen(address, (socket) => void this.accept(socket));
  }

  get port(): number {
    return this.listening?.port ?? 0;
  }

  async close(): Promise<void> {
    for (const link of this.links.values()) link.close('listener closing');
    for (const socket of this.pending) socket.destroy();
    const listening = this.listening;
    this.listening = null;
    await listening?.close();
  }

  private async accept(socket: LinkSocket): Promise<void> {
    const { local, security, handler, logger, clock } = this.context;
    socket.on('error', () => undefined);
    const address = plainAddress(socket.remoteAddress ?? '');
    const from = `${address}:${socket.remotePort}`;
    if (!security.knownAddress(address)) {
      this.refused(from, 'no node of the config is at that address');
      socket.destroy();
      return;
    }
    if (this.pending.size >= MAX_PENDING_HANDSHAKES) {
      const oldest = this.pending.values().next().value as LinkSocket;
      this.pending.delete(oldest);
      oldest.destroy();
    }
    this.pending.add(socket);
    const verdict = await introduceAsListener(socket, local, security, new Set(this.links.keys()), writer(socket), clock);
    this.pending.delete(socket);
    if (!verdict.accepted) {
      if (verdict.authenticated) logger.error(`partner port: refusing ${from}: ${verdict.reason}`);
      else this.refused(from, verdict.reason);
      // A refusal, if one was written, leaves before the close.
      socket.end();
      socket.destroySoon();
      return;
    }
    const { peer, framer, rest } = verdict.introduced;
    if (!this.listening) {
      socket.destroy();
      return;
    }
    const name = nodeLabel(this.context, peer.nodeId);
    const link = new PartnerLink(socket, framer, peer, handler, logger, security.plausibleEpoch, clock, name);
    this.links.set(peer.nodeId, link);
    link.onClose = (reason) => {
      this.links.delete(peer.nodeId);
      logger.warn(`partner link from ${name} down: ${reason}`);
    };
    logger.info(`partner link from ${name} up (${from}${security.tls ? ', TLS' : ''})`);
    this.onLink(link);
    link.deliver(rest);
  }

  /** A stranger, a wrong key or a broken handshake: one warning a second at most, however many try. */
  private refused(from: string, reason: string): void {
    const now = this.context.clock.now();
    if (now - this.lastRefusalLogMs < REFUSAL_LOG_INTERVAL_MS) {
      this.refusalsUnlogged++;
      return;
    }
    const more = this.refusalsUnlogged > 0 ? ` (and ${this.refusalsUnlogged} more refused since the last such line)` : '';
    this.refusalsUnlogged = 0;
    this.lastRefusalLogMs = now;
    this.context.logger.warn(`partner port: dropping ${from}: ${reason}${more}`);
  }
}
