// Proves a node's death loses nothing acknowledged and its partner carries on (real processes,
// SIGKILL): the survivor takes over the shared array and the dead node's volumes under writes in
// flight, raises the epoch and serves the dead node's NBD address; the returning node gets its volumes
// back (failback); with the partner link cut but both processes alive, only one side acknowledges.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { requestControl, type ClusterStatus } from '../../src/cluster/index.js';
import { freePort, launch, startCluster, type FtvmCluster, type FtvmNode } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const SEED = Number(process.env.FTVM_TEST_SEED ?? 5);
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const LANES = 16;

interface Model {
  bytes: Buffer;
}

async function attach(port: number, volume: string): Promise<RawClient> {
  const client = await RawClient.connect({ port });
  await client.attach(volume);
  return client;
}

/** One round: a random write in each lane, all in flight at once; applied to the model once all are acknowledged. */
async function writeRound(client: RawClient, model: Model, random: () => number): Promise<void> {
  const lane = SIZE / LANES;
  const writes = Array.from({ length: LANES }, (_, index) => {
    const length = 1 + randomInt(random, 96 * 1024);
    return { offset: index * lane + randomInt(random, lane - length), data: randomBytes(random, length) };
  });
  let handle = 1n;
  for (const write of writes) client.request(NBD_CMD_WRITE, { handle: handle++, offset: write.offset, payload: write.data });
  for (let i = 0; i < writes.length; i++) expect((await client.readReply()).error, 'write error').to.equal(0);
  for (const write of writes) write.data.copy(model.bytes, write.offset);
}

async function readAll(client: RawClient): Promise<Buffer> {
  const out = Buffer.alloc(SIZE);
  const step = MiB;
  for (let offset = 0; offset < SIZE; offset += step) {
    client.request(NBD_CMD_READ, { handle: 7n, offset, length: step });
    const reply = await client.readReply(step);
    expect(reply.error, 'read error').to.equal(0);
    (reply.data as Buffer).copy(out, offset);
  }
  return out;
}

function expectSame(actual: Buffer, model: Model, what: string): void {
  if (actual.equals(model.bytes)) return;
  let at = 0;
  while (actual[at] === model.bytes[at]) at++;
  expect.fail(`${what}: first difference at byte ${at} (seed ${SEED})`);
}

async function clusterStatus(node: FtvmNode): Promise<ClusterStatus> {
  const result = await requestControl(path.join(node.directory, `${path.basename(node.socketPath, '.sock')}.control`), { op: 'cluster' });
  return result.cluster as ClusterStatus;
}

async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function ownerOf(status: ClusterStatus, volume: string): string | undefined {
  return status.volumes.find((entry) => entry.name === volume)?.owner;
}

describe('failover and failback (real processes, kill -9)', function () {
  this.timeout(180_000);
  let cluster: FtvmCluster | null = null;
  const extra: FtvmNode[] = [];

  afterEach(async function () {
    // A failure is diagnosed from the nodes' logs.
    if (this.currentTest?.state === 'failed') for (const node of [...(cluster?.nodes.values() ?? []), ...extra]) process.stderr.write(node.log());
    for (const node of extra.splice(0)) await node.kill();
    await cluster?.stop();
    cluster = null;
  });

  it('kill -9 of the array holder under writes: the survivor takes over the array and its volume, the epoch rises, nothing acknowledged is lost', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }, { name: 'vol1', sizeBytes: SIZE }], { partnerTimeoutMs: 500, takeoverAddresses: true, leaseMs: 8000 });
    const a = cluster.node('a');
    const b = cluster.node('b');
    const before = await clusterStatus(b);
    expect([before.arrayHolder, ownerOf(before, 'vol0'), ownerOf(before, 'vol1')]).to.deep.equal(['a', 'a', 'b']);
    const random = seededRandom(SEED);
    const models = { vol0: { bytes: Buffer.alloc(SIZE) }, vol1: { bytes: Buffer.alloc(SIZE) } };
    const clients = { vol0: await attach(b.port, 'vol0'), vol1: await attach(b.port, 'vol1') };
    for (let round = 0; round < 3; round++) for (const volume of ['vol0', 'vol1'] as const) await writeRound(clients[volume], models[volume], random);
    // The kill lands while rounds are in flight on both volumes through b.
    const killAfterMs = 20 + randomInt(random, 200);
    const killed = new Promise<void>((resolve) => setTimeout(() => void a.kill().then(resolve), killAfterMs));
    for (let round = 0; round < 12; round++) {
      await Promise.all((['vol0', 'vol1'] as const).map((volume) => writeRound(clients[volume], models[volume], random)));
    }
    await killed;
    for (const volume of ['vol0', 'vol1'] as const) await writeRound(clients[volume], models[volume], random);
    const after = await clusterStatus(b);
    expect([after.arrayHolder, ownerOf(after, 'vol0'), ownerOf(after, 'vol1'), after.mode]).to.deep.equal(['b', 'b', 'b', 'write-through']);
    expect(after.epoch).to.be.greaterThan(before.epoch);
    for (const volume of ['vol0', 'vol1'] as const) expectSame(await readAll(clients[volume]), models[volume], `${volume} through b`);
    // b serves a's NBD address now (takeoverAddresses): a client of a's port finds the same data.
    const onDeadAddress = await until('node a’s address answers', async () => attach(a.port, 'vol0'));
    expectSame(await readAll(onDeadAddress), models.vol0, 'vol0 through a’s address, served by b');
    onDeadAddress.close();
    expect(b.log()).to.match(/took over volume vol0 from node a at epoch \d+ \(\d+ mirrored page\(s\) destaged and kept resident\)/);

    // Failback: a returns, resyncs as a partner, gets vol0 back; then b dies and a takes over everything.
    const returned = await cluster.start('a');
    await until('vol0 is served by a again', async () => (ownerOf(await clusterStatus(returned), 'vol0') === 'a' && (await clusterStatus(b)).mode === 'mirrored' ? true : null));
    await until('b gave a its address back', async () => (returned.log().includes(`nbd listening on 127.0.0.1:${a.port}`) ? true : null));
    // A warm handover: b read all of vol0 above, so every page of it was resident there, and b
    // copied them to a before it let go; a serves them from memory (the reads below check the bytes).
    const copied = Number(/volume vol0: (\d+) resident page\(s\) copied to node a \(/.exec(b.log())?.[1] ?? 0);
    const installed = Number(/volume vol0: (\d+) page\(s\) copied by its previous owner are resident here/.exec(returned.log())?.[1] ?? 0);
    expect(copied, 'pages b copied to a').to.be.greaterThan(0);
    expect(installed, 'pages a installed').to.equal(copied);
    expect((await clusterStatus(returned)).residentPages).to.be.at.least(installed);
    const throughA = await attach(returned.port, 'vol0');
    await writeRound(throughA, models.vol0, random);
    await writeRound(clients.vol1, models.vol1, random);
    expectSame(await readAll(clients.vol0), models.vol0, 'vol0 through b after failback');
    await b.kill();
    await until('a holds the array and both volumes', async () => {
      const status = await clusterStatus(returned);
      return status.arrayHolder === 'a' && ownerOf(status, 'vol1') === 'a' ? true : null;
    });
    const vol1ThroughA = await attach(returned.port, 'vol1');
    expectSame(await readAll(vol1ThroughA), models.vol1, 'vol1 through a after b died');
    expectSame(await readAll(throughA), models.vol0, 'vol0 through a after b died');
    for (const client of [clients.vol0, clients.vol1, throughA, vol1ThroughA]) client.close();
  });

  it('kill -9 of an owner that does not hold the array: the holder takes over its volume under writes through itself', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }, { name: 'vol1', sizeBytes: SIZE }], { partnerTimeoutMs: 500 });
    const a = cluster.node('a');
    const b = cluster.node('b');
    const random = seededRandom(SEED + 1);
    const model = { bytes: Buffer.alloc(SIZE) };
    const client = await attach(a.port, 'vol1');
    for (let round = 0; round < 3; round++) await writeRound(client, model, random);
    const killed = new Promise<void>((resolve) => setTimeout(() => void b.kill().then(resolve), 10 + randomInt(random, 100)));
    for (let round = 0; round < 10; round++) await writeRound(client, model, random);
    await killed;
    await writeRound(client, model, random);
    const status = await clusterStatus(a);
    expect([status.arrayHolder, ownerOf(status, 'vol1'), status.mode]).to.deep.equal(['a', 'a', 'write-through']);
    expectSame(await readAll(client), model, 'vol1 through a');
    client.close();
  });

  it('partner link cut, both processes alive: the side cut off from the array holder gives way; no write is acknowledged by both; after healing the data equals the model', async () => {
    const proxyPort = await freePort();
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }, { name: 'vol1', sizeBytes: SIZE }], { partnerTimeoutMs: 500 });
    const a2 = cluster.node('a');
    // Node b runs from a config whose address for a's partner port is a proxy the test can cut.
    const config = JSON.parse(await fs.readFile(cluster.configFile, 'utf8')) as { nodes: Array<{ partner: { host: string; port: number } }> };
    const proxy = new CuttableProxy(config.nodes[0]?.partner as { host: string; port: number });
    await proxy.listen(proxyPort);
    const bPorts = { nbd: cluster.node('b').port };
    try {
      (config.nodes[0] as { partner: { host: string; port: number } }).partner = { host: '127.0.0.1', port: proxyPort };
      const configB = path.join(cluster.directory, 'cluster-b.json');
      await fs.writeFile(configB, JSON.stringify(config, null, 2));
      await cluster.node('b').stop();
      cluster.nodes.delete('b');
      const b = await launch(configB, 'b', { host: '127.0.0.1', port: bPorts.nbd, directory: cluster.directory });
      extra.push(b);
      await until('vol1 is served by b', async () => (ownerOf(await clusterStatus(b), 'vol1') === 'b' ? true : null));
      const random = seededRandom(SEED + 2);
      const model = { bytes: Buffer.alloc(SIZE) };
      const viaB = await attach(bPorts.nbd, 'vol1');
      for (let round = 0; round < 3; round++) await writeRound(viaB, model, random);

      proxy.cut();
      const cutAt = Date.now();
      // b: every write from now on waits (no partner to mirror to, no holder to write through) and
      // is never acknowledged; b gives way and is fenced.
      const lastTry = Buffer.alloc(4096, 0x5a);
      viaB.request(NBD_CMD_WRITE, { handle: 900n, offset: 0, payload: lastTry });
      const bAnswer = viaB.readReply().then(
        (reply) => ({ at: Date.now(), error: reply.error }),
        () => null,
      );
      const exit = await new Promise<number | null>((resolve) => b.child.once('exit', (code) => resolve(code)));
      expect(exit, 'b exits as fenced (EX_TEMPFAIL)').to.equal(75);
      const answered = await bAnswer;
      if (answered) expect(answered.error, 'b acknowledged a write after the cut').to.not.equal(0);
      expect(b.log()).to.match(/giving way/).and.match(/fenced:/);
      // a takes vol1 over once b's lease has run out, and acknowledges from then on only.
      const viaA = await attach(a2.port, 'vol1');
      await writeRound(viaA, model, random);
      const firstAckByA = Date.now();
      expect(firstAckByA - cutAt).to.be.greaterThan(1000);
      expect((await clusterStatus(a2)).volumes.find((entry) => entry.name === 'vol1')?.owner).to.equal('a');
      // The unacknowledged write at offset 0 either landed or not; the model takes what is there.
      const seen = await readAll(viaA);
      const landed = seen.subarray(0, 4096).equals(lastTry);
      if (landed) lastTry.copy(model.bytes, 0);
      expectSame(seen, model, 'vol1 through a after the cut');

      // Heal: b starts again (as a supervisor would), rejoins and gets vol1 back.
      proxy.heal();
      const b2 = await launch(configB, 'b', { host: '127.0.0.1', port: bPorts.nbd, directory: cluster.directory });
      extra.push(b2);
      await until('vol1 is back on b', async () => (ownerOf(await clusterStatus(b2), 'vol1') === 'b' ? true : null));
      const again = await attach(bPorts.nbd, 'vol1');
      await writeRound(again, model, random);
      expectSame(await readAll(viaA), model, 'vol1 through a after healing');
      for (const client of [viaB, viaA, again]) client.close();
    } finally {
      for (const node of extra.splice(0).reverse()) await node.stop();
      await proxy.close();
    }
  });
});

/** A TCP proxy for the partner link: cut() drops every connection and refuses new ones until heal(). */
class CuttableProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private cutOff = false;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((inbound) => {
      if (this.cutOff) return inbound.destroy();
      const outbound = net.connect(this.target.port, this.target.host);
      for (const socket of [inbound, outbound]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => undefined);
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      inbound.on('close', () => outbound.destroy());
      outbound.on('close', () => inbound.destroy());
    });
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve));
  }

  cut(): void {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
  }

  heal(): void {
    this.cutOff = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
