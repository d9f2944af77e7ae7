// The peer every benchmark compares with: nbdkit's file plugin over a file filled with the same
// pseudo-random content each time, so reads hit real data and the scripts compare like with like.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort } from '../test/support/ftvm-process.js';

const run = promisify(execFile);

/** Fills `file` with `sizeBytes` of the same content every time (fio's seed 7), synced. */
export async function prefill(file: string, sizeBytes: number): Promise<void> {
  await run('fio', ['--name=fill', '--ioengine=psync', `--filename=${file}`, '--rw=write', '--bs=1M', `--size=${sizeBytes}`,
    '--refill_buffers', '--randseed=7', '--end_fsync=1'], { maxBuffer: 1 << 26 });
}

/** nbdkit's file plugin over `file` on a free loopback port, once nbdinfo gets an answer. */
export async function startNbdkit(file: string): Promise<{ child: ChildProcess; uri: string }> {
  const port = await freePort();
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'file', file], { stdio: 'ignore' });
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`]);
      return { child, uri: `nbd://127.0.0.1:${port}` };
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error('nbdkit did not start');
}
