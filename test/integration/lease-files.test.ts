// Proves a lease renewal does not wait for libuv's threadpool: with every pool thread blocked (each
// in an open() of a FIFO that nobody writes, as a thread stuck on a hung member would be), the lease
// files still take a renewal on a majority, synced, and read it back. Also that closing them ends
// their threads, so a process that only renewed a lease exits on its own.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { LeaseFiles } from '../../src/cluster/lease-files.js';
import { thisProcess, type Lease } from '../../src/storage/index.js';
import { makeTempDirectory } from '../support/ftvm-process.js';

const run = promisify(execFile);

function lease(sequence: number): Lease {
  return { slot: 3, sequence, epoch: 7, expiresAtMs: Date.now() + 2000, holder: 'b', ...thisProcess() };
}

/** Rejects with `what` if `promise` takes longer than `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe('lease files', function () {
  this.timeout(60_000);
  let directory: string;
  let members: string[];

  beforeEach(async () => {
    directory = await makeTempDirectory();
    members = ['m0', 'm1', 'm2'].map((name) => path.join(directory, name));
  });

  afterEach(async () => {
    await fs.promises.rm(directory, { recursive: true, force: true });
  });

  it('take and read back a renewal while every threadpool thread is blocked', async () => {
    const files = await LeaseFiles.open(members);
    const fifo = path.join(directory, 'fifo');
    await run('mkfifo', [fifo]);
    // More blocked opens than threads: the pool's queue behind them holds the rest.
    const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    const blocked = Array.from({ length: threads + 2 }, () => new Promise<number>((resolve, reject) => fs.open(fifo, 'r', (error, fd) => (error ? reject(error) : resolve(fd)))));
    // The pool is stuck: a plain file operation now waits (proof that the blocking took hold).
    const stat = fs.promises.stat(directory).then(() => 'done');
    try {
      expect(await Promise.race([stat, new Promise((resolve) => setTimeout(() => resolve('waiting'), 300))])).to.equal('waiting');
      await within(files.write(lease(11)), 5000, 'a lease write with the threadpool blocked');
      const slots = await within(files.readAll(), 5000, 'a lease read with the threadpool blocked');
      expect(slots[3]).to.include({ holder: 'b', sequence: 11, epoch: 7 });
    } finally {
      // One writer releases every blocked open; the stat queued behind them runs then.
      const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      for (const fd of await Promise.all(blocked)) fs.closeSync(fd);
      fs.closeSync(writer);
      await stat;
    }
    await files.close();
    // Synced on every file: a fresh opener reads it from the disks.
    const again = await LeaseFiles.open(members);
    expect((await again.readAll())[3]).to.include({ holder: 'b', sequence: 11 });
    await again.close();
  });

  it('end their threads when closed: a process that only renewed a lease exits by itself', async () => {
    const script = path.join(directory, 'renew.mjs');
    const leaseFiles = new URL('../../src/cluster/lease-files.js', import.meta.url).href;
    await fs.promises.writeFile(
      script,
      `import { LeaseFiles } from ${JSON.stringify(leaseFiles)};\n` +
        `const files = await LeaseFiles.open(${JSON.stringify(members)});\n` +
        `await files.write({ slot: 0, sequence: 1, epoch: 1, expiresAtMs: 1, holder: 'x', pid: 1, processStart: 0, host: '' });\n` +
        `console.log((await files.readAll())[0].holder);\n` +
        `await files.close();\n`,
    );
    const { stdout } = await within(run(process.execPath, [script]), 20_000, 'the renewing process');
    expect(stdout.trim()).to.equal('x');
  });
});
