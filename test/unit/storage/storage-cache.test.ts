// Proves the storage cache serves hits without the source, reads ahead for sequential readers only,
// and never lets a load that raced a write put stale data in the cache.
import { expect } from 'chai';
import { StorageCache, type BlockSource } from '../../../src/storage/storage-cache.js';

const B = 4096;

class FakeSource implements BlockSource {
  readonly sizeBytes = 256 * B;
  readonly bytes = Buffer.alloc(256 * B);
  readonly reads: Array<[number, number]> = [];
  gate: Promise<void> | null = null;
  async read(offset: number, into: Buffer): Promise<void> {
    this.reads.push([offset / B, into.length / B]);
    const snapshot = Buffer.from(this.bytes.subarray(offset, offset + into.length));
    if (this.gate) await this.gate;
    snapshot.copy(into);
  }
}

describe('StorageCache', () => {
  it('serves a second read from memory and groups misses into runs', async () => {
    const source = new FakeSource();
    source.bytes.fill(3);
    const cache = new StorageCache(source, { capacityBytes: 64 * B, readAheadBytes: 0 });
    await cache.read(2 * B, Buffer.alloc(B));
    const out = Buffer.alloc(4 * B);
    await cache.read(0, out);
    expect(source.reads).to.deep.equal([[2, 1], [0, 2], [3, 1]]);
    await cache.read(0, Buffer.alloc(4 * B));
    expect(source.reads).to.have.length(3);
    expect(out.every((byte) => byte === 3)).to.equal(true);
    expect(cache.statistics).to.include({ hits: 5, misses: 4 });
  });

  it('without keepReads keeps no copy of what a caller read, but keeps what it read ahead', async () => {
    const source = new FakeSource();
    source.bytes.fill(5);
    const cache = new StorageCache(source, { capacityBytes: 64 * B, readAheadBytes: 4 * B, keepReads: false });
    await cache.read(0, Buffer.alloc(2 * B));
    await cache.read(2 * B, Buffer.alloc(2 * B));
    // The second read was sequential: blocks 4..7 were read ahead (owned by the cache).
    expect(source.reads).to.deep.equal([[0, 2], [2, 2], [4, 4]]);
    expect(cache.cachedBytes).to.equal(4 * B);
    const again = Buffer.alloc(2 * B);
    await cache.read(0, again);
    expect(source.reads, 'a caller read again goes to the source').to.have.length(4);
    expect(again.every((byte) => byte === 5)).to.equal(true);
    await cache.read(4 * B, Buffer.alloc(4 * B));
    expect(source.reads, 'what was read ahead is served from memory').to.have.length(4);
  });

  it('reads ahead after a sequential read, not after a random one', async () => {
    const source = new FakeSource();
    const cache = new StorageCache(source, { capacityBytes: 64 * B, readAheadBytes: 8 * B });
    await cache.read(100 * B, Buffer.alloc(B));
    await cache.read(10 * B, Buffer.alloc(B));
    expect(source.reads).to.deep.equal([[100, 1], [10, 1]]);
    await cache.read(11 * B, Buffer.alloc(B));
    await new Promise((resolve) => setImmediate(resolve));
    expect(source.reads[3]).to.deep.equal([12, 8]);
    await cache.read(12 * B, Buffer.alloc(3 * B));
    expect(source.reads.slice(4), 'blocks 12..14 came from the cache; the window moved on').to.deep.equal([[20, 3]]);
  });

  it('does not cache what a load read if a write replaced the block meanwhile', async () => {
    const source = new FakeSource();
    let open!: () => void;
    source.gate = new Promise((resolve) => (open = resolve));
    const cache = new StorageCache(source, { capacityBytes: 64 * B, readAheadBytes: 0 });
    const load = cache.read(0, Buffer.alloc(B));
    source.bytes.fill(9, 0, B);
    cache.put(0, Buffer.alloc(B, 9));
    open();
    await load;
    const again = Buffer.alloc(B);
    await cache.read(0, again);
    expect(again[0]).to.equal(9);
  });

  it('stays within its byte capacity', async () => {
    const source = new FakeSource();
    const cache = new StorageCache(source, { capacityBytes: 16 * B, readAheadBytes: 0 });
    await cache.read(0, Buffer.alloc(64 * B));
    expect(cache.cachedBytes).to.equal(16 * B);
  });
});
