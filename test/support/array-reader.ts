// Reads a volume's bytes straight from the RAID member files, without the server and without
// writing anything: how tests check what a write left on the shared disks.
import fs from 'node:fs/promises';
import { mapRange, type Geometry } from '../../src/storage/layout.js';
import { CLUSTER_RECORD_COPY_BYTES, newestClusterRecord, type Allocation } from '../../src/storage/node-state.js';
import { newestSuperblock, SUPERBLOCK_BYTES, type Superblock } from '../../src/storage/superblock.js';

export class ArrayReader {
  private constructor(
    private readonly members: string[],
    private readonly superblock: Superblock,
  ) {}

  static async open(members: string[]): Promise<ArrayReader> {
    const first = await fs.open(members[0] as string, 'r');
    const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
    await first.read(copies, 0, copies.length, 0);
    await first.close();
    const superblock = newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES));
    const ordered: string[] = [];
    for (const member of members) {
      const handle = await fs.open(member, 'r');
      const copy = Buffer.alloc(2 * SUPERBLOCK_BYTES);
      await handle.read(copy, 0, copy.length, 0);
      await handle.close();
      ordered[newestSuperblock(copy.subarray(0, SUPERBLOCK_BYTES), copy.subarray(SUPERBLOCK_BYTES)).memberIndex] = member;
    }
    return new ArrayReader(ordered, superblock);
  }

  /** Opens the members named by a cluster config file. */
  static async fromConfig(configFile: string): Promise<ArrayReader> {
    const { loadConfig } = await import('../../src/config/index.js');
    const config = await loadConfig(configFile);
    return ArrayReader.open(config.storage.members);
  }

  get geometry(): Geometry {
    const { level, memberCount, chunkBytes, memberDataBytes } = this.superblock;
    return { level, memberCount, chunkBytes, memberDataBytes };
  }

  async readArray(offset: number, lengthBytes: number): Promise<Buffer> {
    const out = Buffer.alloc(lengthBytes);
    for (const span of mapRange(this.geometry, offset, lengthBytes)) {
      const handle = await fs.open(this.members[span.members[0] as number] as string, 'r');
      await handle.read(out, span.arrayOffset - offset, span.lengthBytes, this.superblock.dataOffset + span.memberOffset);
      await handle.close();
    }
    return out;
  }

  async allocation(volume: string): Promise<Allocation> {
    const copies = await this.readArray(0, 2 * CLUSTER_RECORD_COPY_BYTES);
    const { record } = newestClusterRecord(copies.subarray(0, CLUSTER_RECORD_COPY_BYTES), copies.subarray(CLUSTER_RECORD_COPY_BYTES));
    const found = record.allocations.find((allocation) => allocation.name === volume);
    if (!found) throw new Error(`no allocation named ${volume}`);
    return found;
  }

  /** Bytes of a volume as they are on the member files. */
  async readVolume(volume: string, offset: number, lengthBytes: number): Promise<Buffer> {
    const allocation = await this.allocation(volume);
    if (offset + lengthBytes > allocation.sizeBytes) throw new RangeError(`${offset}+${lengthBytes} is past the end of ${volume}`);
    return this.readArray(allocation.arrayOffset + offset, lengthBytes);
  }

  /** Writes a whole volume to an image file (for e2fsck or debugfs on what the server stored). */
  async exportVolume(volume: string, file: string): Promise<void> {
    const allocation = await this.allocation(volume);
    const handle = await fs.open(file, 'w');
    const step = 4 * 1024 * 1024;
    for (let done = 0; done < allocation.sizeBytes; done += step) {
      const piece = await this.readVolume(volume, done, Math.min(step, allocation.sizeBytes - done));
      await handle.write(piece, 0, piece.length, done);
    }
    await handle.close();
  }
}
