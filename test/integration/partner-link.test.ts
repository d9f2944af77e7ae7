// Proves the partner link over loopback: the hello exchange accepts a partner and refuses another
// cluster, another version, a taken node id and a stale epoch with a logged reason; garbage and
// truncated frames close only that connection; many requests run at once, are answered out of
// order, and leave in batched socket writes; a closed link fails what was in flight.
import { expect } from 'chai';
import net from 'node:net';
import { silentLogger } from '../../src/observe/index.js';
import {
  connectPartner,
  HelloRefusedError,
  IoOp,
  LinkClosedError,
  MessageType,
  NIL_ALLOCATION,
  PartnerListener,
  RefusalReason,
  type Message,
  type PartnerLink,
} from '../../src/partner/index.js';
import { encodeMessage } from '../../src/partner/codec.js';

const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const A = { clusterId: CLUSTER, nodeId: 1, epoch: 5 };
const B = { clusterId: CLUSTER, nodeId: 2, epoch: 5 };

/** A handler that answers a space request with space status after a delay given in bytesWanted. */
async function answer(message: Message): Promise<Message | null> {
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
  logger.warn = ((message: string) => {
    warnings.push(message);
    return logger;
  }) as typeof logger.warn;

  beforeEach(async () => {
    warnings.length = 0;
    listener = new PartnerListener(A, answer, logger);
    listener.onLink = (link) => links.push(link);
    await listener.listen({ host: '127.0.0.1', port: 0 });
  });

  afterEach(async () => {
    for (const link of links.splice(0)) link.close('test over');
    await listener.close();
  });

  async function connect(identity = B): Promise<PartnerLink> {
    const link = await connectPartner({ host: '127.0.0.1', port: listener.port }, identity, answer, logger);
    links.push(link);
    return link;
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

  const refusals: Array<[string, Partial<typeof B>, RefusalReason]> = [
    ['another cluster', { clusterId: '00000000-0000-0000-0000-0000000000ff' }, RefusalReason.ClusterMismatch],
    ['its own node id', { nodeId: 1 }, RefusalReason.NodeIdConflict],
    ['a stale epoch', { epoch: 4 }, RefusalReason.StaleEpoch],
  ];
  for (const [what, change, reason] of refusals) {
    it(`refuses a hello from ${what}, logs why, and keeps serving`, async () => {
      const error = (await connect({ ...B, ...change }).catch((caught: Error) => caught)) as HelloRefusedError;
      expect(error).to.be.instanceOf(HelloRefusedError);
      expect(error.reason).to.equal(reason);
      expect(warnings.join('\n')).to.match(/refusing node/);
      const good = await connect();
      expect((await good.request({ type: MessageType.SpaceRequest, bytesWanted: 3 })).type).to.equal(MessageType.SpaceStatus);
    });
  }

  it('refuses a second link from a node that already has one', async () => {
    await connect();
    await new Promise((resolve) => setImmediate(resolve));
    const error = (await connect().catch((caught: Error) => caught)) as HelloRefusedError;
    expect(error.reason).to.equal(RefusalReason.NodeIdConflict);
  });

  it('refuses a hello of another protocol version with a refusal the peer can read', async () => {
    const hello = encodeMessage({ type: MessageType.Hello, requestId: 0, ...B, protocolVersion: 1 });
    hello.writeUInt16BE(1, 4);
    const socket = net.connect(listener.port, '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.write(hello);
    await new Promise((resolve) => socket.once('close', resolve));
    const reply = Buffer.concat(received);
    expect(reply.readUInt16BE(6), 'a hello refusal').to.equal(MessageType.HelloRefusal);
    expect(warnings.join('\n')).to.match(/version/);
  });

  for (const [what, bytes] of [
    ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: partner\r\n\r\n')],
    ['a frame that declares 16 MiB', Buffer.from('4654564d0001000100000000' + '01000000', 'hex')],
    ['a truncated hello, then a hang-up', encodeMessage({ type: MessageType.Hello, requestId: 0, ...B, protocolVersion: 1 }).subarray(0, 20)],
  ] as const) {
    it(`drops a connection that sends ${what}, logs it, and keeps serving`, async () => {
      const socket = net.connect(listener.port, '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.end(bytes);
      await new Promise((resolve) => socket.once('close', resolve));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(warnings.join('\n')).to.match(/dropping/);
      const good = await connect();
      expect((await good.request({ type: MessageType.SpaceRequest, bytesWanted: 1 })).type).to.equal(MessageType.SpaceStatus);
    });
  }

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
    (link as unknown as { queue(message: Message): void }).queue({ type: MessageType.SpaceStatus, requestId: 999, freeBytes: 1, reclaimableBytes: 0 });
    expect(await closed).to.match(/unexpected response/);
  });
});
