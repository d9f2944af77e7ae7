// Proves what a stranger on the network and a hostile NBD client can do to a running two-node
// cluster of real processes: nothing that changes a byte or fences a node. Each test is named after
// the attack (issue: "safe to deploy"): a forged partner joining as node 0, frames smuggled behind a
// refused hello, pipelined reads and caches meant to stall the event loop into a failover, a client
// that never reads its replies, a connection flood; and the files and sockets a node leaves behind.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { requestControl } from '../../src/cluster/index.js';
import { clusterUuid } from '../../src/config/index.js';
import { encodeBatch, IoOp, MessageType, NIL_ALLOCATION, PROTOCOL_VERSION, type Message } from '../../src/partner/index.js';
import { startCluster, type FtvmCluster, type FtvmNode } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const NBD_READ = 0;
const NBD_WRITE = 1;
const NBD_CACHE = 5;

/** A request header as a client would send it. */
function header(type: number, handle: number, offset: number, length: number): Buffer {
  const out = Buffer.alloc(28);
  out.writeUInt32BE(0x25609513, 0);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(handle, 12);
  out.writeBigUInt64BE(BigInt(offset), 16);
  out.writeUInt32BE(length, 24);
  return out;
}

async function attach(node: FtvmNode, volume: string): Promise<RawClient> {
  const client = await RawClient.connect({ port: node.port, host: node.host });
  await client.attach(volume);
  return client;
}

async function readAt(node: FtvmNode, offset: number, length: number): Promise<Buffer> {
  const client = await attach(node, 'vol0');
  client.request(NBD_READ, { handle: 1n, offset, length });
  const reply = await client.readReply(length);
  client.close();
  expect(reply.error).to.equal(0);
  return reply.data;
}

async function writeAt(node: FtvmNode, offset: number, data: Buffer): Promise<void> {
  const client = await attach(node, 'vol0');
  client.request(NBD_WRITE, { handle: 2n, offset, payload: data });
  expect((await client.readReply()).error).to.equal(0);
  client.close();
}

/** Counts reply bytes without keeping them: hundreds of MiB of replies must not cost the test its memory. */
async function drainReplies(socket: net.Socket, expectedBytes: number): Promise<void> {
  let seen = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen >= expectedBytes) resolve();
    });
    socket.once('close', () => (seen >= expectedBytes ? resolve() : reject(new Error(`closed after ${seen} of ${expectedBytes} reply bytes`))));
  });
}

/** A client socket already past the handshake (GO on vol0), reading nothing yet. */
async function transmissionSocket(node: FtvmNode): Promise<net.Socket> {
  const client = await attach(node, 'vol0');
  client.socket.removeAllListeners('data');
  return client.socket;
}

async function clusterStatus(node: FtvmNode, cluster: FtvmCluster, name: string) {
  const result = await requestControl(path.join(cluster.directory, `${name}.control`), { op: 'cluster' });
  expect(result.ok, result.error).to.equal(true);
  void node;
  return result.cluster as NonNullable<typeof result.cluster>;
}

/** Neither node fenced, took over or lost its partner: the attack changed nothing of the cluster. */
async function expectUndisturbed(cluster: FtvmCluster, epochBefore: number): Promise<void> {
  for (const name of ['a', 'b']) {
    const status = await clusterStatus(cluster.node(name), cluster, name);
    expect(status.epoch, `node ${name}'s epoch`).to.equal(epochBefore);
    expect(status.partners.every((partner) => partner.live), `node ${name}'s partner is live`).to.equal(true);
    expect(status.volumes.find((volume) => volume.name === 'vol0')?.owner, `vol0 is still a's`).to.equal('a');
    const log = cluster.node(name).log();
    expect(log, `node ${name} log`).not.to.match(/fenced|took over|holds the shared array now/);
  }
}

async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

describe('attacks on a running cluster', function () {
  this.timeout(120_000);
  let cluster: FtvmCluster;
  let epoch = 0;
  const pattern = Buffer.alloc(MiB, 0x5a);

  before(async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE, owner: 'a' }], {
      logLevel: 'info',
      limits: { backlogTimeoutMs: 3000, connectionsPerAddress: 40, connections: 60 },
    });
    await writeAt(cluster.node('a'), 0, pattern);
    epoch = (await clusterStatus(cluster.node('a'), cluster, 'a')).epoch;
  });

  after(async () => {
    await cluster?.stop();
  });

  afterEach(async () => {
    // Every attack leaves the volume as the honest client wrote it, read through both nodes.
    for (const name of ['a', 'b']) expect((await readAt(cluster.node(name), 0, MiB)).equals(pattern), `vol0 via ${name}`).to.equal(true);
    await expectUndisturbed(cluster, epoch);
  });

  /** Raw bytes to a partner port; what came back before the node closed the connection. */
  async function toPartnerPort(name: string, frames: Message[]): Promise<Buffer> {
    const socket = net.connect(cluster.partnerPort(name), '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(encodeBatch(frames));
    await new Promise((resolve) => socket.once('close', resolve));
    return Buffer.concat(received);
  }

  const challenge: Message = { type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce: Buffer.alloc(32, 7) };
  const forgedHello = (nodeId: number): Message => ({ type: MessageType.Hello, requestId: 0, clusterId: clusterUuid('test-cluster'), nodeId, epoch: 0, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(32, 0xaa) });

  it('a stranger joining as node 0 while node 0 is linked gets no link, no data, and cannot cut the real one', async () => {
    const reply = await toPartnerPort('b', [challenge, forgedHello(0)]);
    expect(reply.length, 'b answers with its challenge only').to.equal(16 + 34);
    expect(reply.readUInt16BE(6)).to.equal(MessageType.Challenge);
    expect(reply.includes(Buffer.from(clusterUuid('test-cluster').replace(/-/g, ''), 'hex')), 'no cluster id leaks').to.equal(false);
    expect(cluster.node('b').log()).to.match(/partner port: dropping .*does not prove it holds the partner key/);
  });

  it('frames behind a refused hello (a forwarded write, a takeover, a heartbeat at epoch 2^53-1) are never processed', async () => {
    const write: Message = { type: MessageType.ForwardedIo, requestId: 5, op: IoOp.Write, fua: true, allocation: NIL_ALLOCATION, offset: 0, length: 4096, data: Buffer.alloc(4096, 0xee) };
    const takeover: Message = { type: MessageType.HolderAnnouncement, requestId: 6, previousNodeId: 0, holderNodeId: 7, epoch: 99 };
    const heartbeat: Message = { type: MessageType.Heartbeat, requestId: 1, epoch: 2 ** 53 - 1 };
    for (const name of ['a', 'b']) {
        const reply = await toPartnerPort(name, [challenge, forgedHello(1 - ['a', 'b'].indexOf(name)), write, takeover, heartbeat]);
      // Nothing but the node's challenge at most: the 4 KiB write frame is larger than a handshake
      // frame may be, so the node may drop the connection before it even answers the challenge.
      expect(reply.length, `node ${name} sends its challenge at most`).to.be.oneOf([0, 16 + 34]);
      if (reply.length > 0) expect(reply.readUInt16BE(6)).to.equal(MessageType.Challenge);
    }
  });

  it('600 pipelined 1 MiB reads in one send cannot stall the owner into a failover', async () => {
    const socket = await transmissionSocket(cluster.node('a'));
    const burst = Buffer.concat(Array.from({ length: 600 }, (_, index) => header(NBD_READ, index + 1, (index % 64) * MiB, MiB)));
    expect(burst.length, 'one send of 16.8 KB').to.equal(600 * 28);
    const drained = drainReplies(socket, 600 * (16 + MiB));
    socket.write(burst);
    await drained;
    socket.destroy();
  });

  it('32 CACHE requests of 64 MiB in one send cannot stall the owner into a failover', async () => {
    const socket = await transmissionSocket(cluster.node('a'));
    const drained = drainReplies(socket, 32 * 16);
    socket.write(Buffer.concat(Array.from({ length: 32 }, (_, index) => header(NBD_CACHE, index + 1, 0, SIZE))));
    await drained;
    socket.destroy();
  });

  it('a client that never reads its 32 MiB read replies holds bounded memory and is dropped', async () => {
    const pid = cluster.node('a').child.pid as number;
    const before = await rssBytes(pid);
    const socket = await transmissionSocket(cluster.node('a'));
    socket.pause();
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    // Keep sending 32 MiB read requests for a few seconds; the node stops reading them.
    let sent = 0;
    const until = Date.now() + 2500;
    while (Date.now() < until && !socket.destroyed) {
      const batch = Buffer.concat(Array.from({ length: 64 }, (_, index) => header(NBD_READ, sent + index + 1, 0, 32 * MiB)));
      sent += 64;
      if (!socket.write(batch)) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const peak = await rssBytes(pid);
    // Bounded by the connection's bytes in flight (64 MiB by default) plus buffers, not by what was asked.
    expect(peak - before, `RSS grew by ${Math.round((peak - before) / MiB)} MiB for ${sent} x 32 MiB asked`).to.be.below(256 * MiB);
    await closed;
    expect(cluster.node('a').log()).to.match(/replies not read by the client for 3000 ms/);
  });

  it('a connection flood from one address is cut at the per-address limit; other clients and the control socket still work', async () => {
    const sockets: net.Socket[] = [];
    let refused = 0;
    for (let index = 0; index < 80; index++) {
      const socket = net.connect(cluster.node('b').port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.once('close', () => refused++);
      sockets.push(socket);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(refused, 'closed at once beyond 40 from one address').to.be.at.least(40);
    // Another loopback address is another client.
    const other = await RawClient.connect({ port: cluster.node('b').port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    await other.attach('vol0');
    other.request(NBD_READ, { handle: 9n, offset: 0, length: 4096 });
    expect((await other.readReply(4096)).data.equals(pattern.subarray(0, 4096))).to.equal(true);
    other.close();
    expect(cluster.node('b').log()).to.match(/refusing a connection from 127\.0\.0\.1: \d+ connections are open from 127\.0\.0\.1/);
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 200));
  });

  it('leaves its secrets and data to its owner: key, members, leases 0600; control socket 0600; mirror dumps only inside the data directory', async () => {
    const members = ['disk0.img', 'disk1.img', 'disk2.img'];
    for (const file of ['partner.key', ...members, ...members.map((member) => `${member}.lease`)]) {
      const mode = (await fs.stat(path.join(cluster.directory, file))).mode & 0o777;
      expect(mode.toString(8), file).to.equal('600');
    }
    expect(((await fs.stat(path.join(cluster.directory, 'a.control'))).mode & 0o777).toString(8), 'control socket').to.equal('600');
    const outside = await requestControl(path.join(cluster.directory, 'a.control'), { op: 'mirror-dump', path: '/tmp/ftvm-mirror-dump-escape' });
    expect(outside.ok).to.equal(false);
    expect(outside.error).to.match(/only inside the node's data directory/);
    await fs.symlink('/etc/passwd', path.join(cluster.directory, 'dump-link')).catch(() => undefined);
    const throughLink = await requestControl(path.join(cluster.directory, 'a.control'), { op: 'mirror-dump', path: 'dump-link' });
    expect(throughLink.ok, 'never through a symlink or over a file').to.equal(false);
  });
});
