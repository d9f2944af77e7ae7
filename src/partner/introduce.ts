// The two sides of a link's handshake (handshake.ts draws it) over a socket: frames are collected,
// never acted on, until the peer has proved it holds the partner key; only the handshake's own
// messages are interpreted before that. What a stranger can make a node do: read at most a few
// hundred bytes, compute one HMAC, write one challenge, close. A refusal is sent only to a peer
// that proved itself, so who a node is (cluster, node id, epoch) is never told to a stranger.
import { ClusterError, type Clock } from '../core/index.js';
import { MessageFramer, messageTypeName } from './codec.js';
import { MAX_HANDSHAKE_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, MessageType, PROOF_BYTES, PROTOCOL_VERSION, RefusalReason } from './constants.js';
import { newNonce, proofHolds, signed, type PartnerKey } from './handshake.js';
import type { Challenge, Hello, HelloRefusal, HelloReply, Message } from './messages.js';
import type { LinkSocket } from './transport.js';

/** A peer that has not finished its handshake within this time is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export interface Identity {
  clusterId: string;
  nodeId: number;
  epoch: number;
}

/** What a node knows to judge a peer: the key, and which node ids and epochs are believable. */
export interface LinkSecurity {
  readonly key: PartnerKey;
  /** Links are TLS-PSK encrypted (both ends must agree; the config decides for the whole cluster). */
  readonly tls: boolean;
  /** Whether node `nodeId` may link from `address`: it must be a node of the config, at its configured host. */
  admits(nodeId: number, address: string): boolean;
  /** Whether any node of the config may link from `address` (checked before a byte is read). */
  knownAddress(address: string): boolean;
  /** Whether an epoch a peer states could have come from claims; an implausible one is refused. */
  plausibleEpoch(epoch: number): boolean;
}

export class HelloRefusedError extends ClusterError {
  override name = 'HelloRefusedError';
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

/** The handshake failed before either side proved anything: a stranger, a wrong key, a dropped connection. */
export class HandshakeError extends ClusterError {
  override name = 'HandshakeError';
}

/** The peer answered, but without proof that it holds the partner key: another key file, or not a partner. */
export class UnprovenPeerError extends HandshakeError {
  override name = 'UnprovenPeerError';
}

export const REFUSAL_NAMES: Record<number, string> = {
  [RefusalReason.VersionMismatch]: 'protocol version mismatch',
  [RefusalReason.ClusterMismatch]: 'another cluster',
  [RefusalReason.NodeIdConflict]: 'node id already in use',
  [RefusalReason.StaleEpoch]: 'stale epoch',
  [RefusalReason.UnknownNode]: 'node id not in the config, or not from its configured address',
  [RefusalReason.ImplausibleEpoch]: 'epoch further ahead than any claim could take it',
};

/**
 * Why an authenticated hello is refused, or null to accept it. A good proof shows the peer holds the
 * key; it must still be a node of this cluster, at its own address, not already linked, not fenced.
 */
export function checkHello(hello: Hello, local: Identity, connected: ReadonlySet<number>, security: LinkSecurity, address: string): RefusalReason | null {
  if (hello.protocolVersion !== PROTOCOL_VERSION) return RefusalReason.VersionMismatch;
  if (hello.clusterId !== local.clusterId) return RefusalReason.ClusterMismatch;
  if (hello.nodeId === local.nodeId || connected.has(hello.nodeId)) return RefusalReason.NodeIdConflict;
  if (!security.admits(hello.nodeId, address)) return RefusalReason.UnknownNode;
  if (hello.epoch < local.epoch) return RefusalReason.StaleEpoch;
  if (!security.plausibleEpoch(hello.epoch)) return RefusalReason.ImplausibleEpoch;
  return null;
}

/**
 * Collects frames off a socket during the handshake, under one deadline for all of it. Frames are
 * only queued here: the handshake takes the ones it expects, and what is left is handed to the
 * link only once the peer is authenticated.
 */
class HandshakeReader {
  private readonly queued: Message[] = [];
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly cancelTimer: () => void;
  private readonly onData = (chunk: Buffer): void => {
    try {
      for (const message of this.framer.push(chunk)) this.queued.push(message);
    } catch (error) {
      this.fail(error as Error);
    }
    this.wake();
  };
  private readonly onClose = (): void => this.fail(new HandshakeError('closed during the handshake'));
  private readonly onError = (error: Error): void => this.fail(new HandshakeError(error.message));

  constructor(
    private readonly socket: LinkSocket,
    readonly framer: MessageFramer,
    clock: Clock,
  ) {
    this.cancelTimer = clock.setTimer(HANDSHAKE_TIMEOUT_MS, () => this.fail(new HandshakeError(`no handshake within ${HANDSHAKE_TIMEOUT_MS} ms`)));
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
  }

  /** The next frame, which must be of `type`. */
  async expect<M extends Message>(type: MessageType, ...also: MessageType[]): Promise<M> {
    while (this.queued.length === 0 && !this.failure) await new Promise<void>((resolve) => (this.waiter = resolve));
    const message = this.queued.shift();
    if (!message) throw this.failure as Error;
    if (message.type !== type && !also.includes(message.type)) throw new HandshakeError(`sent ${messageTypeName(message.type)} during the handshake`);
    return message as M;
  }

  /** Stops reading; what arrived behind the handshake, for the link. */
  finish(): Message[] {
    this.cancelTimer();
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    return this.queued.splice(0);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

function challenge(nonce: Buffer): Challenge {
  return { type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce };
}

function checkVersion(peer: Challenge): void {
  if (peer.protocolVersion !== PROTOCOL_VERSION) {
    throw new HelloRefusedError(RefusalReason.VersionMismatch, `speaks partner protocol version ${peer.protocolVersion}, this node ${PROTOCOL_VERSION}`);
  }
}

export interface Introduced {
  peer: Identity;
  framer: MessageFramer;
  /** Frames that arrived behind the handshake, from the authenticated peer. */
  rest: Message[];
}

/**
 * The connector's side: challenge, then hello, then the listener's proven answer. `expected` is
 * the node id this node dialled: a reply from any other is not the partner it wanted.
 */
export async function introduceAsConnector(
  socket: LinkSocket,
  local: Identity,
  security: LinkSecurity,
  expected: number,
  send: (message: Message) => void,
  clock: Clock,
): Promise<Introduced> {
  // The listener is at a configured address, but anything could answer there: its frames are
  // bounded like a stranger's until it has proved itself.
  const reader = new HandshakeReader(socket, new MessageFramer(MAX_HANDSHAKE_PAYLOAD_BYTES), clock);
  try {
    const ownNonce = newNonce();
    send(challenge(ownNonce));
    const theirs = await reader.expect<Challenge>(MessageType.Challenge);
    checkVersion(theirs);
    const theirNonce = Buffer.from(theirs.nonce);
    send(signed(security.key, { type: MessageType.Hello, requestId: 0, ...local, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(PROOF_BYTES) }, ownNonce, theirNonce));
    const answer = await reader.expect<HelloReply | HelloRefusal>(MessageType.HelloReply, MessageType.HelloRefusal);
    if (!proofHolds(security.key, answer, ownNonce, theirNonce)) throw new UnprovenPeerError('its answer does not prove it holds the partner key (another cluster, or another key file)');
    if (answer.type === MessageType.HelloRefusal) {
      throw new HelloRefusedError(answer.reason, `node ${answer.nodeId} refused the link: ${REFUSAL_NAMES[answer.reason] ?? `reason ${answer.reason}`} (its cluster ${answer.clusterId}, version ${answer.protocolVersion}, epoch ${answer.epoch})`);
    }
    if (answer.clusterId !== local.clusterId || answer.nodeId !== expected) {
      throw new HelloRefusedError(RefusalReason.UnknownNode, `answered as node ${answer.nodeId} of cluster ${answer.clusterId}; node ${expected} of ${local.clusterId} was dialled`);
    }
    if (!security.plausibleEpoch(answer.epoch)) {
      throw new HelloRefusedError(RefusalReason.ImplausibleEpoch, `node ${answer.nodeId} states epoch ${answer.epoch}, further ahead than any claim could take it`);
    }
    reader.framer.maxPayloadBytes = MAX_PAYLOAD_BYTES;
    return { peer: { clusterId: answer.clusterId, nodeId: answer.nodeId, epoch: answer.epoch }, framer: reader.framer, rest: reader.finish() };
  } finally {
    reader.finish();
  }
}

export type ListenerVerdict =
  | { accepted: true; introduced: Introduced }
  | { accepted: false; reason: string; /** The peer proved itself: worth an error line, not a warning. */ authenticated: boolean };

/**
 * The listener's side. A peer that fails before its proof is checked is closed with nothing more
 * sent; one that proved itself gets a signed reply or a signed refusal.
 */
export async function introduceAsListener(
  socket: LinkSocket,
  local: Identity,
  security: LinkSecurity,
  connected: ReadonlySet<number>,
  send: (message: Message) => void,
  clock: Clock,
): Promise<ListenerVerdict> {
  const reader = new HandshakeReader(socket, new MessageFramer(MAX_HANDSHAKE_PAYLOAD_BYTES), clock);
  const address = socket.remoteAddress ?? '';
  try {
    const theirs = await reader.expect<Challenge>(MessageType.Challenge);
    const ownNonce = newNonce();
    // Our version goes back even to a peer of another one, so both ends can log why.
    send(challenge(ownNonce));
    checkVersion(theirs);
    const theirNonce = Buffer.from(theirs.nonce);
    const hello = await reader.expect<Hello>(MessageType.Hello);
    if (!proofHolds(security.key, hello, theirNonce, ownNonce)) return { accepted: false, reason: 'its hello does not prove it holds the partner key', authenticated: false };
    const refusal = checkHello(hello, local, connected, security, address);
    const identity = { ...local, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(PROOF_BYTES) };
    if (refusal !== null) {
      send(signed(security.key, { type: MessageType.HelloRefusal, requestId: 0, reason: refusal, ...identity }, theirNonce, ownNonce));
      const why = `${REFUSAL_NAMES[refusal]} (it says node ${hello.nodeId}, cluster ${hello.clusterId}, version ${hello.protocolVersion}, epoch ${hello.epoch})`;
      return { accepted: false, reason: why, authenticated: true };
    }
    send(signed(security.key, { type: MessageType.HelloReply, requestId: 0, ...identity }, theirNonce, ownNonce));
    reader.framer.maxPayloadBytes = MAX_PAYLOAD_BYTES;
    return { accepted: true, introduced: { peer: { clusterId: hello.clusterId, nodeId: hello.nodeId, epoch: hello.epoch }, framer: reader.framer, rest: reader.finish() } };
  } catch (error) {
    return { accepted: false, reason: (error as Error).message, authenticated: false };
  } finally {
    reader.finish();
  }
}
