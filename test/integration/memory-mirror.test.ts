// Proves the mirrored memory manager keeps the promise: a write is acknowledged only once the
// partner holds it (or, with no partner, once it is on the disks), so after the owner dies every
// acknowledged byte is on the disks or in the partner's mirror. Also: a working set larger than
// the frame pool works, and a partner out of space makes writes fall back to write-through.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import { FramePool, LinkReplicator, MemoryManager, MemoryVolume, MirrorStore } from '../../src/memory/index.js';
import { silentLogger } from '../../src/observe/index.js';
import { connectPartner, PartnerListener, type PartnerLink } from '../../src/partner/index.js';
import { testContext } from '../support/partner-security.js';
import { assembleArray, DEFAULT_STACK_OPTIONS, NODE_STATE_REGION_BYTES, provisionArray, StorageStack } from '../../src/storage/index.js';
import { makeTempDirectory } from '../support/ftvm-process.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const PAGE = 64 * 1024;
const GUID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const deps = { logger: silentLogger(), now: () => Date.now() };
const SEED = Number(process.env.FTVM_TEST_SEED ?? 9);

interface Owner {
  stack: StorageStack;
  manager: MemoryManager;
  volume: MemoryVolume;
  link: PartnerLink | null;
}

describe('mirrored memory manager', function () {
  this.timeout(60_000);
  let directory = '';
  let members: string[] = [];
  let listener: PartnerListener | null = null;

  beforeEach(async () => {
    directory = await makeTempDirectory('ftvm-memory-');
    members = await provisionArray(directory, { level: 'raid5', memberCount: 3, volumeBytes: [SIZE] }, deps);
  });

  afterEach(async () => {
    await listener?.close();
    listener = null;
    await fs.rm(directory, { recursive: true, force: true });
  });

  /** Node B: a partner listener whose responder is a mirror store. */
  async function partner(poolBytes: number): Promise<{ mirror: MirrorStore; port: number }> {
    const mirror = new MirrorStore(new FramePool(poolBytes));
    listener = new PartnerListener(testContext({ clusterId: CLUSTER, nodeId: 2, epoch: 1 }, (message) => mirror.handle(message), deps.logger));
    await listener.listen({ host: '127.0.0.1', port: 0 });
    return { mirror, port: listener.port };
  }

  /** Node A: storage, memory manager, and (with a port) a link to its partner. */
  async function owner(poolBytes: number, partnerPort: number | null): Promise<Owner> {
    const stack = new StorageStack(await assembleArray(members, deps), DEFAULT_STACK_OPTIONS);
    const replicator = new LinkReplicator();
    let link: PartnerLink | null = null;
    if (partnerPort !== null) {
      link = await connectPartner({ host: '127.0.0.1', port: partnerPort, nodeId: 2 }, testContext({ clusterId: CLUSTER, nodeId: 1, epoch: 1 }, () => null, deps.logger));
      replicator.add(link);
    }
    const manager = new MemoryManager(new FramePool(poolBytes), stack, replicator, { highWatermarkPages: 8, lowWatermarkPages: 2 });
    manager.createAllocation({ guid: GUID, arrayOffset: NODE_STATE_REGION_BYTES, sizeBytes: SIZE, pageBytes: PAGE });
    return { stack, manager, volume: new MemoryVolume(manager, 'vol', GUID, PAGE, SIZE), link };
  }

  /** Rounds of concurrent, non-overlapping, unaligned writes; the model takes a round once all of it is acknowledged. */
  async function writeRounds(volume: MemoryVolume, model: Buffer, rounds: number, random: () => number): Promise<void> {
    for (let round = 0; round < rounds; round++) {
      const slice = SIZE / 16;
      await Promise.all(
        [...Array(16).keys()].map(async (lane) => {
          const length = 1 + randomInt(random, slice / 2);
          const offset = lane * slice + randomInt(random, slice - length);
          const data = randomBytes(random, length);
          await volume.write(offset, [data], false);
          data.copy(model, offset);
        }),
      );
    }
  }

  /** What a survivor sees: the disks (after resync) with the partner's mirrored pages on top. */
  async function survivorView(mirror: MirrorStore | null): Promise<Buffer> {
    const stack = new StorageStack(await assembleArray(members, deps), DEFAULT_STACK_OPTIONS);
    const view = Buffer.alloc(SIZE);
    await stack.readBlocks(NODE_STATE_REGION_BYTES, view);
    await stack.stop();
    for (const [page, { data }] of mirror?.pagesOf(GUID) ?? new Map()) data.copy(view, page * PAGE);
    return view;
  }

  function expectSame(view: Buffer, model: Buffer, what: string): void {
    if (view.equals(model)) return;
    let first = 0;
    while (view[first] === model[first]) first++;
    throw new Error(`${what}: byte ${first} (page ${Math.floor(first / PAGE)}) differs`);
  }

  it(`after the owner dies, disks + partner mirror hold every acknowledged write (seed ${SEED})`, async () => {
    const random = seededRandom(SEED);
    const { mirror, port } = await partner(16 * MiB);
    const a = await owner(4 * MiB, port);
    const model = Buffer.alloc(SIZE);
    await writeRounds(a.volume, model, 12, random);
    const read = Buffer.alloc(SIZE);
    await a.volume.read(0, read);
    expectSame(read, model, 'reads through the owner');
    expect(mirror.mirroredPages, 'the partner holds pages not yet on the disks').to.be.greaterThan(0);
    // The owner dies: its link drops, its memory and its destager's queue are gone, the array is left unclean.
    (a.link as unknown as { socket: { destroy(): void } }).socket.destroy();
    await a.stack.array.abandon();
    expectSame(await survivorView(mirror), model, `survivor view (seed ${SEED})`);
  });

  it('without the partner mirror, what the owner acknowledged in write-back mode is not all on the disks', async () => {
    const random = seededRandom(SEED + 1);
    const { port } = await partner(16 * MiB);
    const a = await owner(4 * MiB, port);
    const model = Buffer.alloc(SIZE);
    await writeRounds(a.volume, model, 6, random);
    (a.link as unknown as { socket: { destroy(): void } }).socket.destroy();
    await a.stack.array.abandon();
    // This is why the mirror matters: the disks alone lag behind what was acknowledged.
    expect((await survivorView(null)).equals(model)).to.equal(false);
  });

  it('with no partner, every write is on the disks when it is acknowledged (write-through)', async () => {
    const random = seededRandom(SEED + 2);
    const a = await owner(4 * MiB, null);
    const model = Buffer.alloc(SIZE);
    await writeRounds(a.volume, model, 6, random);
    await a.stack.array.abandon();
    expectSame(await survivorView(null), model, 'disks after write-through');
  });

  it('serves a working set 4× the frame pool correctly, without deadlock', async () => {
    const random = seededRandom(SEED + 3);
    const { mirror, port } = await partner(16 * MiB);
    const a = await owner(2 * MiB, port);
    const model = Buffer.alloc(SIZE);
    await writeRounds(a.volume, model, 10, random);
    const read = Buffer.alloc(SIZE);
    await a.volume.read(0, read);
    expectSame(read, model, 'reads of a working set 4× the pool');
    expect(a.manager.residentPages * PAGE).to.be.at.most(2 * MiB);
    a.link?.close('test over');
    await a.stack.stop();
    expect(mirror.mirroredPages).to.be.at.least(0);
  });

  it('falls back to write-through when the partner has no room, and still loses nothing', async () => {
    const random = seededRandom(SEED + 4);
    const { mirror, port } = await partner(1 * MiB);
    const a = await owner(8 * MiB, port);
    const model = Buffer.alloc(SIZE);
    await writeRounds(a.volume, model, 8, random);
    expect(mirror.mirroredPages * PAGE).to.be.at.most(1 * MiB);
    (a.link as unknown as { socket: { destroy(): void } }).socket.destroy();
    await a.stack.array.abandon();
    expectSame(await survivorView(mirror), model, 'disks + a full mirror');
  });
});
