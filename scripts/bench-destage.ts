// What the destage of scattered 4 KiB blocks costs the process, alone: a raid5 array over three
// member files, a StorageStack, and batches of dirty blocks enqueued and flushed the way the memory
// manager destages a deep queue of random writes (sorted by address, `--density` of the blocks in
// the batch's range dirty). Reports blocks per second, the process's CPU per block (user + system,
// every thread) and the main thread's share, measured from /proc.
// Usage: node dist/scripts/bench-destage.js [--blocks 40000] [--density 0.37] [--batch 2048] [--level raid5]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../src/observe/index.js';
import { createArray, FileMember, type MemberDevice, type RaidLevel } from '../src/storage/index.js';
import { StorageStack, DEFAULT_STACK_OPTIONS } from '../src/storage/storage-stack.js';

const BLOCK = 4096;

function argument(name: string, fallback: string): string {
  const at = process.argv.indexOf(name);
  return at >= 0 ? (process.argv[at + 1] ?? fallback) : fallback;
}

/** Main-thread and whole-process CPU so far, in ns (schedstat) and ticks (stat). */
function cpu(): { mainNs: number; processUs: number } {
  const mainNs = Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
  const usage = process.cpuUsage();
  return { mainNs, processUs: usage.user + usage.system };
}

/** `--members memory`: the same array over buffers, so what remains is the process's own work per block. */
async function memoryMember(file: string, sizeBytes: number): Promise<MemberDevice> {
  const bytes = Buffer.alloc(sizeBytes);
  return {
    path: file,
    read: async (offset, into) => void bytes.copy(into, 0, offset, offset + into.length),
    write: async (offset, data) => void data.copy(bytes, offset),
    sync: async () => undefined,
    sizeBytes: async () => sizeBytes,
    close: async () => undefined,
  };
}

async function main(): Promise<void> {
  const total = Number(argument('--blocks', '40000'));
  const density = Number(argument('--density', '0.37'));
  const batchBlocks = Number(argument('--batch', '2048'));
  const level = argument('--level', 'raid5') as RaidLevel;
  const volumeBlocks = 65536;
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'ftvm-destage-'));
  const memberPaths = [0, 1, 2].map((index) => path.join(directory, `disk${index}.img`));
  try {
    const create = argument('--members', 'files') === 'memory' ? memoryMember : FileMember.create;
    const array = await createArray({ level, memberPaths, memberDataBytes: volumeBlocks * BLOCK }, { logger: silentLogger(), now: () => Date.now() }, create);
    const stack = new StorageStack(array, DEFAULT_STACK_OPTIONS);
    // Fill once (whole stripes), so every later read-modify-write reads real blocks.
    const fill = Buffer.alloc(8 << 20, 0x11);
    for (let at = 0; at < array.sizeBytes; at += fill.length) await array.write(at, fill.subarray(0, Math.min(fill.length, array.sizeBytes - at)));
    await array.sync();
    const arrayBlocks = array.sizeBytes / BLOCK;
    const batch = Buffer.alloc(batchBlocks * BLOCK, 0x5a);
    let done = 0;
    let cursor = 0;
    const before = cpu();
    const started = process.hrtime.bigint();
    while (done < total) {
      // The next `batchBlocks` dirty blocks in address order, each block dirty with probability `density`.
      let taken = 0;
      while (taken < batchBlocks) {
        if (cursor >= arrayBlocks) cursor = 0;
        if (Math.random() < density) {
          stack.enqueueBlocks(cursor * BLOCK, batch.subarray(taken * BLOCK, (taken + 1) * BLOCK));
          taken++;
        }
        cursor++;
      }
      await stack.flush();
      done += taken;
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const after = cpu();
    await array.stop();
    process.stdout.write(
      `${level} density ${density} batch ${batchBlocks}: ${(done / seconds).toFixed(0)} blocks/s, CPU µs per block: process ${((after.processUs - before.processUs) / done).toFixed(1)}, main thread ${((after.mainNs - before.mainNs) / 1000 / done).toFixed(1)}\n`,
    );
  } finally {
    fs.rmSync(directory, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
