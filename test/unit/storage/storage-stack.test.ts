// Proves the storage stack forgets a cached block once a newer version of it was destaged (instead
// of keeping a copy of every destaged run), and still reads the newest data.
import { expect } from 'chai';
import type { RaidArray } from '../../../src/storage/index.js';
import { StorageStack } from '../../../src/storage/storage-stack.js';

const B = 4096;

/** An array of 64 blocks in memory: what the stack reads through and destages to. */
function memoryArray(): { array: RaidArray; bytes: Buffer } {
  const bytes = Buffer.alloc(64 * B, 1);
  const array = {
    sizeBytes: bytes.length,
    read: async (offset: number, into: Buffer) => void bytes.copy(into, 0, offset, offset + into.length),
    write: async (offset: number, data: Buffer) => void data.copy(bytes, offset),
    sync: async () => undefined,
    knownZero: (offset: number, length: number) => bytes.subarray(offset, offset + length).every((byte) => byte === 0),
  };
  return { array: array as unknown as RaidArray, bytes };
}

describe('storage stack', () => {
  it('drops cached blocks a destage replaced, copies nothing into the cache, and reads the new data', async () => {
    const { array, bytes } = memoryArray();
    const stack = new StorageStack(array, { capacityBytes: 64 * B, readAheadBytes: 0, highWatermarkBlocks: 32, lowWatermarkBlocks: 8, maxBatchBlocks: 16, maxConcurrentBatches: 1 });
    await stack.readBlocks(0, Buffer.alloc(8 * B));
    expect(stack.cache.cachedBytes).to.equal(8 * B);
    stack.enqueueBlocks(2 * B, Buffer.alloc(4 * B, 7));
    await stack.flush();
    expect(bytes.subarray(2 * B, 6 * B).every((byte) => byte === 7), 'on the array').to.equal(true);
    expect(stack.cache.cachedBytes, 'the four replaced blocks are gone from the cache, nothing was added').to.equal(4 * B);
    const read = Buffer.alloc(8 * B);
    await stack.readBlocks(0, read);
    expect([...read.subarray(0, 2 * B)].every((byte) => byte === 1)).to.equal(true);
    expect([...read.subarray(2 * B, 6 * B)].every((byte) => byte === 7)).to.equal(true);
  });

  it('knows blocks without I/O only where the array knows them and no newer write waits for the destage', async () => {
    const { array, bytes } = memoryArray();
    bytes.fill(0, 8 * B, 16 * B);
    const stack = new StorageStack(array, { capacityBytes: 64 * B, readAheadBytes: 0, highWatermarkBlocks: 32, lowWatermarkBlocks: 8, maxBatchBlocks: 16, maxConcurrentBatches: 1 });
    const into = Buffer.alloc(2 * B, 0xff);
    expect(stack.readKnown(0, into), 'the array does not know blocks 0-1').to.equal(false);
    expect(into.every((byte) => byte === 0xff), 'untouched when not known').to.equal(true);
    expect(stack.readKnown(8 * B, into)).to.equal(true);
    expect(into.every((byte) => byte === 0)).to.equal(true);
    stack.enqueueBlocks(9 * B, Buffer.alloc(B, 3));
    into.fill(0xff);
    expect(stack.readKnown(8 * B, into), 'block 9 has a write not yet on the array').to.equal(false);
    expect(into.every((byte) => byte === 0xff)).to.equal(true);
    await stack.flush();
    expect(stack.readKnown(8 * B, into), 'on the array now, and not zeroes').to.equal(false);
    expect(stack.readKnown(10 * B, into)).to.equal(true);
  });
});
