// What a file read costs through libuv's threadpool, by pool size and by how many reads wait in it.
// Every member read and write of ftvm goes through that pool; this shows why ftvm leaves it at four
// threads and keeps up to 32 member operations in it (src/storage/disk-queue.ts), and lease I/O out
// of it (src/cluster/lease-file-thread.ts).
//
// Each case is a child process with its own UV_THREADPOOL_SIZE that keeps `depth` 4 KiB fs.read()s
// of a sparse 512 MiB file in flight (random offsets, all from the page cache: only the pool and the
// system call are measured) until 100000 are done. Reported: reads per second and the child's CPU
// (user + system) per read, which counts the threads' wake-ups and hand-overs as well as the reads.
// Usage: node dist/scripts/bench-threadpool.js [--reads 100000] [--cases 16x12,16x32,4x32,4x12,2x32]
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const FILE_BYTES = 512 << 20;
const BLOCK = 4096;

function argument(name: string, fallback: string): string {
  const at = process.argv.indexOf(name);
  return at >= 0 ? (process.argv[at + 1] ?? fallback) : fallback;
}

async function child(file: string, reads: number, depth: number): Promise<void> {
  const fd = fs.openSync(file, 'r');
  const blocks = FILE_BYTES / BLOCK;
  let issued = 0;
  let done = 0;
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  await new Promise<void>((resolve, reject) => {
    const next = (buffer: Buffer): void => {
      if (issued >= reads) return;
      issued++;
      fs.read(fd, buffer, 0, BLOCK, Math.floor(Math.random() * blocks) * BLOCK, (error) => {
        if (error) return reject(error);
        if (++done === reads) resolve();
        else next(buffer);
      });
    };
    for (let lane = 0; lane < depth; lane++) next(Buffer.alloc(BLOCK));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  fs.closeSync(fd);
  process.stdout.write(JSON.stringify({ perSecond: reads / seconds, cpuMicros: (used.user + used.system) / reads }));
}

async function main(): Promise<void> {
  const reads = Number(argument('--reads', '100000'));
  const cases = argument('--cases', '16x12,16x32,4x32,4x12,2x32').split(',').map((text) => text.split('x').map(Number) as [number, number]);
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'ftvm-threadpool-'));
  const file = path.join(directory, 'sparse.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, FILE_BYTES);
  const lines = ['| threads | reads in flight | reads/s | CPU µs per read |', '| --- | --- | --- | --- |'];
  try {
    for (const [threads, depth] of cases) {
      const { stdout } = await run(process.execPath, [process.argv[1] as string, '--child', file, String(reads), String(depth)], { env: { ...process.env, UV_THREADPOOL_SIZE: String(threads) } });
      const result = JSON.parse(stdout) as { perSecond: number; cpuMicros: number };
      lines.push(`| ${threads} | ${depth} | ${result.perSecond.toFixed(0)} | ${result.cpuMicros.toFixed(1)} |`);
    }
  } finally {
    fs.rmSync(directory, { recursive: true, force: true });
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

const at = process.argv.indexOf('--child');
(at >= 0 ? child(process.argv[at + 1] as string, Number(process.argv[at + 2]), Number(process.argv[at + 3])) : main()).catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
