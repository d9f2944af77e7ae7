// Proves that SIGKILL in the middle of heavy writes loses nothing acknowledged: after each kill the
// node reassembles the array (resyncing dirty regions), every acknowledged block reads back, and an
// offline scrub finds parity and checksums consistent with the data (no write hole).
import { expect } from 'chai';
import fs from 'node:fs/promises';
import { silentLogger } from '../../src/observe/index.js';
import { assembleArray, scrubArray } from '../../src/storage/index.js';
import { ArrayReader } from '../support/array-reader.js';
import { launch, startNode, type FtvmNode } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';
import { randomInt, seededRandom } from '../support/seeded-random.js';

const BLOCK = 4096;
const VOLUME_BYTES = 16 << 20;
const BLOCKS = VOLUME_BYTES / BLOCK;
const CYCLES = Number(process.env.FTVM_CRASH_CYCLES ?? 4);
const SEED = Number(process.env.FTVM_TEST_SEED ?? 4242);

/** Per block: the acknowledged content, and content a write in flight at the kill may have left. */
interface BlockModel {
  acknowledged: number;
  inFlight: number | null;
}

/** Block content is a tag repeated: cheap to write, to check, and to tell apart. */
function blockOf(tag: number): Buffer {
  const out = Buffer.allocUnsafe(BLOCK);
  for (let i = 0; i < BLOCK; i += 4) out.writeUInt32BE(tag, i);
  return out;
}

describe('crash: SIGKILL during writes', function () {
  this.timeout(300_000);
  let node: FtvmNode | null = null;

  after(async () => {
    await node?.kill();
    if (node) await fs.rm(node.directory, { recursive: true, force: true });
  });

  it(`keeps every acknowledged write over ${CYCLES} kill/restart cycles, and scrub finds nothing to fix (seed ${SEED})`, async () => {
    const random = seededRandom(SEED);
    node = await startNode([{ name: 'vol0', sizeBytes: VOLUME_BYTES }], { logLevel: 'warn' });
    const model: BlockModel[] = Array.from({ length: BLOCKS }, () => ({ acknowledged: 0, inFlight: null }));
    let tag = 1;
    let acknowledgedWrites = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const client = await RawClient.connect({ port: node.port });
      await client.attach('vol0');
      const busy = new Set<number>();
      const pending = new Map<bigint, { first: number; count: number; tag: number }>();
      let handle = 1n;
      const issue = (): void => {
        const count = 1 + randomInt(random, 16);
        const first = randomInt(random, BLOCKS - count);
        for (let b = first; b < first + count; b++) if (busy.has(b)) return;
        const writeTag = tag++;
        for (let b = first; b < first + count; b++) {
          busy.add(b);
          (model[b] as BlockModel).inFlight = writeTag;
        }
        pending.set(handle, { first, count, tag: writeTag });
        client.request(1, { handle: handle++, offset: first * BLOCK, payload: Buffer.concat(Array.from({ length: count }, () => blockOf(writeTag))), flags: random() < 0.2 ? 1 : 0 });
      };
      const killAtMs = Date.now() + 150 + randomInt(random, 500);
      const killer = setTimeout(() => node?.child.kill('SIGKILL'), killAtMs - Date.now());
      try {
        for (let i = 0; i < 16; i++) issue();
        for (;;) {
          const reply = await client.readReply();
          const write = pending.get(reply.handle);
          if (!write) throw new Error(`reply for unknown handle ${reply.handle}`);
          expect(reply.error, 'write error').to.equal(0);
          pending.delete(reply.handle);
          acknowledgedWrites++;
          for (let b = write.first; b < write.first + write.count; b++) {
            busy.delete(b);
            const entry = model[b] as BlockModel;
            entry.acknowledged = write.tag;
            if (entry.inFlight === write.tag) entry.inFlight = null;
          }
          issue();
          issue();
        }
      } catch (error) {
        if (!/connection closed/.test((error as Error).message)) throw error;
      } finally {
        clearTimeout(killer);
        client.close();
      }
      await node.kill();
      node = await launch(node.configFile, 'a', { host: node.host, port: node.port, directory: node.directory, logLevel: 'warn' });
      expect(node.log(), `cycle ${cycle}: the restart noticed the unclean stop`).to.match(/not stopped cleanly: resyncing/);
      await verify(node, model, `cycle ${cycle} (seed ${SEED})`);
    }
    expect(acknowledgedWrites, 'the kills did not all come before any write').to.be.greaterThan(CYCLES * 10);
    await node.stop();
    const array = await assembleArray(await memberPaths(node), { logger: silentLogger(), now: () => Date.now() });
    const report = await scrubArray(array);
    await array.stop();
    expect(report, `scrub after ${CYCLES} crashes (seed ${SEED})`).to.include({ checksumRepairs: 0, parityRepairs: 0, unrecoverableBlocks: 0 });
  });
});

async function memberPaths(node: FtvmNode): Promise<string[]> {
  const { loadConfig } = await import('../../src/config/index.js');
  return (await loadConfig(node.configFile)).storage.members;
}

/** Reads the whole volume over NBD and checks every block against the model. */
async function verify(node: FtvmNode, model: BlockModel[], what: string): Promise<void> {
  const client = await RawClient.connect({ port: node.port });
  await client.attach('vol0');
  const step = 256;
  for (let first = 0; first < model.length; first += step) {
    client.request(0, { handle: BigInt(first), offset: first * BLOCK, length: step * BLOCK });
    const reply = await client.readReply(step * BLOCK);
    expect(reply.error, `${what}: read error`).to.equal(0);
    for (let b = first; b < first + step; b++) {
      const found = reply.data.readUInt32BE((b - first) * BLOCK);
      const entry = model[b] as BlockModel;
      const allowed = entry.inFlight === null ? [entry.acknowledged] : [entry.acknowledged, entry.inFlight];
      if (!allowed.includes(found) || !reply.data.subarray((b - first) * BLOCK, (b - first + 1) * BLOCK).equals(blockOf(found))) {
        throw new Error(`${what}: block ${b} holds tag ${found}, expected ${allowed.join(' or ')}`);
      }
      // What the kill left is now the truth for this block.
      entry.acknowledged = found;
      entry.inFlight = null;
    }
  }
  client.close();
  const reader = await ArrayReader.fromConfig(node.configFile);
  expect((await reader.allocation('vol0')).sizeBytes).to.equal(model.length * BLOCK);
}
