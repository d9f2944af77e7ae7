// Proves the two-node cluster of real processes keeps the promise: a write acknowledged by the
// owner is in the partner's memory (or on the disks) the moment it is acknowledged, so after kill -9
// of the owner the disks plus the partner's mirror hold every acknowledged byte; writes through one
// node read back through the other; the partner port refuses garbage and strangers and keeps serving.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { MIRROR_DUMP_HEADER_BYTES, requestControl } from '../../src/cluster/index.js';
import { clusterUuid } from '../../src/config/index.js';
import { encodeBatch, MessageType, PROTOCOL_VERSION } from '../../src/partner/index.js';
import { ArrayReader } from '../support/array-reader.js';
import { startCluster, type FtvmCluster, type FtvmNode } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';

const MiB = 1024 * 1024;
const PAGE = 64 * 1024;
const SIZE = 16 * MiB;
const SEED = Number(process.env.FTVM_TEST_SEED ?? 77);
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;

/** Writes (offset, data) pairs through one connection, all in flight at once; resolves when all are acknowledged. */
async function writeAll(client: RawClient, writes: Array<{ offset: number; data: Buffer }>): Promise<void> {
  let handle = 1n;
  for (const write of writes) client.request(NBD_CMD_WRITE, { handle: handle++, offset: write.offset, payload: write.data });
  for (let i = 0; i < writes.length; i++) {
    const reply = await client.readReply();
    expect(reply.error, 'write error').to.equal(0);
  }
}

/** One random write in each of `lanes` equal slices of the volume: concurrent, never overlapping. */
function laneWrites(random: () => number, lanes: number, maxBytes: number): Array<{ offset: number; data: Buffer }> {
  return Array.from({ length: lanes }, (_, lane) => {
    const length = 1 + randomInt(random, maxBytes);
    return { offset: lane * (SIZE / lanes) + randomInt(random, SIZE / lanes - length), data: randomBytes(random, length) };
  });
}

async function readRange(client: RawClient, offset: number, length: number): Promise<Buffer> {
  client.request(NBD_CMD_READ, { handle: 99n, offset, length });
  const reply = await client.readReply(length);
  expect(reply.error, 'read error').to.equal(0);
  return reply.data as Buffer;
}

async function attach(node: FtvmNode, volume: string): Promise<RawClient> {
  const client = await RawClient.connect({ port: node.port });
  await client.attach(volume);
  return client;
}

/** Reads a mirror dump: volume → page → data (the newest version wins). */
async function readMirrorDump(file: string): Promise<Map<string, Map<number, { version: number; data: Buffer }>>> {
  const bytes = await fs.readFile(file);
  const out = new Map<string, Map<number, { version: number; data: Buffer }>>();
  for (let at = 0; at < bytes.length; ) {
    const header = bytes.subarray(at, at + MIRROR_DUMP_HEADER_BYTES);
    const volume = header.subarray(0, 40).toString('utf8').replace(/\0+$/, '');
    const page = Number(header.readBigUInt64BE(40));
    const version = Number(header.readBigUInt64BE(48));
    const length = header.readUInt32BE(56);
    const data = bytes.subarray(at + MIRROR_DUMP_HEADER_BYTES, at + MIRROR_DUMP_HEADER_BYTES + length);
    at += MIRROR_DUMP_HEADER_BYTES + length;
    const pages = out.get(volume) ?? new Map();
    out.set(volume, pages);
    if ((pages.get(page)?.version ?? -1) < version) pages.set(page, { version, data });
  }
  return out;
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe('two-node cluster (real processes)', function () {
  this.timeout(120_000);
  let cluster: FtvmCluster | null = null;

  afterEach(async () => {
    for (const node of cluster?.nodes.values() ?? []) await node.kill();
    if (cluster) await fs.rm(cluster.directory, { recursive: true, force: true });
    cluster = null;
  });

  it('writes through either node read back identically through the other, for both owners', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }, { name: 'vol1', sizeBytes: SIZE }], { pageBytes: PAGE, logLevel: 'warn' });
    const random = seededRandom(SEED);
    for (const volume of ['vol0', 'vol1']) {
      for (const [writer, reader] of [['a', 'b'], ['b', 'a']] as const) {
        const writes = laneWrites(random, 32, 200_000);
        const into = await attach(cluster.node(writer), volume);
        await writeAll(into, writes);
        into.socket.destroy();
        const from = await attach(cluster.node(reader), volume);
        for (const write of writes) {
          const back = await readRange(from, write.offset, write.data.length);
          expect(firstDifference(back, write.data), `${volume}: written via ${writer}, read via ${reader}, at ${write.offset}`).to.equal(-1);
        }
        from.socket.destroy();
      }
    }
    const status = await requestControl(path.join(cluster.directory, 'b.control'), { op: 'cluster' });
    expect(status.cluster?.arrayHolder).to.equal('a');
    expect(status.cluster?.mode).to.equal('mirrored');
  });

  it(`after kill -9 of the owner, the disks plus the partner's memory hold every acknowledged write (seed ${SEED})`, async () => {
    // A long lease: a frozen owner keeps the array, so the partner cannot take it over (and write
    // its mirror to the disks) while the test reads the disks as the owner left them.
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }], { pageBytes: PAGE, logLevel: 'warn', leaseMs: 60_000 });
    const random = seededRandom(SEED + 1);
    const model = Buffer.alloc(SIZE);
    const client = await attach(cluster.node('a'), 'vol0');
    for (let batch = 0; batch < 8; batch++) {
      const writes = laneWrites(random, 32, 64 * 1024);
      await writeAll(client, writes);
      for (const write of writes) write.data.copy(model, write.offset);
    }
    // The moment the last batch is acknowledged the owner stops dead (SIGSTOP: not one more disk
    // write; alive in /proc, so the partner waits for the lease instead of taking over at once). What
    // the disks and the partner hold now is what a kill -9 leaves; the kill follows once both are read.
    cluster.node('a').child.kill('SIGSTOP');
    const dump = path.join(cluster.directory, 'mirror.dump');
    const result = await requestControl(path.join(cluster.directory, 'b.control'), { op: 'mirror-dump', path: dump });
    expect(result.ok, result.error).to.equal(true);
    const mirrored = (await readMirrorDump(dump)).get('vol0') ?? new Map();
    // Write-back is real: without the partner's memory the disks alone would be missing writes.
    expect(mirrored.size, 'pages held only by the partner').to.be.greaterThan(0);
    const reader = await ArrayReader.fromConfig(cluster.configFile);
    const disks = await reader.readVolume('vol0', 0, SIZE);
    await cluster.node('a').kill();
    const survivor = Buffer.from(disks);
    for (const [page, { data }] of mirrored) data.copy(survivor, page * PAGE);
    expect(firstDifference(survivor, model), 'first byte where disks + mirror differ from what was acknowledged').to.equal(-1);
    expect(firstDifference(disks, model), 'the disks alone lack something (else this test proves nothing)').to.not.equal(-1);
  });

  it('three nodes: every node serves every volume, and a write acknowledged by the owner is in both partners\' memory', async () => {
    cluster = await startCluster(
      [{ name: 'vol0', sizeBytes: SIZE }, { name: 'vol1', sizeBytes: SIZE }, { name: 'vol2', sizeBytes: SIZE }],
      { nodes: ['a', 'b', 'c'], pageBytes: PAGE, logLevel: 'warn' },
    );
    const random = seededRandom(SEED + 2);
    const names = ['a', 'b', 'c'];
    for (const [index, volume] of ['vol0', 'vol1', 'vol2'].entries()) {
      const writer = names[(index + 2) % 3] as string;
      const reader = names[(index + 1) % 3] as string;
      const writes = laneWrites(random, 16, 100_000);
      const into = await attach(cluster.node(writer), volume);
      await writeAll(into, writes);
      into.socket.destroy();
      const from = await attach(cluster.node(reader), volume);
      for (const write of writes) expect(firstDifference(await readRange(from, write.offset, write.data.length), write.data), `${volume} via ${writer} → ${reader}`).to.equal(-1);
      from.socket.destroy();
    }
    // The owner of vol0 writes pages fresh; both partners must hold them at the acknowledgement.
    const client = await attach(cluster.node('a'), 'vol0');
    const page = randomBytes(random, PAGE);
    await writeAll(client, [{ offset: 5 * PAGE, data: page }]);
    for (const partner of ['b', 'c']) {
      const dump = path.join(cluster.directory, `mirror-${partner}.dump`);
      const result = await requestControl(path.join(cluster.directory, `${partner}.control`), { op: 'mirror-dump', path: dump });
      expect(result.ok, result.error).to.equal(true);
      const held = (await readMirrorDump(dump)).get('vol0')?.get(5);
      // Either still mirrored, or already destaged (then the disks have it): never neither.
      if (held) expect(held.data.equals(page), `node ${partner}'s mirror of page 5`).to.equal(true);
      else expect((await (await ArrayReader.fromConfig(cluster.configFile)).readVolume('vol0', 5 * PAGE, PAGE)).equals(page)).to.equal(true);
    }
    const status = await requestControl(path.join(cluster.directory, 'c.control'), { op: 'cluster' });
    expect(status.cluster?.partners?.map(({ name, live }) => ({ name, live }))).to.deep.equal([{ name: 'a', live: true }, { name: 'b', live: true }]);
    for (const partner of status.cluster?.partners ?? []) expect(partner.roundTripMs, `round trip to ${partner.name}`).to.be.a('number');
    client.socket.destroy();
  });

  it('the partner port drops garbage, truncated frames, a hello without the key and another version, and the node keeps serving', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }], { pageBytes: PAGE, logLevel: 'info' });
    const port = cluster.partnerPort('a');
    const challenge = (version: number): Buffer => {
      const frame = encodeBatch([{ type: MessageType.Challenge, requestId: 0, protocolVersion: PROTOCOL_VERSION, nonce: Buffer.alloc(32, 9) }]);
      frame.writeUInt16BE(version, 4); // the frame header's version
      frame.writeUInt16BE(version, 16); // and the challenge's own
      return frame;
    };
    const forgedHello = encodeBatch([{ type: MessageType.Hello, requestId: 0, clusterId: clusterUuid('test-cluster'), nodeId: 1, epoch: 0, protocolVersion: PROTOCOL_VERSION, proof: Buffer.alloc(32) }]);
    const send = async (bytes: Buffer, endAfter: boolean): Promise<Buffer> => {
      const socket = net.connect(port, '127.0.0.1');
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write(bytes);
      if (endAfter) socket.end();
      await new Promise<void>((resolve) => socket.once('close', () => resolve()).once('error', () => resolve()));
      return Buffer.concat(received);
    };
    await send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), false);
    await new Promise((resolve) => setTimeout(resolve, 1100)); // one refusal line a second
    await send(challenge(PROTOCOL_VERSION).subarray(0, 20), true);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const forged = await send(Buffer.concat([challenge(PROTOCOL_VERSION), forgedHello]), false);
    expect(forged.length, 'only the node\'s own challenge comes back').to.equal(16 + 34);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const otherVersion = await send(challenge(PROTOCOL_VERSION + 1), false);
    expect(otherVersion.readUInt16BE(6), 'the challenge tells the version').to.equal(MessageType.Challenge);
    const log = cluster.node('a').log();
    expect(log).to.match(/partner port: dropping .*bad frame magic/);
    expect(log).to.match(/partner port: dropping .*closed during the handshake/);
    expect(log).to.match(/partner port: dropping .*does not prove it holds the partner key/);
    expect(log).to.match(new RegExp(`partner port: dropping .*speaks partner protocol version ${PROTOCOL_VERSION + 1}`));
    // Still serving, and still mirrored with its real partner.
    const client = await attach(cluster.node('b'), 'vol0');
    const data = Buffer.alloc(8192, 0x5a);
    await writeAll(client, [{ offset: 4096, data }]);
    expect((await readRange(client, 4096, 8192)).equals(data)).to.equal(true);
    const status = await requestControl(path.join(cluster.directory, 'a.control'), { op: 'cluster' });
    expect(status.cluster?.partners?.map(({ name, live }) => ({ name, live }))).to.deep.equal([{ name: 'b', live: true }]);
  });

  it('a partner that hangs (SIGSTOP) stops holding up writes once its lease has run out; run again, it is fenced; restarted, it rejoins', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }], { pageBytes: PAGE, logLevel: 'info', partnerTimeoutMs: 600 });
    const a = cluster.node('a');
    const b = cluster.node('b');
    const client = await attach(a, 'vol0');
    await writeAll(client, [{ offset: 0, data: Buffer.alloc(PAGE, 1) }]);
    b.child.kill('SIGSTOP');
    const bExit = new Promise<number | null>((resolve) => b.child.once('exit', (code) => resolve(code)));
    try {
      // Written while b hangs: written through once b is declared gone, acknowledged once b's lease
      // has run out (b holds mirrors of the time before and could take the array over).
      const data = Buffer.alloc(PAGE, 0x44);
      const started = Date.now();
      await writeAll(client, [{ offset: PAGE, data }]);
      const waitedMs = Date.now() - started;
      expect(a.log()).to.match(/nothing heard for \d+ ms \(limit 600\)/);
      expect(waitedMs, 'the write waited for the partner timeout and the lease, not much more').to.be.below(8000);
      const reader = await ArrayReader.fromConfig(cluster.configFile);
      expect((await reader.readVolume('vol0', PAGE, PAGE)).equals(data), 'acknowledged with b hung: on the disks').to.equal(true);
    } finally {
      b.child.kill('SIGCONT');
    }
    // b runs again with its lease run out: it may have been taken over, so it stops (EX_TEMPFAIL).
    expect(await bExit, 'b exits as fenced').to.equal(75);
    expect(b.log()).to.match(/fenced: this node's lease ran out/);
    await cluster.start('b');
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      const status = await requestControl(path.join(cluster.directory, 'a.control'), { op: 'cluster' });
      if (status.cluster?.mode === 'mirrored' && status.cluster.resync === 'done') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const after = (await requestControl(path.join(cluster.directory, 'a.control'), { op: 'cluster' })).cluster;
    expect(after?.mode).to.equal('mirrored');
    expect(after?.resync, 'a resynced with the restarted b').to.equal('done');
    client.socket.destroy();
  });

  it('with its partner gone the owner goes write-through and says so; with it back, mirrored again', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }], { pageBytes: PAGE, logLevel: 'info' });
    await cluster.node('b').stop();
    const a = cluster.node('a');
    const client = await attach(a, 'vol0');
    const data = Buffer.alloc(PAGE, 0x33);
    await writeAll(client, [{ offset: 0, data }]);
    // Acknowledged with no partner: it must already be on the disks.
    const reader = await ArrayReader.fromConfig(cluster.configFile);
    expect((await reader.readVolume('vol0', 0, PAGE)).equals(data), 'write-through put it on the disks before the ack').to.equal(true);
    expect(a.log()).to.include('no live partner: writes are acknowledged once on the disks (write-through)');
    await cluster.start('b');
    const status = await requestControl(path.join(cluster.directory, 'a.control'), { op: 'cluster' });
    expect(status.cluster?.mode).to.equal('mirrored');
    client.socket.destroy();
  });
});
