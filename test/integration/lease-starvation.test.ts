// Proves a survivor keeps its lease while it takes the array over with the disk under siege: a
// co-located writer (dd with O_DSYNC, as another tenant of the same disk would) runs before the kill
// and through the takeover, the resync of the dead holder's dirty regions and more writes; the lease
// is at its default length. A lease write that queued behind data I/O, or member I/O that went on at
// full depth while a renewal was late, fenced the survivor here before (kernel VM test, renewals of
// over a second during the resync).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { requestControl, type ClusterStatus } from '../../src/cluster/index.js';
import { startCluster, type FtvmCluster, type FtvmNode } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const SEED = Number(process.env.FTVM_TEST_SEED ?? 11);
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const LEASE_MS = 2000;

async function clusterStatus(node: FtvmNode): Promise<ClusterStatus> {
  const result = await requestControl(path.join(node.directory, `${path.basename(node.socketPath, '.sock')}.control`), { op: 'cluster' });
  return result.cluster as ClusterStatus;
}

/** Rewrites a 256 MiB file in 1 MiB synchronous writes, over and over, until killed. */
function diskHog(directory: string): ChildProcess {
  const file = path.join(directory, 'hog.bin');
  return spawn('bash', ['-c', `while :; do dd if=/dev/zero of='${file}' bs=1M count=256 oflag=dsync conv=notrunc status=none; done`], { stdio: 'ignore' });
}

/** Random writes all over the volume, 32 in flight; the model gets each once acknowledged. */
async function writeBurst(client: RawClient, model: Buffer, random: () => number, count: number): Promise<void> {
  const writes = Array.from({ length: count }, (_, index) => {
    const lane = SIZE / count;
    const length = 1 + randomInt(random, 128 * 1024);
    return { offset: index * lane + randomInt(random, lane - length), data: randomBytes(random, length) };
  });
  let handle = 1n;
  for (const write of writes) client.request(NBD_CMD_WRITE, { handle: handle++, offset: write.offset, payload: write.data });
  for (let i = 0; i < writes.length; i++) expect((await client.readReply()).error, 'write error').to.equal(0);
  for (const write of writes) write.data.copy(model, write.offset);
}

describe('lease under a co-located disk writer (real processes, default lease)', function () {
  this.timeout(180_000);
  let cluster: FtvmCluster | null = null;
  let hog: ChildProcess | null = null;

  afterEach(async function () {
    hog?.kill('SIGKILL');
    hog = null;
    if (this.currentTest?.state === 'failed') for (const node of cluster?.nodes.values() ?? []) process.stderr.write(node.log());
    await cluster?.stop();
    cluster = null;
  });

  it('the survivor takes the array over, resyncs and serves with dd -oflag=dsync hammering the same disk, and is never fenced', async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: SIZE }], { partnerTimeoutMs: 500, leaseMs: LEASE_MS, logLevel: 'info' });
    const a = cluster.node('a');
    const b = cluster.node('b');
    const random = seededRandom(SEED);
    const model = Buffer.alloc(SIZE);
    const client = await RawClient.connect({ port: b.port });
    await client.attach('vol0');
    hog = diskHog(cluster.directory);
    // Lease margin seen by the survivor, sampled all along: what it had left at worst.
    let leastRemainingMs = Number.POSITIVE_INFINITY;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const status = await clusterStatus(b).catch(() => null);
        if (status) leastRemainingMs = Math.min(leastRemainingMs, status.leaseRemainingMs);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    for (let burst = 0; burst < 6; burst++) await writeBurst(client, model, random, 32);
    // The holder dies with its writes queued for destage and its bitmap regions dirty: the survivor
    // resyncs them while it takes over, with the hog still writing.
    await a.kill();
    for (let burst = 0; burst < 12; burst++) await writeBurst(client, model, random, 32);
    const started = Date.now();
    while (Date.now() - started < 3 * LEASE_MS) await writeBurst(client, model, random, 16);
    sampling = false;
    await sampler;
    const status = await clusterStatus(b);
    expect([status.arrayHolder, status.mode], 'b holds the array, alone').to.deep.equal(['b', 'write-through']);
    expect(b.child.exitCode, 'b still running').to.equal(null);
    expect(b.log(), 'b was fenced').to.not.match(/fenced/);
    expect(leastRemainingMs, 'lease left at worst, ms').to.be.greaterThan(0);
    for (let offset = 0; offset < SIZE; offset += MiB) {
      client.request(NBD_CMD_READ, { handle: 9n, offset, length: MiB });
      const reply = await client.readReply(MiB);
      expect(reply.error, 'read error').to.equal(0);
      expect((reply.data as Buffer).equals(model.subarray(offset, offset + MiB)), `bytes at ${offset}`).to.equal(true);
    }
    client.close();
    process.stdout.write(`      (least lease left: ${leastRemainingMs} ms of ${LEASE_MS}; late-renewal warnings: ${(b.log().match(/a lease renewal is late/g) ?? []).length})\n`);
  });
});
