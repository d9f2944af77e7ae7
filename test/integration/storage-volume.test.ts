// Proves a volume on the RAID stack behaves like a disk at byte granularity: random unaligned and
// concurrent writes, zeroes and reads equal a model, through the cache and the destager, and what
// was acknowledged is on the member files after the array is stopped and reassembled.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import { silentLogger } from '../../src/observe/index.js';
import { assembleArray, provisionArray, StorageStack, StorageVolume, DEFAULT_STACK_OPTIONS, NODE_STATE_REGION_BYTES } from '../../src/storage/index.js';
import { makeTempDirectory } from '../support/ftvm-process.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';

const deps = { logger: silentLogger(), now: () => Date.now() };
const SIZE = 4 << 20;

describe('StorageVolume on raid5', function () {
  this.timeout(60_000);
  let directory = '';
  let members: string[] = [];

  beforeEach(async () => {
    directory = await makeTempDirectory('ftvm-volume-');
    members = await provisionArray(directory, { level: 'raid5', memberCount: 3, volumeBytes: [SIZE] }, deps);
  });
  afterEach(async () => fs.rm(directory, { recursive: true, force: true }));

  async function open(cacheBytes = 1 << 20): Promise<{ stack: StorageStack; volume: StorageVolume }> {
    const stack = new StorageStack(await assembleArray(members, deps), { ...DEFAULT_STACK_OPTIONS, capacityBytes: cacheBytes, readAheadBytes: 64 << 10 });
    return { stack, volume: new StorageVolume(stack, 'v', NODE_STATE_REGION_BYTES, SIZE) };
  }

  for (const seed of [1, 2, 3]) {
    it(`random unaligned concurrent writes, zeroes and reads equal the model (seed ${seed})`, async () => {
      const random = seededRandom(seed);
      const model = Buffer.alloc(SIZE);
      const { stack, volume } = await open(64 << 10);
      for (let round = 0; round < 8; round++) {
        const operations: Array<Promise<void>> = [];
        for (let i = 0; i < 24; i++) {
          const length = 1 + randomInt(random, 20000);
          const offset = randomInt(random, SIZE - length);
          if (random() < 0.15) {
            model.fill(0, offset, offset + length);
            operations.push(volume.zero(offset, length, { fua: false, noHole: false, fastZero: false }));
          } else {
            const data = randomBytes(random, length);
            data.copy(model, offset);
            const cut = randomInt(random, length);
            operations.push(volume.write(offset, [data.subarray(0, cut), data.subarray(cut)], random() < 0.2));
          }
        }
        // Writes of one round may overlap; the model follows issue order, which the block locks keep.
        await Promise.all(operations);
        const probeLength = 1 + randomInt(random, 50000);
        const probeOffset = randomInt(random, SIZE - probeLength);
        const probe = Buffer.alloc(probeLength);
        await volume.read(probeOffset, probe);
        expect(probe.equals(model.subarray(probeOffset, probeOffset + probeLength)), `seed ${seed} round ${round}`).to.equal(true);
      }
      const whole = Buffer.alloc(SIZE);
      await volume.read(0, whole);
      expect(whole.equals(model), `seed ${seed}: whole volume`).to.equal(true);
      await stack.stop();
      const reopened = await open();
      const again = Buffer.alloc(SIZE);
      await reopened.volume.read(0, again);
      expect(again.equals(model), `seed ${seed}: after reassembly`).to.equal(true);
      await reopened.stack.stop();
    });
  }

  it('acknowledges a write only once it is on the member files (write-through)', async () => {
    const { stack, volume } = await open();
    await volume.write(12345, [Buffer.from('durable bytes')], false);
    expect(stack.destager.dirtyBlocks).to.equal(0);
    await stack.array.abandon();
    const reopened = await open();
    const out = Buffer.alloc(13);
    await reopened.volume.read(12345, out);
    expect(out.toString()).to.equal('durable bytes');
    await reopened.stack.stop();
  });

  it('refuses fast zeroing with ENOTSUP and leaves the data', async () => {
    const { stack, volume } = await open();
    await volume.write(0, [Buffer.alloc(8192, 7)], false);
    const error = (await volume.zero(0, 8192, { fua: false, noHole: false, fastZero: true }).catch((caught: unknown) => caught)) as { code?: string };
    expect(error.code).to.equal('ENOTSUP');
    const out = Buffer.alloc(8192);
    await volume.read(0, out);
    expect(out.every((byte) => byte === 7)).to.equal(true);
    await stack.stop();
  });
});
