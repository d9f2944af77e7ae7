// The partner link: one TCP connection between two nodes, carrying the paging synchronization
// messages both ways after a hello exchange.
//
//   connector ── hello ──────────────────> listener   checks version, cluster id, node id, epoch
//             <── hello reply | refusal ──            a refusal closes the link; both sides log why
//   then, both ways: requests with ids, responses echo the id, one-way messages (heartbeat, page clean)
//
// Many requests are in flight at once and answered in any order, so an unrelated slow page never
// holds up another. Outgoing frames queue and leave in one socket write per event-loop turn. A frame
// that does not decode, or a response nobody asked for, closes the link with a log line: after a
// framing error the stream cannot be trusted, and the peer reconnects.
import net from 'node:net';
import type { Logger } from '../observe/index.js';
import { encodeBatch, encodeBatchParts, expectsResponse, isResponseType, MessageFramer, messageTypeName, PartnerFramingError } from './codec.js';
import { MAX_REQUESTS_IN_FLIGHT, MessageType, PROTOCOL_VERSION, RefusalReason } from './constants.js';
import type { Hello, HelloRefusal, Message } from './messages.js';

/** Forwarded I/O in flight per link and direction: half the room, the rest is kept for replication. */
export const MAX_FORWARDED_IN_FLIGHT = MAX_REQUESTS_IN_FLIGHT / 2;

/** A peer that has not sent its hello within this time is dropped. */
export const HELLO_TIMEOUT_MS = 5_000;

export interface Identity {
  clusterId: string;
  nodeId: number;
  epoch: number;
}

/** Answers the peer's requests; returns the response (same request id), or null for one-way messages. */
export type RequestHandler = (message: Message, link: PartnerLink) => Promise<Message | null> | Message | null;

export class LinkClosedError extends Error {
  override name = 'LinkClosedError';
}

export class HelloRefusedError extends Error {
  override name = 'HelloRefusedError';
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

type Outgoing = Message extends infer M ? (M extends Message ? Omit<M, 'requestId'> : never) : never;

export interface LinkStatistics {
  framesSent: number;
  socketWrites: number;
  framesReceived: number;
}

export class PartnerLink {
  private readonly pending = new Map<number, { resolve: (message: Message) => void; reject: (error: Error) => void }>();
  private readonly waitingForRoom: Array<() => void> = [];
  private readonly waitingForwarded: Array<() => void> = [];
  private outgoing: Message[] = [];
  private flushScheduled = false;
  private nextRequestId = 1;
  private closedReason: string | null = null;
  private lastHeardMs = Date.now();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private epochNow: (() => number) | null = null;
  private heartbeatSequence = 0;
  private forwardedPending = 0;
  readonly statistics: LinkStatistics = { framesSent: 0, socketWrites: 0, framesReceived: 0 };
  onClose: (reason: string) => void = () => undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly framer: MessageFramer,
    readonly peer: Identity,
    private readonly handler: RequestHandler,
    private readonly logger: Logger,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.lastHeardMs = Date.now();
      this.onData(chunk);
    });
    socket.on('close', () => this.closed('connection closed'));
    socket.on('error', (error) => this.closed(error.message));
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
    if (this.heartbeatTimer || !this.isOpen) return;
    this.epochNow = liveness.epoch;
    this.lastHeardMs = Date.now();
    this.heartbeatTimer = setInterval(() => {
      const silentMs = Date.now() - this.lastHeardMs;
      if (silentMs > liveness.deadAfterMs) {
        this.logger.error(`partner link to node ${this.peer.nodeId}: nothing heard for ${silentMs} ms (limit ${liveness.deadAfterMs}); closing it`);
        this.socket.destroy();
        this.closed(`no heartbeat for ${silentMs} ms`);
        return;
      }
      this.beat();
    }, liveness.intervalMs);
    this.heartbeatTimer.unref();
  }

  /**
   * A heartbeat now, with this node's epoch as it is now. Sent at once after a claim: the partner
   * adopts the epoch before anything sent after it on this link (a mirrored write of the new epoch),
   * so it is not fenced by that epoch if this node dies a moment later.
   */
  beat(): void {
    if (!this.isOpen || !this.epochNow) return;
    this.heartbeatSequence = (this.heartbeatSequence % 0xffff_ffff) + 1;
    this.queue({ type: MessageType.Heartbeat, requestId: this.heartbeatSequence, epoch: this.epochNow() });
  }

  /**
   * Sends a request and resolves with its response; waits for room past the in-flight limit.
   * Forwarded I/O may use only part of the room: the owner's handler of a forwarded write sends a
   * write page back over the same pair of links, and if forwarded requests could fill both
   * directions, each side's handlers would wait for room the other side never frees.
   */
  async request(message: Outgoing): Promise<Message> {
    const forwarded = message.type === MessageType.ForwardedIo;
    while (this.isOpen && (this.pending.size >= MAX_REQUESTS_IN_FLIGHT || (forwarded && this.forwardedPending >= MAX_FORWARDED_IN_FLIGHT))) {
      await new Promise<void>((resolve) => (forwarded ? this.waitingForwarded : this.waitingForRoom).push(resolve));
    }
    if (!forwarded) return this.send1(message);
    this.forwardedPending++;
    try {
      return await this.send1(message);
    } finally {
      this.forwardedPending--;
      this.wakeWaiting();
    }
  }

  /** One of each kind re-checks; forwarded requests wait apart, so they never hold up the others. */
  private wakeWaiting(): void {
    this.waitingForRoom.shift()?.();
    this.waitingForwarded.shift()?.();
  }

  private send1(message: Outgoing): Promise<Message> {
    if (!this.isOpen) throw new LinkClosedError(`link to node ${this.peer.nodeId} is closed: ${this.closedReason}`);
    const requestId = this.nextRequestId;
    this.nextRequestId = (this.nextRequestId % 0xffff_ffff) + 1;
    return new Promise<Message>((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject });
      this.queue({ ...message, requestId } as Message);
    });
  }

  /** Sends a message that has no response (heartbeat, page clean). */
  send(message: Outgoing): void {
    if (!this.isOpen) return;
    this.queue({ ...message, requestId: 0 } as Message);
  }

  close(reason: string): void {
    if (!this.isOpen) return;
    this.flush();
    this.socket.end();
    this.closed(reason);
  }

  private queue(message: Message): void {
    this.outgoing.push(message);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outgoing.length === 0 || this.socket.destroyed) return;
    const batch = this.outgoing;
    this.outgoing = [];
    // Page data goes by reference (writev): a batch of whole pages is not copied into one buffer.
    // The memory manager holds a page's lock until every partner answered, so the bytes cannot
    // change while they wait in the socket.
    const parts = encodeBatchParts(batch);
    if (parts.length === 1) this.socket.write(parts[0] as Buffer);
    else {
      this.socket.cork();
      for (const part of parts) this.socket.write(part);
      this.socket.uncork();
    }
    this.statistics.framesSent += batch.length;
    this.statistics.socketWrites++;
  }

  /** Messages that arrived in the same chunk as the hello exchange. */
  deliver(messages: Message[]): void {
    for (const message of messages) this.dispatch(message);
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
      this.logger.error(`partner link to node ${this.peer.nodeId}: ${error.message}; closing it`);
      this.socket.destroy();
      this.closed(error.message);
      return;
    }
    for (const message of messages) this.dispatch(message);
  }

  private dispatch(message: Message): void {
    this.statistics.framesReceived++;
    if (isResponseType(message.type)) this.onResponse(message);
    else this.onRequest(message);
  }

  private onResponse(message: Message): void {
    const waiter = this.pending.get(message.requestId);
    if (!waiter) {
      this.logger.error(`partner link to node ${this.peer.nodeId}: ${messageTypeName(message.type)} answers unknown request ${message.requestId}; closing it`);
      this.socket.destroy();
      this.closed('unexpected response');
      return;
    }
    this.pending.delete(message.requestId);
    this.wakeWaiting();
    waiter.resolve(message);
  }

  private onRequest(message: Message): void {
    Promise.resolve()
      .then(() => this.handler(message, this))
      .then(
        (response) => {
          if (response !== null && expectsResponse(message.type) && this.isOpen) this.queue({ ...response, requestId: message.requestId });
        },
        (error: Error) => {
          this.logger.error(`partner request ${messageTypeName(message.type)} failed: ${error.message}; closing the link`);
          this.close(`handler failed: ${error.message}`);
        },
      );
  }

  private closed(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    const error = new LinkClosedError(`link to node ${this.peer.nodeId} closed: ${reason}`);
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
    for (const wake of this.waitingForRoom.splice(0)) wake();
    for (const wake of this.waitingForwarded.splice(0)) wake();
    this.onClose(reason);
  }
}

/** Why a hello is refused, or null to accept it. The order is the one docs/protocol.md gives. */
export function checkHello(hello: Hello, local: Identity, connected: ReadonlySet<number>): RefusalReason | null {
  if (hello.protocolVersion !== PROTOCOL_VERSION) return RefusalReason.VersionMismatch;
  if (hello.clusterId !== local.clusterId) return RefusalReason.ClusterMismatch;
  if (hello.nodeId === local.nodeId || connected.has(hello.nodeId)) return RefusalReason.NodeIdConflict;
  if (hello.epoch < local.epoch) return RefusalReason.StaleEpoch;
  return null;
}

const REFUSAL_NAMES: Record<number, string> = {
  [RefusalReason.VersionMismatch]: 'protocol version mismatch',
  [RefusalReason.ClusterMismatch]: 'another cluster',
  [RefusalReason.NodeIdConflict]: 'node id already in use',
  [RefusalReason.StaleEpoch]: 'stale epoch',
};

/** Reads the first message of a fresh socket, with a deadline. */
function firstMessage(socket: net.Socket, framer: MessageFramer): Promise<{ message: Message; rest: Message[] }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no hello within ${HELLO_TIMEOUT_MS} ms`)), HELLO_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      try {
        const messages = framer.push(chunk);
        if (messages.length > 0) finish(null, { message: messages[0] as Message, rest: messages.slice(1) });
      } catch (error) {
        finish(error as Error);
      }
    };
    const onClose = (): void => finish(new Error('closed before the hello exchange finished'));
    const finish = (error: Error | null, result?: { message: Message; rest: Message[] }): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (error) reject(error);
      else resolve(result as { message: Message; rest: Message[] });
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** Connects to a partner, introduces this node, and resolves once the partner accepted. */
export async function connectPartner(
  address: { host: string; port: number },
  local: Identity,
  handler: RequestHandler,
  logger: Logger,
  /**
   * Called with the link before anything that arrived with the hello reply is handled, so the
   * caller's bookkeeping for a new partner happens before the partner's first message does.
   */
  onReady: (link: PartnerLink) => void = () => undefined,
): Promise<PartnerLink> {
  const socket = net.connect(address.port, address.host);
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const framer = new MessageFramer();
  socket.write(encodeBatch([{ type: MessageType.Hello, requestId: 0, ...local, protocolVersion: PROTOCOL_VERSION }]));
  try {
    const { message, rest } = await firstMessage(socket, framer);
    if (message.type === MessageType.HelloRefusal) {
      const refusal = message as HelloRefusal;
      throw new HelloRefusedError(refusal.reason, `node ${refusal.nodeId} refused the link: ${REFUSAL_NAMES[refusal.reason] ?? `reason ${refusal.reason}`} (its cluster ${refusal.clusterId}, version ${refusal.protocolVersion}, epoch ${refusal.epoch})`);
    }
    if (message.type !== MessageType.HelloReply) throw new Error(`expected a hello reply, got ${messageTypeName(message.type)}`);
    const reply = message as Hello | (Message & Identity);
    const peer = { clusterId: reply.clusterId, nodeId: reply.nodeId, epoch: reply.epoch };
    if (peer.clusterId !== local.clusterId) throw new HelloRefusedError(RefusalReason.ClusterMismatch, `node ${peer.nodeId} answered from cluster ${peer.clusterId}`);
    logger.info(`partner link to node ${peer.nodeId} up (${address.host}:${address.port})`);
    const link = new PartnerLink(socket, framer, peer, handler, logger);
    onReady(link);
    link.deliver(rest);
    return link;
  } catch (error) {
    socket.destroy();
    throw error;
  }
}

/** Accepts partner links: checks every hello, refuses with a reason, keeps serving whatever arrives. */
export class PartnerListener {
  private server: net.Server | null = null;
  private readonly links = new Map<number, PartnerLink>();
  onLink: (link: PartnerLink) => void = () => undefined;

  constructor(
    private readonly local: Identity,
    private readonly handler: RequestHandler,
    private readonly logger: Logger,
  ) {}

  async listen(address: { host: string; port: number }): Promise<void> {
    const server = net.createServer((socket) => void this.accept(socket));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(address.port, address.host, () => resolve()));
    this.server = server;
  }

  get port(): number {
    return (this.server?.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const link of this.links.values()) link.close('listener closing');
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async accept(socket: net.Socket): Promise<void> {
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    const from = `${socket.remoteAddress}:${socket.remotePort}`;
    const framer = new MessageFramer();
    let first: { message: Message; rest: Message[] };
    try {
      first = await firstMessage(socket, framer);
    } catch (error) {
      this.logger.warn(`partner port: dropping ${from}: ${(error as Error).message}`);
      socket.destroy();
      return;
    }
    if (first.message.type !== MessageType.Hello) {
      this.logger.warn(`partner port: dropping ${from}: first message is ${messageTypeName(first.message.type)}, not hello`);
      socket.destroy();
      return;
    }
    const hello = first.message as Hello;
    const refusal = checkHello(hello, this.local, new Set(this.links.keys()));
    if (refusal !== null) {
      this.logger.warn(
        `partner port: refusing node ${hello.nodeId} from ${from}: ${REFUSAL_NAMES[refusal]} (it says cluster ${hello.clusterId}, version ${hello.protocolVersion}, epoch ${hello.epoch})`,
      );
      socket.end(encodeBatch([{ type: MessageType.HelloRefusal, requestId: hello.requestId, reason: refusal, ...this.local, protocolVersion: PROTOCOL_VERSION }]));
      return;
    }
    const link = new PartnerLink(socket, framer, { clusterId: hello.clusterId, nodeId: hello.nodeId, epoch: hello.epoch }, this.handler, this.logger);
    this.links.set(hello.nodeId, link);
    link.onClose = (reason) => {
      this.links.delete(hello.nodeId);
      this.logger.warn(`partner link from node ${hello.nodeId} down: ${reason}`);
    };
    socket.write(encodeBatch([{ type: MessageType.HelloReply, requestId: hello.requestId, ...this.local, protocolVersion: PROTOCOL_VERSION }]));
    this.logger.info(`partner link from node ${hello.nodeId} up (${from})`);
    this.onLink(link);
    link.deliver(first.rest);
  }
}
