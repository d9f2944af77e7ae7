// Proves the partner link over loopback: the authenticated handshake accepts a partner holding the
// key and refuses, with a signed and logged reason, another cluster, a taken or unknown node id, a
// stale or implausible epoch; a wrong key or another version is dropped with nothing revealed;
// garbage and truncated frames close only that connection; TLS-PSK links work and refuse another
// key; many requests run at once, are answered out of order, and leave in batched socket writes;
// a closed link fails what was in flight.
import { expect } from 'chai';
import net from 'node:net';
import { silentLogger } from '../../src/observe/index.js';
import {
  commandComplete,
  connectPartner,
  derivePartnerKey,
  HelloRefusedError,
  UnprovenPeerError,
  type LinkSecurity,
  IoOp,
  LinkClosedError,
  MAX_FORWARDED_IN_FLIGHT,
  MessageType,
  NIL_ALLOCATION,
  PartnerListener,
  PROTOCOL_VERSION,
  RefusalReason,
  Status,
  type Message,
  type PartnerLink,
} from '../../src/partner/index.js';
import { encodeMessage } from '../../src/partner/codec.js';
import { testContext, testSecurity } from '../support/partner-security.js';

const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const A = { clusterId: CLUSTER, nodeId: 1, epoch: 5 };
const B = { clusterId: CLUSTER, nodeId: 2, epoch: 5 };

/**
 * A handler that answers a space request with space status after a delay given in bytesWanted, and
 * a forwarded probe at once; nothing else.
 */
async function answer(message: Message): Promise<Message | null> {
  if (message.type === MessageType.ForwardedIo && message.op === IoOp.Probe) return commandComplete(message, Status.Ok);
  if (message.type !== MessageType.SpaceRequest) return null;
  await new Promise((resolve) => setTimeout(resolve, message.bytesWanted % 7));
  return { type: MessageType.SpaceStatus, requestId: message.requestId, freeBytes: message.bytesWanted * 2, reclaimableBytes: 0 };
}

describe('partner link', function () {
  this.timeout(20_000);
  let listener: PartnerListener;
  const links: PartnerLink[] = [];
  const warnings: string[] = [];
  const logger = silentLogger();
  logger.warn = logger.error = ((message: string) => {
    warnings.push(message);
    return logger;
  }) as typeof logger.warn;
  let security: LinkSecurity = testSecurity();
  /** Every message the listener's handler was given. */
  const handled: Message[] = [];

  async function listen(policy: LinkSecurity): Promise<void> {
    await listener?.close();
    security = policy;
    listener = new PartnerListener(
      testContext(A, (message) => {
        handled.push(message);
        return answer(message);
      }, logger, policy),
    );
    listener.onLink = (link) => links.push(link);
    await listener.listen({ host: '127.0.0.1', port: 0 });
  }

  beforeEach(async () => {
    warnings.length = 0;
    handled.length = 0;
    await listen(testSecurity());
  });

  afterEach(async () => {
    for (const link of links.splice(0)) link.close('test over');
    await listener.close();
  });

  async function connect(identity = B, policy: LinkSecurity = security, expected = A.nodeId): Promise<PartnerLink> {
    const link = await connectPartner({ host: '127.0.0.1', port: listener.port, nodeId: expected }, testContext(identity, answer, logger, policy));
    links.push(link);
    return link;
  }

  /** Raw bytes to the partner port; resolves with everything it sent back before it closed. */
  async function rawExchange(bytes: Buffer): Promise<Buffer> {
    const socket = net.connect(listener.port, '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(bytes);
    await new Promise((resolve) => socket.once('close', resolve));
    return Buffer.concat(received);
  }

  it('keeps room for other requests when forwarded I/O fills its share (no cross-link deadlock)', async () => {
    const link = await connect();
    // The peer never answers forwarded I/O here: without a separate budget these would take every slot.
    const stuck = Array.from({ length: 1100 }, (_, index) =>
      link.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: NIL_ALLOCATION, offset: index * 4096, length: 4096, fua: false, data: Buffer.alloc(0) }).catch(() => null),
    );
    const reply = await link.request({ type: MessageType.SpaceRequest, bytesWanted: 14 });
    expect(reply.type).to.equal(MessageType.SpaceStatus);
    link.close('test over');
    await Promise.all(stuck);
  });

  it('lets forwarded requests beyond their share wait, and sends each once an answer frees a place', async () => {
    const link = await connect();
    const count = 3 * MAX_FORWARDED_IN_FLIGHT;
    const replies = await Promise.all(
      Array.from({ length: count }, (_, index) => link.request({ type: MessageType.ForwardedIo, op: IoOp.Probe, allocation: NIL_ALLOCATION, offset: index, length: 0, fua: false, data: Buffer.alloc(0) })),
    );
    expect(replies.every((reply) => reply.type === MessageType.CommandComplete && reply.status === Status.Ok)).to.equal(true);
    expect(link.statistics.framesSent).to.equal(count);
    // Every place was given back: the next request is sent at once, not parked.
    expect((await link.request({ type: MessageType.SpaceRequest, bytesWanted: 7 })).type).to.equal(MessageType.SpaceStatus);
  });

  it('accepts a partner of the same cluster and learns its identity', async () => {
    const link = await connect();
    expect(link.peer).to.deep.equal(A);
    await new Promise((resolve) => setImmediate(resolve));
    expect(links.some((candidate) => candidate.peer.nodeId === 2), 'the listener has the link too').to.equal(true);
  });

  it('runs 2000 requests at once, answered out of order, matched by id, in batched writes', async () => {
    const link = await connect();
    const wanted = Array.from({ length: 2000 }, (_, i) => i + 1);
    const replies = await Promise.all(wanted.map((bytesWanted) => link.request({ type: MessageType.SpaceRequest, bytesWanted })));
    replies.forEach((reply, i) => {
      expect(reply.type).to.equal(MessageType.SpaceStatus);
      expect((reply as { freeBytes: number }).freeBytes).to.equal(2 * (wanted[i] as number));
    });
    expect(link.statistics.framesSent).to.equal(2000);
    expect(link.statistics.socketWrites, 'frames leave many per write').to.be.below(100);
  });

  const refusals: Array<[string, Partial<typeof B>, RefusalReason, Partial<LinkSecurity>]> = [
    ['another cluster', { clusterId: '00000000-0000-0000-0000-0000000000ff' }, RefusalReason.ClusterMismatch, {}],
    ['its own node id', { nodeId: 1 }, RefusalReason.NodeIdConflict, {}],
    ['a stale epoch', { epoch: 4 }, RefusalReason.StaleEpoch, {}],
    ['a node id not bound to its address', {}, RefusalReason.UnknownNode, { admits: () => false }],
    ['an epoch no claim could reach', { epoch: 2 ** 53 - 1 }, RefusalReason.ImplausibleEpoch, {}],
  ];
  for (const [what, change, reason, policy] of refusals) {
    it(`refuses an authenticated hello from ${what} with a signed reason, logs why, and keeps serving`, async () => {
      await listen(testSecurity(policy));
      const error = (await connect({ ...B, ...change }, testSecurity()).catch((caught: Error) => caught)) as HelloRefusedError;
      expect(error).to.be.instanceOf(HelloRefusedError);
      expect(error.reason).to.equal(reason);
      expect(warnings.join('\n')).to.match(/refusing/);
      await listen(testSecurity());
      const good = await connect(B, testSecurity());
      expect((await good.request({ type: MessageType.SpaceRequest, bytesWanted: 3 })).type).to.equal(MessageType.SpaceStatus);
    });
  }

  it('refuses a second link from a node that already has one', async () => {
    await connect();
    await new Promise((resolve) => setImmediate(resolve));
    const error = (await connect().catch((caught: Error) => caught)) as HelloRefusedError;
    expect(error.reason).to.equal(RefusalReason.NodeIdConflict);
  });

  it('drops a peer with another key after its hello, telling it nothing about the cluster', async () => {
    const stranger = testSecurity({ key: derivePartnerKey(Buffer.from('not the cluster key, but 32 bytes long')) });
    const error = await connect(B, stranger).catch((caught: Error) => caught);
    expect(error, 'the stranger gets no proven answer').to.be.instanceOf(Error);
    expect(error).not.to.be.instanceOf(HelloRefusedError);
    expect(warnings.join('\n')).to.match(/dropping .*does not prove it holds the partner key/);
    expect(links.filter((link) => link.isOpen), 'no link came up').to.have.length(0);
  });

  it('does not believe a listener with another key: its reply is not proven', async () => {
    await listen(testSecurity({ key: derivePartnerKey(Buffer.from('a different listener key of 32 bytes')) }));
    const error = await connect(B, testSecurity()).catch((caught: Error) => caught);
    expect(error).to.be.instanceOf(Error);
    // The listener drops the connector first (its hello fails there), or the connector refuses the listener's answer.
    expect(error instanceof UnprovenPeerError || /closed during the handshake/.test((error as Error).message), (error as Error).message).to.equal(true);
  });

  it('answers a stranger with its challenge only: no cluster id, node id or epoch leaves the node', async () => {
    const challenge = encodeMessage({ type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce: Buffer.alloc(32, 1) });
    const forged = encodeMessage({ type: MessageType.Hello, requestId: 0, ...B, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(32, 2) });
    const reply = await rawExchange(Buffer.concat([challenge, forged]));
    expect(reply.length, 'one challenge frame').to.equal(16 + 34);
    expect(reply.readUInt16BE(6)).to.equal(MessageType.Challenge);
    expect(reply.includes(Buffer.from(CLUSTER.replace(/-/g, ''), 'hex')), 'the cluster id').to.equal(false);
  });

  it('processes nothing that arrives behind a hello that fails its proof (a write, a takeover, an epoch)', async () => {
    const challenge = encodeMessage({ type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce: Buffer.alloc(32, 3) });
    const forged = encodeMessage({ type: MessageType.Hello, requestId: 0, ...B, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(32) });
    const write = encodeMessage({ type: MessageType.ForwardedIo, requestId: 5, op: IoOp.Write, fua: false, allocation: NIL_ALLOCATION, offset: 0, length: 4, data: Buffer.from('evil') });
    const heartbeat = encodeMessage({ type: MessageType.Heartbeat, requestId: 1, epoch: 2 ** 53 - 1 });
    const reply = await rawExchange(Buffer.concat([challenge, forged, write, heartbeat]));
    expect(reply.length, 'nothing but the challenge came back').to.equal(16 + 34);
    expect(handled, 'no message reached the handler').to.have.length(0);
    expect(links, 'no link came up').to.have.length(0);
  });

  it('drops a peer of another protocol version, which sends its old hello first', async () => {
    const hello = encodeMessage({ type: MessageType.Heartbeat, requestId: 0, epoch: 1 });
    hello.writeUInt16BE(2, 4);
    hello.writeUInt16BE(MessageType.Hello, 6);
    const reply = await rawExchange(hello);
    expect(reply.length, 'nothing is sent back').to.equal(0);
    expect(warnings.join('\n')).to.match(new RegExp(`dropping .*protocol version 2, this node speaks ${PROTOCOL_VERSION}`));
  });

  it('encrypts a link with TLS-PSK when both ends want it, and a TLS peer with another key gets nowhere', async () => {
    await listen(testSecurity({ tls: true }));
    const link = await connect(B, testSecurity({ tls: true }));
    expect((await link.request({ type: MessageType.SpaceRequest, bytesWanted: 5 })).type).to.equal(MessageType.SpaceStatus);
    const stranger = testSecurity({ tls: true, key: derivePartnerKey(Buffer.from('a TLS stranger with its own 32-byte key')) });
    expect(await connect({ ...B, nodeId: 3 }, stranger).catch((caught: Error) => caught)).to.be.instanceOf(Error);
    expect(await connect({ ...B, nodeId: 3 }, testSecurity()).catch((caught: Error) => caught), 'a plain peer on a TLS port').to.be.instanceOf(Error);
  });

  for (const [what, bytes] of [
    ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: partner\r\n\r\n')],
    ['a frame that declares 16 MiB', Buffer.from('4654564d0003010800000000' + '01000000', 'hex')],
    ['a truncated challenge, then a hang-up', encodeMessage({ type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce: Buffer.alloc(32) }).subarray(0, 20)],
  ] as const) {
    it(`drops a connection that sends ${what}, logs it, and keeps serving`, async () => {
      await rawExchange(bytes);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(warnings.join('\n')).to.match(/dropping/);
      const good = await connect();
      expect((await good.request({ type: MessageType.SpaceRequest, bytesWanted: 1 })).type).to.equal(MessageType.SpaceStatus);
    });
  }

  it('closes an authenticated link that states an epoch no claim could make, adopting nothing', async () => {
    const link = await connect();
    const server = links.find((candidate) => candidate !== link && candidate.peer.nodeId === 2) as PartnerLink;
    const closed = new Promise<string>((resolve) => (server.onClose = resolve));
    (link as unknown as { queue(message: Message, requestId: number): void }).queue({ type: MessageType.Heartbeat, requestId: 0, epoch: 2 ** 53 - 1 }, 1);
    expect(await closed).to.match(/epoch 9007199254740991, further ahead than any claim/);
  });

  it('fails requests in flight when the link closes, and refuses new ones', async () => {
    const link = await connect();
    const slow = link.request({ type: MessageType.SpaceRequest, bytesWanted: 6 });
    const server = links.find((candidate) => candidate !== link && candidate.peer.nodeId === 2) as PartnerLink;
    server.close('test');
    expect(await slow.then(() => null, (error: Error) => error)).to.be.instanceOf(LinkClosedError);
    expect(await link.request({ type: MessageType.SpaceRequest, bytesWanted: 1 }).catch((error: Error) => error)).to.be.instanceOf(LinkClosedError);
  });

  it('closes a link whose peer answers a request that was never made', async () => {
    const link = await connect();
    const server = links.find((candidate) => candidate !== link && candidate.peer.nodeId === 2) as PartnerLink;
    const closed = new Promise<string>((resolve) => (server.onClose = resolve));
    (link as unknown as { queue(message: Message, requestId: number): void }).queue({ type: MessageType.SpaceStatus, requestId: 0, freeBytes: 1, reclaimableBytes: 0 }, 999);
    expect(await closed).to.match(/answers unknown request 999/);
  });
});
