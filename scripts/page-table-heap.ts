// What resident pages cost the JavaScript heap: a memory manager over a pool of --pool bytes, every
// frame filled with a 4 KiB page (prefetch over a store that reads zeros) and every other page
// written once (dirty, queued for destage), then the heap's growth per page and the time of one
// forced full collection. Run it from two checkouts to compare builds (docs/benchmarks.md, session 14:
// the page table took a 4 GiB pool from ~368 to ~69 bytes per page).
// Usage: node dist/scripts/page-table-heap.js [--pool 1GiB]
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseSize } from '../src/config/index.js';
import { FRAME_BYTES, FramePool, MemoryManager } from '../src/memory/index.js';
import type { BlockStore } from '../src/storage/index.js';

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv)).option('pool', { type: 'string', default: '1GiB', describe: 'the frame pool' }).strict().parse();
  const poolBytes = parseSize(args.pool);
  if (typeof poolBytes === 'string') throw new Error(`--pool: ${poolBytes}`);
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const store: BlockStore = {
    async readBlocks(_offset, into) {
      into.fill(0);
    },
    enqueueBlocks: () => undefined,
    async flush() {},
  };
  const partners = { livePartners: () => 1, writePage: async () => true, pageClean: () => undefined };
  const pages = poolBytes / FRAME_BYTES;
  const manager = new MemoryManager(new FramePool(poolBytes), store, partners, { highWatermarkPages: pages, lowWatermarkPages: 0 });
  const guid = '11111111-2222-4333-8444-555555555555';
  manager.createAllocation({ guid, arrayOffset: 0, sizeBytes: poolBytes, pageBytes: FRAME_BYTES });
  gc();
  const before = process.memoryUsage().heapUsed;
  const started = performance.now();
  for (let page = 0; page < pages; page += 256) manager.prefetch(guid, page, 256);
  for (let page = 0; page < pages; page += 2) {
    const pointer = await manager.obtainWritePointer(guid, page);
    (pointer.data[0] as number)++;
    await manager.releasePointer(pointer, { offset: 0, length: 1 });
  }
  const filled = performance.now() - started;
  const collecting = performance.now();
  gc();
  const collection = performance.now() - collecting;
  const grown = process.memoryUsage().heapUsed - before;
  process.stdout.write(
    `pool ${args.pool}: ${manager.residentPages} pages resident, ${manager.dirtyPages} dirty; heap +${(grown / 2 ** 20).toFixed(1)} MiB ` +
      `(${(grown / pages).toFixed(0)} B per page); filled in ${filled.toFixed(0)} ms; one full collection ${collection.toFixed(1)} ms\n`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
