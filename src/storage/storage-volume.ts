// A volume (an NBD export) over one allocation of the array: byte-granular reads and writes turned
// into whole blocks of the storage stack, with read-modify-write of partial blocks at the edges.
//
// Write-through: a write is acknowledged once its blocks are on the array and synced (there is no
// partner yet to hold a copy). Partial-block updates take the block locks so two writers of one
// block cannot both read its old content and lose each other's bytes.
import { VolumeError, type Extent, type Volume, type ZeroOptions } from '../volume/index.js';
import { BLOCK_BYTES } from './layout.js';
import type { StorageStack } from './storage-stack.js';

/** Large zero and cache requests are cut into pieces of this size, so none needs a huge buffer. */
const PIECE_BYTES = 1024 * 1024;
const ZEROES = Buffer.alloc(PIECE_BYTES);

export class StorageVolume implements Volume {
  /** One stack, one cache: a flush on any connection covers every completed write. */
  readonly flushCoversAllConnections = true;
  private closed = false;

  constructor(
    private readonly stack: StorageStack,
    readonly name: string,
    /** Where the allocation starts in the array; block-aligned. */
    private readonly baseOffset: number,
    readonly sizeBytes: number,
  ) {
    if (baseOffset % BLOCK_BYTES !== 0) throw new Error(`allocation ${name} must start on a block boundary`);
  }

  async read(offset: number, into: Buffer): Promise<void> {
    this.assertOpen();
    const start = this.baseOffset + offset;
    const first = Math.floor(start / BLOCK_BYTES) * BLOCK_BYTES;
    const end = Math.ceil((start + into.length) / BLOCK_BYTES) * BLOCK_BYTES;
    if (first === start && end === start + into.length) return this.stack.readBlocks(start, into);
    const blocks = Buffer.allocUnsafe(end - first);
    await this.stack.readBlocks(first, blocks);
    blocks.copy(into, 0, start - first, start - first + into.length);
  }

  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    this.assertOpen();
    let length = 0;
    for (const piece of data) length += piece.length;
    await this.update(offset, length, (image, at) => {
      for (const piece of data) at += piece.copy(image, at);
    });
    await this.durable(fua);
  }

  async flush(): Promise<void> {
    this.assertOpen();
    await this.stack.flush();
  }

  /** TRIM is advisory and the array keeps no allocation map, so nothing is freed; FUA still holds. */
  async trim(_offset: number, _lengthBytes: number, fua: boolean): Promise<void> {
    this.assertOpen();
    if (fua) await this.stack.flush();
  }

  async zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    this.assertOpen();
    if (options.fastZero) throw new VolumeError('ENOTSUP', 'zeroing is no faster than writing zeroes on this volume');
    for (let done = 0; done < lengthBytes; done += PIECE_BYTES) {
      const piece = Math.min(PIECE_BYTES, lengthBytes - done);
      await this.update(offset + done, piece, (image, at) => ZEROES.copy(image, at, 0, piece));
      // Each piece reaches the array before the next is built: a huge zero request stays a 1 MiB affair.
      await this.durable(options.fua);
    }
  }

  /** Loads the range into the storage cache (NBD_CMD_CACHE), piece by piece. */
  async cache(offset: number, lengthBytes: number): Promise<void> {
    this.assertOpen();
    const scratch = Buffer.allocUnsafe(Math.min(PIECE_BYTES, lengthBytes));
    for (let done = 0; done < lengthBytes; done += scratch.length) {
      await this.read(offset + done, scratch.subarray(0, Math.min(scratch.length, lengthBytes - done)));
    }
  }

  async blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    this.assertOpen();
    return [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Builds the new content of the blocks a byte range touches and hands them to the destager. */
  private async update(offset: number, lengthBytes: number, fill: (image: Buffer, at: number) => void): Promise<void> {
    const start = this.baseOffset + offset;
    const first = Math.floor(start / BLOCK_BYTES);
    const last = Math.floor((start + lengthBytes - 1) / BLOCK_BYTES);
    await this.stack.blockLocks.withExclusiveRange(first, last, async () => {
      const image = Buffer.allocUnsafe((last - first + 1) * BLOCK_BYTES);
      const headPartial = start % BLOCK_BYTES !== 0;
      const tailPartial = (start + lengthBytes) % BLOCK_BYTES !== 0;
      if (headPartial) await this.stack.readBlocks(first * BLOCK_BYTES, image.subarray(0, BLOCK_BYTES));
      if (tailPartial && (last !== first || !headPartial)) {
        await this.stack.readBlocks(last * BLOCK_BYTES, image.subarray(image.length - BLOCK_BYTES));
      }
      fill(image, start - first * BLOCK_BYTES);
      this.stack.enqueueBlocks(first * BLOCK_BYTES, image);
    });
  }

  /** Write-through: every write is on the array and synced before it is acknowledged. */
  private async durable(_fua: boolean): Promise<void> {
    await this.stack.flush();
  }

  private assertOpen(): void {
    if (this.closed) throw new VolumeError('ESHUTDOWN', `volume ${this.name} is closed`);
  }
}
