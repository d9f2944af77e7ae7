// Proves the RAID engine on real member files: every byte read equals a model after random writes,
// with any tolerated set of members failed, corrupted or replaced; beyond tolerance it fails loudly.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { silentLogger } from '../../src/observe/index.js';
import { assembleArray, createArray, FileMember, rebuildMember, replaceMember, scrubArray, WriteRefusedError, type MemberDevice, type RaidArray, type RaidLevel } from '../../src/storage/index.js';
import { mapRange, stripeDataBytes } from '../../src/storage/layout.js';
import { planAssembly } from '../../src/storage/raid-assembly.js';
import { parityMatches } from '../../src/storage/raid-array.js';
import { decodeSuperblock, encodeSuperblock } from '../../src/storage/superblock.js';
import { WriteIntentBitmap } from '../../src/storage/write-intent-bitmap.js';
import { makeTempDirectory } from '../support/ftvm-process.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';
import { zeroCrcImpostor } from '../support/zero-crc-impostor.js';
import { ZERO_ENTRY } from '../../src/storage/checksum-table.js';

const BLOCK = 4096;
const deps = { logger: silentLogger(), now: () => Date.now() };

interface Fixture {
  directory: string;
  paths: string[];
  array: RaidArray;
  model: Buffer;
}

async function fixture(level: RaidLevel, members: number, memberDataBytes = 1 << 20, chunkBytes = 16384): Promise<Fixture> {
  const directory = await makeTempDirectory('ftvm-raid-');
  const paths = [...Array(members).keys()].map((index) => path.join(directory, `m${index}.img`));
  const array = await createArray({ level, memberPaths: paths, memberDataBytes, chunkBytes, bitmapRegionBytes: 64 * 1024 }, deps);
  return { directory, paths, array, model: Buffer.alloc(array.sizeBytes) };
}

async function randomWrites(f: Fixture, seed: number, count: number): Promise<void> {
  const random = seededRandom(seed);
  const blocks = f.array.sizeBytes / BLOCK;
  await Promise.all(
    [...Array(count).keys()].map(async () => {
      const length = (1 + randomInt(random, 12)) * BLOCK;
      const offset = randomInt(random, blocks - length / BLOCK) * BLOCK;
      const data = randomBytes(random, length);
      data.copy(f.model, offset);
      await f.array.write(offset, data);
    }),
  ).catch((error: Error) => {
    throw new Error(`seed ${seed}: ${error.message}`);
  });
}

/** Random data in every block: a read then reaches the disk everywhere (never-written blocks read as known zeroes without I/O). */
async function fillRandom(f: Fixture, seed: number): Promise<void> {
  const data = randomBytes(seededRandom(seed), f.array.sizeBytes);
  data.copy(f.model);
  await f.array.write(0, data);
}

async function expectModel(f: Fixture, what: string): Promise<void> {
  const whole = Buffer.alloc(f.array.sizeBytes);
  await f.array.read(0, whole);
  if (!whole.equals(f.model)) {
    let first = 0;
    while (whole[first] === f.model[first]) first++;
    throw new Error(`${what}: array differs from the model from byte ${first}`);
  }
  // Reads at odd block spans cross chunk and stripe edges differently from the whole read.
  const piece = Buffer.alloc(5 * BLOCK);
  await f.array.read(3 * BLOCK, piece);
  expect(piece.equals(f.model.subarray(3 * BLOCK, 8 * BLOCK)), what).to.equal(true);
}

/** Counts the member reads and gathered writes of `f`'s array from now on. */
function countMemberIo(f: Fixture): { reads: number; gathered: number } {
  const counted = { reads: 0, gathered: 0 };
  for (const slot of f.array.members.slots) {
    const device = slot.device as MemberDevice;
    slot.device = {
      path: device.path,
      read: (offset, into) => {
        counted.reads++;
        return device.read(offset, into);
      },
      write: (offset, data) => device.write(offset, data),
      writev: (offset, pieces) => {
        counted.gathered++;
        return (device.writev as NonNullable<MemberDevice['writev']>).call(device, offset, pieces);
      },
      sync: () => device.sync(),
      sizeBytes: () => device.sizeBytes(),
      close: () => device.close(),
    };
  }
  return counted;
}

async function corruptMember(f: Fixture, member: number, memberOffset: number, length: number): Promise<void> {
  const handle = await fs.open(f.paths[member] as string, 'r+');
  await handle.write(Buffer.alloc(length, 0xee), 0, length, f.array.members.identity.dataOffset + memberOffset);
  await handle.close();
}

const cases: Array<[RaidLevel, number, number[][]]> = [
  ['raid1', 3, [[0], [1], [2], [0, 1], [1, 2], [0, 2]]],
  ['raid10', 4, [[0], [1], [2], [3], [0, 2], [1, 3], [0, 3]]],
  ['raid5', 3, [[0], [1], [2]]],
  ['raid5', 5, [[0], [2], [4]]],
];

describe('RAID array on files', function () {
  this.timeout(60_000);
  const made: Fixture[] = [];
  afterEach(async () => {
    for (const f of made.splice(0)) {
      await f.array.abandon().catch(() => undefined);
      await fs.rm(f.directory, { recursive: true, force: true });
    }
  });

  async function make(level: RaidLevel, members: number): Promise<Fixture> {
    const f = await fixture(level, members);
    made.push(f);
    return f;
  }

  for (const [level, members, failureSets] of cases) {
    it(`${level} over ${members} members: random writes read back; so with each tolerated failure set`, async () => {
      const f = await make(level, members);
      await randomWrites(f, 1000 + members, 150);
      await expectModel(f, 'optimal');
      for (const failed of failureSets) {
        for (const member of failed) await f.array.members.markFailed(member, 'test');
        await expectModel(f, `${level} with members ${failed.join(',')} failed`);
        for (const member of failed) await rebuildMember(f.array, member);
        expect(f.array.status().state, `after rebuilding ${failed.join(',')}`).to.equal('optimal');
      }
      await expectModel(f, 'after all rebuilds');
    });

    it(`${level} over ${members} members: writes while degraded are readable after the rebuild`, async () => {
      const f = await make(level, members);
      await randomWrites(f, 2000 + members, 60);
      const victim = (failureSets[0] as number[])[0] as number;
      await f.array.members.markFailed(victim, 'test');
      await randomWrites(f, 3000 + members, 60);
      await expectModel(f, 'degraded');
      await rebuildMember(f.array, victim);
      const other = (failureSets[1] as number[])[0] as number;
      await f.array.members.markFailed(other, 'test');
      await expectModel(f, `rebuilt ${victim}, then ${other} failed`);
    });
  }

  it('raid5: whole stripes get parity from the new data alone (nothing read) and one gathered write per member; partial ends as before', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 11, 40);
    const stripeBytes = 2 * f.array.geometry.chunkBytes;
    const chunkBytes = f.array.geometry.chunkBytes;
    const counted = countMemberIo(f);
    const random = seededRandom(12);
    const write = async (offset: number, length: number): Promise<void> => {
      const data = randomBytes(random, length);
      data.copy(f.model, offset);
      await f.array.write(offset, data);
    };
    await write(4 * stripeBytes, 20 * stripeBytes);
    expect(counted, 'aligned whole stripes').to.deep.equal({ reads: 0, gathered: 3 });
    counted.gathered = 0;
    await write(4 * stripeBytes + BLOCK, 3 * stripeBytes);
    expect(counted.gathered, 'the two whole stripes inside an unaligned range').to.equal(3);
    expect(counted.reads, 'its partial ends read as before').to.be.greaterThan(0);
    await expectModel(f, 'after whole-stripe writes');
    const chunk = (member: number, stripe: number): Promise<Buffer> => {
      const into = Buffer.alloc(chunkBytes);
      return (f.array.members.slots[member]?.device as MemberDevice).read(f.array.members.identity.dataOffset + stripe * chunkBytes, into).then(() => into);
    };
    for (let stripe = 0; stripe < f.array.sizeBytes / stripeBytes; stripe++) {
      const [a, b, c] = await Promise.all([chunk(0, stripe), chunk(1, stripe), chunk(2, stripe)]);
      expect(parityMatches([a as Buffer, b as Buffer], c as Buffer), `stripe ${stripe}: data and parity agree on the members`).to.equal(true);
    }
    await f.array.members.markFailed(1, 'test');
    counted.reads = 0;
    counted.gathered = 0;
    await write(0, 8 * stripeBytes);
    expect(counted, 'degraded: the surviving members only, still nothing read').to.deep.equal({ reads: 0, gathered: 2 });
    await expectModel(f, 'whole stripes written degraded');
    await rebuildMember(f.array, 1);
    await f.array.members.markFailed(0, 'test');
    await expectModel(f, 'rebuilt member 1, member 0 failed');
  });

  /** Sorted, non-overlapping runs of 1 to 3 blocks a few blocks apart, now and then one longer than two stripes. */
  function scatteredRuns(f: Fixture, seed: number): Array<{ offset: number; data: Buffer }> {
    const random = seededRandom(seed);
    const blocks = f.array.sizeBytes / BLOCK;
    const stripeBlocks = stripeDataBytes(f.array.geometry) / BLOCK;
    const runs: Array<{ offset: number; data: Buffer }> = [];
    for (let block = randomInt(random, 4); ; ) {
      const length = randomInt(random, 15) === 0 ? 2 * stripeBlocks + 1 : 1 + randomInt(random, 3);
      if (block + length > blocks) break;
      const data = randomBytes(random, length * BLOCK);
      data.copy(f.model, block * BLOCK);
      runs.push({ offset: block * BLOCK, data });
      block += length + randomInt(random, 12);
    }
    return runs;
  }

  for (const [level, members] of [['raid5', 3], ['raid5', 5], ['raid1', 2], ['raid10', 4]] as Array<[RaidLevel, number]>) {
    it(`${level} over ${members} members: scattered runs written together read back, with checksums and parity that agree; so degraded and after a rebuild`, async () => {
      const f = await make(level, members);
      await fillRandom(f, 21 + members);
      await f.array.writeRuns(scatteredRuns(f, 22 + members), 4);
      await expectModel(f, 'scattered runs');
      // A merged raid5 update rewrites the blocks between the runs and records only the runs' checksums:
      // scrub reads every block against its entry and every stripe's parity.
      const report = await scrubArray(f.array);
      expect({ checksumRepairs: report.checksumRepairs, parityRepairs: report.parityRepairs }).to.deep.equal({ checksumRepairs: 0, parityRepairs: 0 });
      await f.array.members.markFailed(0, 'test');
      await f.array.writeRuns(scatteredRuns(f, 23 + members), 4);
      await expectModel(f, 'scattered runs, degraded');
      await rebuildMember(f.array, 0);
      await f.array.members.markFailed(members - 1, 'test');
      await expectModel(f, `member 0 rebuilt, member ${members - 1} failed`);
    });
  }

  it('raid5: runs close together in one stripe are one update (a read and a write per touched chunk, one parity write); far ones stay apart', async () => {
    const f = await make('raid5', 3);
    await fillRandom(f, 31);
    const chunkBlocks = f.array.geometry.chunkBytes / BLOCK;
    const counted = { reads: 0, writes: 0 };
    for (const slot of f.array.members.slots) {
      const device = slot.device as MemberDevice;
      slot.device = {
        ...device,
        path: device.path,
        read: (offset, into) => {
          counted.reads++;
          return device.read(offset, into);
        },
        write: (offset, data) => {
          counted.writes++;
          return device.write(offset, data);
        },
        sync: () => device.sync(),
        sizeBytes: () => device.sizeBytes(),
        close: () => device.close(),
      };
    }
    const random = seededRandom(32);
    const runAt = (block: number): { offset: number; data: Buffer } => {
      const data = randomBytes(random, BLOCK);
      data.copy(f.model, block * BLOCK);
      return { offset: block * BLOCK, data };
    };
    // Stripe 3: blocks 0 and 2 of its first chunk, block 1 of its second.
    const first = 3 * 2 * chunkBlocks;
    await f.array.writeRuns([runAt(first), runAt(first + 2), runAt(first + chunkBlocks + 1)], 4);
    expect(counted, 'one update: both chunks read over blocks 0..2 and written back, parity once').to.deep.equal({ reads: 2, writes: 3 });
    await expectModel(f, 'one stripe, three runs');
    // A 256 KiB chunk: runs at its first and last block are farther apart than the merge gap.
    const wide = await make('raid5', 3);
    await wide.array.stop();
    wide.array = await createArray({ level: 'raid5', memberPaths: wide.paths.map((file) => `${file}.wide`), memberDataBytes: 1 << 20, chunkBytes: 256 * 1024 }, deps);
    wide.model = Buffer.alloc(wide.array.sizeBytes);
    await fillRandom(wide, 33);
    const wideCounted = { writes: 0 };
    for (const slot of wide.array.members.slots) {
      const device = slot.device as MemberDevice;
      const write = device.write.bind(device);
      device.write = (offset, data) => {
        wideCounted.writes++;
        return write(offset, data);
      };
    }
    const far = (block: number): { offset: number; data: Buffer } => {
      const data = randomBytes(random, BLOCK);
      data.copy(wide.model, block * BLOCK);
      return { offset: block * BLOCK, data };
    };
    await wide.array.writeRuns([far(0), far(63)], 4);
    expect(wideCounted.writes, 'two updates of a block each: data and parity twice').to.equal(4);
    await expectModel(wide, 'two far runs in one stripe');
  });

  it('raid5: a stripe whose merged update fails stays locked until its other updates settled (a later write of it lands last)', async () => {
    const f = await make('raid5', 3);
    await f.array.stop();
    f.paths = f.paths.map((file) => `${file}.wide`);
    f.array = await createArray({ level: 'raid5', memberPaths: f.paths, memberDataBytes: 1 << 20, chunkBytes: 256 * 1024 }, deps);
    f.model = Buffer.alloc(f.array.sizeBytes);
    await fillRandom(f, 41);
    // Block 0 of stripe 0 rotten on both data members: an update there cannot be made.
    const dataOffset = f.array.members.identity.dataOffset;
    for (const member of [0, 1]) await corruptMember(f, member, 0, BLOCK);
    // Block 50 is far from block 0 (two updates of the stripe); its data write is held back.
    const device = (f.array.members.slots[0] as { device: MemberDevice }).device;
    const write = device.write.bind(device);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let holding = true;
    device.write = async (offset, data) => {
      if (holding && offset === dataOffset + 50 * BLOCK) {
        holding = false;
        await held;
      }
      return write(offset, data);
    };
    let settled = false;
    const first = f.array.writeRuns([{ offset: 0, data: Buffer.alloc(BLOCK, 0x33) }, { offset: 50 * BLOCK, data: Buffer.alloc(BLOCK, 0x11) }], 4).finally(() => (settled = true));
    first.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(holding, 'the far update is writing').to.equal(false);
    expect(settled, 'the group waits for it, failed or not').to.equal(false);
    const later = f.array.write(50 * BLOCK, Buffer.alloc(BLOCK, 0x22));
    release();
    expect(await first.then(() => null, (error: Error) => error)).to.be.instanceOf(Error);
    await later;
    const back = Buffer.alloc(BLOCK);
    await f.array.read(50 * BLOCK, back);
    expect(back.equals(Buffer.alloc(BLOCK, 0x22)), 'the later write is what the block holds').to.equal(true);
  });

  for (const [level, members] of [['raid5', 3], ['raid1', 2], ['raid10', 4]] as Array<[RaidLevel, number]>) {
    it(`${level}: blocks the checksums say are zeroes read without I/O; scrub still reads them and repairs rot there`, async () => {
      const f = await make(level, members);
      const counted = countMemberIo(f);
      await expectModel(f, 'fresh');
      expect(counted.reads, 'a fresh array is zeroes by its checksums').to.equal(0);
      expect(f.array.knownZero(0, f.array.sizeBytes)).to.equal(true);
      await randomWrites(f, 71, 20);
      counted.reads = 0;
      await expectModel(f, 'written');
      expect(counted.reads, 'written blocks are read').to.be.greaterThan(0);
      // A never-written block, and what rot left on its member's disk there.
      let zeroAt = 0;
      while (!f.model.subarray(zeroAt, zeroAt + BLOCK).equals(Buffer.alloc(BLOCK))) zeroAt += BLOCK;
      const span = mapRange(f.array.geometry, zeroAt, BLOCK)[0] as { members: number[]; memberOffset: number };
      const member = span.members[0] as number;
      await corruptMember(f, member, span.memberOffset, BLOCK);
      counted.reads = 0;
      const block = Buffer.alloc(BLOCK, 1);
      await f.array.read(zeroAt, block);
      expect(block.equals(Buffer.alloc(BLOCK)), 'zeroes, as the checksums say').to.equal(true);
      expect(counted.reads).to.equal(0);
      const report = await scrubArray(f.array);
      expect(report.checksumRepairs, 'scrub read the rotten block and rewrote it').to.equal(1);
      const onDisk = Buffer.alloc(BLOCK, 1);
      await ((f.array.members.slots[member] as { device: MemberDevice }).device).read(f.array.members.identity.dataOffset + span.memberOffset, onDisk);
      expect(onDisk.equals(Buffer.alloc(BLOCK)), 'zeroes on the member again').to.equal(true);
      await expectModel(f, 'after scrub');
    });
  }

  for (const level of ['raid5', 'raid1'] as RaidLevel[]) {
    it(`${level}: a block whose CRC is the zero block's but is not zeroes reads back as itself, before and after reassembly`, async () => {
      const f = await make(level, level === 'raid5' ? 3 : 2);
      const impostor = zeroCrcImpostor();
      for (const offset of [0, 5 * BLOCK]) {
        await f.array.write(offset, impostor);
        impostor.copy(f.model, offset);
      }
      expect(f.array.knownZero(5 * BLOCK, BLOCK)).to.equal(false);
      await expectModel(f, 'impostor written');
      expect((await scrubArray(f.array)).checksumRepairs).to.equal(0);
      await f.array.stop();
      f.array = await assembleArray(f.paths, deps, FileMember.open);
      await expectModel(f, 'reassembled');
    });
  }

  it('an array created before the zero-entry rule (flag bit 1 clear) keeps reading every block and the CRC-only rule', async () => {
    const f = await make('raid5', 3);
    await f.array.stop();
    // What an older ftvm left: the same superblocks without the flag.
    for (const file of f.paths) {
      const handle = await fs.open(file, 'r+');
      for (const at of [0, 4096]) {
        const copy = Buffer.alloc(4096);
        await handle.read(copy, 0, 4096, at);
        await handle.write(encodeSuperblock({ ...decodeSuperblock(copy), zeroEntries: false }), 0, 4096, at);
      }
      await handle.close();
    }
    f.array = await assembleArray(f.paths, deps, FileMember.open);
    expect(f.array.members.identity.zeroEntries).to.equal(false);
    expect(f.array.knownZero(0, BLOCK)).to.equal(false);
    const counted = countMemberIo(f);
    await expectModel(f, 'legacy, fresh');
    expect(counted.reads, 'every block read from the members').to.be.greaterThan(0);
    const impostor = zeroCrcImpostor();
    await f.array.write(3 * BLOCK, impostor);
    impostor.copy(f.model, 3 * BLOCK);
    await expectModel(f, 'legacy, impostor written');
    await f.array.stop();
    f.array = await assembleArray(f.paths, deps, FileMember.open);
    await expectModel(f, 'legacy, reassembled');
    expect((await scrubArray(f.array)).checksumRepairs).to.equal(0);
  });

  it('knows no block as zeroes while a resync runs behind I/O: a crash can leave data on disk whose checksum page never got there', async () => {
    const f = await make('raid5', 3);
    const offset = 40 * BLOCK;
    await f.array.write(offset, Buffer.alloc(BLOCK, 0x77));
    // Not synced: the checksum page stays in memory, the region's bit is on disk.
    await f.array.abandon();
    f.array = await assembleArray(f.paths, deps, FileMember.open, { resyncBehindIo: true });
    expect(f.array.status().dirtyRegions, 'the write left its region dirty').to.be.greaterThan(0);
    expect(f.array.knownZero(offset, BLOCK), 'the table on disk says zeroes, the data does not').to.equal(false);
    expect(f.array.knownZero(f.array.sizeBytes - BLOCK, BLOCK), 'not even elsewhere until the resync is done').to.equal(false);
    const block = Buffer.alloc(BLOCK);
    await f.array.read(offset, block);
    expect(block.every((byte) => byte === 0x77)).to.equal(true);
    await f.array.resynced();
    expect(f.array.knownZero(offset, BLOCK), 'resynced: the entry is the data\'s').to.equal(false);
    expect(f.array.knownZero(f.array.sizeBytes - BLOCK, BLOCK), 'never written').to.equal(true);
  });

  it('raid5: rebuild and reconstruct inputs are read from the disk while a resync runs behind I/O, whatever the table on disk says', async () => {
    const f = await make('raid5', 3);
    const offset = f.array.sizeBytes - BLOCK;
    await f.array.write(offset, Buffer.alloc(BLOCK, 0x77));
    await f.array.abandon();
    f.array = await assembleArray(f.paths, deps, FileMember.open, { resyncBehindIo: true });
    const span = mapRange(f.array.geometry, offset, BLOCK)[0] as { members: number[]; memberOffset: number };
    // What chunkFromRedundancy and reconstruct call, without the stripe resynced first.
    const into = Buffer.alloc(BLOCK);
    await f.array.readVerified(span.members[0] as number, span.memberOffset, into);
    expect(into.every((byte) => byte === 0x77), 'the data on the member, not zeroes from a table that missed it').to.equal(true);
    await f.array.resynced();
  });

  it('raid1: a copy whose table says zeroes is not trusted while another copy\'s table says otherwise', async () => {
    const f = await make('raid1', 2);
    await f.array.write(8 * BLOCK, Buffer.alloc(BLOCK, 0x42));
    f.model.fill(0x42, 8 * BLOCK, 9 * BLOCK);
    // A stale entry on member 0 only (as a checksum page write that never landed would leave it).
    (f.array.members.slots[0] as { checksums: { set: (block: number, entry: number) => void } }).checksums.set(8, ZERO_ENTRY);
    for (let round = 0; round < 4; round++) {
      const block = Buffer.alloc(BLOCK);
      await f.array.read(8 * BLOCK, block);
      expect(block.every((byte) => byte === 0x42), `read ${round}: whichever copy the rotation takes`).to.equal(true);
    }
    await expectModel(f, 'after the reads');
  });

  it('a member whose checksum page cannot be written is failed, not left with a table the disk does not have', async () => {
    const f = await make('raid5', 3);
    const slot = f.array.members.slots[1] as { device: MemberDevice };
    const device = slot.device;
    const checksumOffset = f.array.members.identity.checksumOffset;
    slot.device = {
      path: device.path,
      read: (offset, into) => device.read(offset, into),
      write: (offset, data) => (offset >= checksumOffset && offset < f.array.members.identity.dataOffset ? Promise.reject(new Error('EIO (test)')) : device.write(offset, data)),
      writev: (offset, pieces) => (device.writev as NonNullable<MemberDevice['writev']>).call(device, offset, pieces),
      sync: () => device.sync(),
      sizeBytes: () => device.sizeBytes(),
      close: () => device.close(),
    };
    await randomWrites(f, 91, 20);
    // What clearing a quiet region's bit does first.
    await f.array.members.flushChecksumPages();
    expect(f.array.status().members[1]?.state).to.equal('failed');
    expect(f.array.status().members[1]?.reason).to.match(/EIO \(test\)/);
    await expectModel(f, 'degraded after the failed checksum page');
  });

  it('raid5: two members gone fails reads with EIO and says why', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 7, 20);
    await f.array.members.markFailed(0, 'test');
    await f.array.members.markFailed(1, 'test');
    expect(f.array.status().state).to.equal('failed');
    const error = await f.array.read(0, Buffer.alloc(f.array.sizeBytes)).catch((caught: unknown) => caught as Error & { code?: string });
    expect(error).to.be.instanceOf(Error);
    expect(error?.code).to.equal('EIO');
    expect(error?.message).to.match(/cannot be reconstructed|no readable copy/);
  });

  it('a refused write (the node lost its lease) fails the I/O but no member: the array stays optimal', async () => {
    const directory = await makeTempDirectory('ftvm-raid-');
    const paths = [0, 1, 2].map((index) => path.join(directory, `m${index}.img`));
    let refusing = false;
    const refusable = (member: MemberDevice): MemberDevice => ({
      path: member.path,
      read: (offset, into) => member.read(offset, into),
      write: (offset, data) => (refusing ? Promise.reject(new WriteRefusedError(`${member.path}: not written`)) : member.write(offset, data)),
      sync: () => (refusing ? Promise.reject(new WriteRefusedError(`${member.path}: not synced`)) : member.sync()),
      sizeBytes: () => member.sizeBytes(),
      close: () => member.close(),
    });
    const array = await createArray({ level: 'raid5', memberPaths: paths, memberDataBytes: 1 << 20, chunkBytes: 16384 }, deps, async (file, size) => refusable(await FileMember.create(file, size)));
    const f: Fixture = { directory, paths, array, model: Buffer.alloc(array.sizeBytes) };
    made.push(f);
    await randomWrites(f, 31, 20);
    refusing = true;
    const refused = await array.write(0, Buffer.alloc(3 * BLOCK, 0x5a)).catch((caught: unknown) => caught);
    expect(refused).to.be.instanceOf(WriteRefusedError);
    expect(await array.sync().catch((caught: unknown) => caught)).to.be.instanceOf(WriteRefusedError);
    expect(array.status().state).to.equal('optimal');
    expect(array.status().members.map((member) => member.state)).to.deep.equal(['active', 'active', 'active']);
    refusing = false;
    await randomWrites(f, 32, 20);
    await array.sync();
    await expectModel(f, 'after the refusals');
  });

  it('raid5: silently corrupted blocks are detected by checksum, served correctly and repaired', async () => {
    const f = await make('raid5', 4);
    await fillRandom(f, 10);
    await randomWrites(f, 11, 100);
    await corruptMember(f, 1, 0, 3 * BLOCK);
    await corruptMember(f, 2, 40 * BLOCK, BLOCK);
    await expectModel(f, 'after corruption');
    const repaired = f.array.status().members.reduce((sum, member) => sum + member.repairedBlocks, 0);
    expect(repaired).to.be.greaterThan(0);
    const report = await scrubArray(f.array);
    expect(report).to.include({ checksumRepairs: 0, parityRepairs: 0, unrecoverableBlocks: 0 });
  });

  it('raid1: scrub finds and repairs corruption on one mirror from the other', async () => {
    const f = await make('raid1', 2);
    await randomWrites(f, 13, 50);
    await corruptMember(f, 0, 8 * BLOCK, 2 * BLOCK);
    const report = await scrubArray(f.array);
    expect(report.checksumRepairs).to.equal(2);
    expect((await scrubArray(f.array)).checksumRepairs).to.equal(0);
    await f.array.members.markFailed(1, 'test');
    await expectModel(f, 'mirror 0 alone after scrub');
  });

  it('raid5: scrub finds parity that disagrees with checksummed data and rewrites it', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 17, 40);
    // Stripe 0's parity lives on member 2 (left-symmetric); overwrite it and its checksum entry
    // the way a torn update would leave it: consistent with itself, wrong for the data.
    const wrong = Buffer.alloc(BLOCK, 0x55);
    await f.array.writeMember(2, 0, wrong);
    const report = await scrubArray(f.array);
    expect(report.parityRepairs).to.equal(1);
    await f.array.members.markFailed(0, 'test');
    await expectModel(f, 'reconstructed through repaired parity');
  });

  it('replace puts a new file in place of a member, online, reporting progress', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 19, 80);
    const progress: number[] = [];
    const replacement = path.join(f.directory, 'new.img');
    const writes = randomWrites(f, 23, 80);
    await replaceMember(f.array, 1, replacement, (done) => progress.push(done));
    await writes;
    expect(progress[progress.length - 1]).to.equal(f.array.geometry.memberDataBytes);
    expect(f.array.status().members[1]).to.include({ path: replacement, state: 'active' });
    await f.array.members.markFailed(0, 'test');
    await expectModel(f, 'replacement serving with member 0 failed');
  });

  it('reassembles after a clean stop with everything intact', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 29, 60);
    await f.array.sync();
    await f.array.stop();
    f.array = await assembleArray(f.paths, deps);
    expect(f.array.status().state).to.equal('optimal');
    await expectModel(f, 'reassembled');
  });

  it('marks a member that missed changes as stale on assembly and rebuilds it', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 31, 40);
    await f.array.stop();
    f.array = await assembleArray([f.paths[0] as string, f.paths[1] as string], deps);
    expect(f.array.status().members[2]).to.include({ state: 'missing' });
    await randomWrites(f, 37, 40);
    await f.array.stop();
    f.array = await assembleArray(f.paths, deps);
    const member2 = f.array.status().members[2];
    expect(member2?.state).to.equal('failed');
    expect(member2?.reason).to.match(/stale|recorded as missing/);
    await expectModel(f, 'stale member kept out');
    await rebuildMember(f.array, 2);
    await f.array.members.markFailed(0, 'test');
    await expectModel(f, 'rebuilt stale member serving');
  });

  it('refuses a member of another array, and a file that is no member, naming them', async () => {
    const a = await make('raid1', 2);
    const b = await make('raid1', 2);
    await a.array.stop();
    await b.array.stop();
    const error = (await assembleArray([a.paths[0] as string, b.paths[1] as string], deps).catch((caught: Error) => caught)) as Error;
    expect(error?.message).to.match(/belongs to array/);
    const junk = path.join(a.directory, 'junk.img');
    await fs.writeFile(junk, Buffer.alloc(16384, 1));
    const refused = (await assembleArray([junk], deps).catch((caught: Error) => caught)) as Error;
    expect(refused.message).to.match(/junk\.img: .*not an ftvm RAID member/);
    a.array = await assembleArray(a.paths, deps);
    b.array = await assembleArray(b.paths, deps);
  });

  it('accepts a member one event behind that is still recorded active (a torn superblock update)', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 43, 30);
    await f.array.stop();
    // Put member 2's superblock one event back, as a crash between superblock writes would.
    const { newestSuperblock, superblockCopyOffset, SUPERBLOCK_BYTES } = await import('../../src/storage/superblock.js');
    const handle = await fs.open(f.paths[2] as string, 'r+');
    const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
    await handle.read(copies, 0, copies.length, 0);
    const current = newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES));
    await handle.write(Buffer.alloc(SUPERBLOCK_BYTES), 0, SUPERBLOCK_BYTES, superblockCopyOffset(current.eventCounter));
    await handle.close();
    f.array = await assembleArray(f.paths, deps);
    expect(f.array.status().state).to.equal('optimal');
    await f.array.members.markFailed(0, 'test');
    await expectModel(f, 'member 2 accepted one event behind');
  });

  it('resyncs every region when a bitmap does not decode', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 47, 30);
    const { bitmapOffset, bitmapSlotBytes } = f.array.members.identity;
    await f.array.abandon();
    const handle = await fs.open(f.paths[0] as string, 'r+');
    await handle.write(Buffer.alloc(bitmapSlotBytes, 0xff), 0, bitmapSlotBytes, bitmapOffset);
    await handle.close();
    f.array = await assembleArray(f.paths, deps);
    expect(f.array.status().dirtyRegions).to.equal(0);
    await expectModel(f, 'after a whole-array resync');
  });

  it('serves while it resyncs after an unclean stop: a stripe the pass has not reached is resynced before it is read', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 59, 40);
    await f.array.sync();
    // The last stripe's first block: its data landed on the member, its checksum and parity did not (a crash mid-update).
    const span = mapRange(f.array.geometry, f.array.sizeBytes - f.array.geometry.chunkBytes * 2, BLOCK)[0] as { members: number[]; memberOffset: number; arrayOffset: number };
    const member = span.members[0] as number;
    const { bitmapOffset, bitmapSlotBytes } = f.array.members.identity;
    await f.array.abandon();
    const handle = await fs.open(f.paths[0] as string, 'r+');
    // A bitmap that does not decode: every region is resynced, the last stripe last.
    await handle.write(Buffer.alloc(bitmapSlotBytes, 0xff), 0, bitmapSlotBytes, bitmapOffset);
    await handle.close();
    await corruptMember(f, member, span.memberOffset, BLOCK);
    f.model.fill(0xee, span.arrayOffset, span.arrayOffset + BLOCK);
    f.array = await assembleArray(f.paths, deps, FileMember.open, { resyncBehindIo: true });
    const block = Buffer.alloc(BLOCK);
    await f.array.read(span.arrayOffset, block);
    expect(block.every((byte) => byte === 0xee), 'the data on the member is the truth, not a reconstruction from stale parity').to.equal(true);
    expect(f.array.status().members[member]?.readErrors, 'no checksum "repair" of the newer data').to.equal(0);
    await f.array.resynced();
    expect(f.array.status().dirtyRegions).to.equal(0);
    const report = await scrubArray(f.array);
    expect([report.parityRepairs, report.checksumRepairs]).to.deep.equal([0, 0]);
    await expectModel(f, 'after the resync behind I/O');
  });

  it('a stop while it resyncs behind I/O leaves the array unclean, and the next assembly resyncs it', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 61, 40);
    await f.array.sync();
    const { bitmapOffset, bitmapSlotBytes } = f.array.members.identity;
    await f.array.abandon();
    const handle = await fs.open(f.paths[0] as string, 'r+');
    await handle.write(Buffer.alloc(bitmapSlotBytes, 0xff), 0, bitmapSlotBytes, bitmapOffset);
    await handle.close();
    // Parity of stripe 0 is stale: only a resync makes it agree again.
    const parity = mapRange(f.array.geometry, 0, BLOCK)[0] as { stripe: number };
    const parityMember = [0, 1, 2].find((index) => !(mapRange(f.array.geometry, 0, 2 * f.array.geometry.chunkBytes).flatMap((s) => s.members).includes(index))) as number;
    expect(parity.stripe).to.equal(0);
    await corruptMember(f, parityMember, 0, BLOCK);
    f.array = await assembleArray(f.paths, deps, FileMember.open, { resyncBehindIo: true });
    await f.array.stop();
    const plan = await planAssembly(f.paths, FileMember.open, { readChecksums: false });
    await Promise.all(plan.candidates.map((candidate) => candidate.device?.close()));
    expect(plan.authority.clean, 'stopped before the resync was done').to.equal(false);
    f.array = await assembleArray(f.paths, deps);
    const report = await scrubArray(f.array);
    expect(report.parityRepairs, 'the next assembly resynced what the stop cut short').to.equal(0);
    await expectModel(f, 'after the resync at the next assembly');
  });

  it('does not fail a degraded raid5 member for checksum errors: it is the last copy', async () => {
    const f = await make('raid5', 3);
    await fillRandom(f, 52);
    await randomWrites(f, 53, 60);
    await f.array.members.markFailed(1, 'test');
    (f.array.members.slots[0] as { readErrors: number }).readErrors = 10_000;
    await corruptMember(f, 0, 0, BLOCK);
    const error = (await f.array.read(0, Buffer.alloc(f.array.sizeBytes)).catch((caught: Error) => caught)) as Error | undefined;
    expect(error?.message ?? '', 'the rotten block has no second copy').to.match(/cannot be reconstructed|fails/);
    expect(f.array.status().members[0]?.state).to.equal('active');
  });

  it('refuses to assemble raid5 with two members missing', async () => {
    const f = await make('raid5', 3);
    await f.array.stop();
    const error = (await assembleArray([f.paths[0] as string], deps).catch((caught: Error) => caught)) as Error;
    expect(error?.message).to.match(/too many members unavailable/);
    f.array = await assembleArray(f.paths, deps);
  });

  it('a truncated member is failed at assembly and the array serves degraded', async () => {
    const f = await make('raid5', 3);
    await randomWrites(f, 41, 40);
    await f.array.stop();
    await fs.truncate(f.paths[1] as string, 1 << 20);
    f.array = await assembleArray(f.paths, deps);
    expect(f.array.status().members[1]?.reason).to.match(/truncated/);
    await expectModel(f, 'truncated member out');
  });
});

describe('RAID write-intent bitmap', function () {
  this.timeout(30_000);

  it('clears a region only after it was quiet for the delay and a sync followed; a write since keeps it', async () => {
    let nowMs = 1_000_000;
    const clock = { logger: silentLogger(), now: () => nowMs };
    const directory = await makeTempDirectory('ftvm-bitmap-');
    const paths = [0, 1, 2].map((index) => path.join(directory, `m${index}.img`));
    const array = await createArray({ level: 'raid5', memberPaths: paths, memberDataBytes: 1 << 20, chunkBytes: 16384, bitmapRegionBytes: 64 * 1024 }, clock);
    try {
      await array.write(0, Buffer.alloc(BLOCK, 1));
      await array.write(512 * 1024, Buffer.alloc(BLOCK, 2));
      expect(array.status().dirtyRegions).to.equal(2);
      await array.sync();
      expect(array.status().dirtyRegions, 'not quiet long enough').to.equal(2);
      nowMs += 6_000;
      await array.write(512 * 1024, Buffer.alloc(BLOCK, 3));
      await array.sync();
      expect(array.status().dirtyRegions, 'the region written again stays dirty').to.equal(1);
      // What is on disk agrees: a crash now resyncs only the dirty region.
      const { bitmapOffset, bitmapSlotBytes, bitmapRegionBytes, memberDataBytes } = array.members.identity;
      await array.abandon();
      const handle = await fs.open(paths[1] as string, 'r');
      const slot = Buffer.alloc(bitmapSlotBytes);
      await handle.read(slot, 0, slot.length, bitmapOffset);
      await handle.close();
      expect(WriteIntentBitmap.decodeSlot(slot, bitmapRegionBytes, memberDataBytes).dirtyRegions(), "array offset 512 KiB is member offset 256 KiB: region 4").to.deep.equal([4]);
      const reassembled = await assembleArray(paths, clock);
      expect(reassembled.status().dirtyRegions, 'resync cleared the bit').to.equal(0);
      const out = Buffer.alloc(BLOCK);
      await reassembled.read(512 * 1024, out);
      expect(out[0]).to.equal(3);
      await reassembled.stop();
    } finally {
      await fs.rm(directory, { recursive: true, force: true });
    }
  });
});
