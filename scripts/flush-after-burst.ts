// How long a FLUSH takes after a burst of writes and a pause: what a filesystem's periodic commit
// (ext4: every 5 s) waits for. A fresh two-node cluster of this checkout, a fio burst of 4 KiB random
// writes (no fsync) through the owner for --seconds, --pause seconds of nothing, then one FLUSH timed
// by nbdsh. Without idle destage the FLUSH destages the whole burst; with it the burst went to the
// disks during the pause. Run it from two checkouts (a git worktree for the older one) in turn.
// Usage: node dist/scripts/flush-after-burst.js [--seconds 3] [--pause 5] [--size 256MiB]
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseSize } from '../src/config/index.js';
import { withCluster } from '../test/support/ftvm-process.js';

const run = promisify(execFile);

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('seconds', { type: 'number', default: 3, describe: 'the burst' })
    .option('pause', { type: 'number', default: 5, describe: 'seconds between the burst and the FLUSH' })
    .option('size', { type: 'string', default: '256MiB', describe: 'the volume (frame pools 1.5 times it)' })
    .strict()
    .parse();
  const sizeBytes = parseSize(args.size);
  if (typeof sizeBytes === 'string') throw new Error(`--size: ${sizeBytes}`);
  await withCluster([{ name: 'vol0', sizeBytes }], { memoryBytes: Math.floor(sizeBytes * 1.5), logLevel: 'warn' }, async (cluster) => {
    const uri = cluster.node('a').uri('vol0');
    const burst = await run(
      'fio',
      ['--name=burst', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${sizeBytes}`, '--time_based', `--runtime=${args.seconds}`, '--output-format=json'],
      { maxBuffer: 1 << 26 },
    );
    const written = (JSON.parse(burst.stdout.slice(burst.stdout.indexOf('{'))) as { jobs: Array<{ write: { io_bytes: number } }> }).jobs[0]?.write.io_bytes ?? 0;
    await new Promise((resolve) => setTimeout(resolve, args.pause * 1000));
    // The system's python has the nbd module (python3-libnbd); a python of one's own may not.
    const timed = await run('nbdsh', ['-u', uri, '-c', 'import time\nt = time.monotonic()\nh.flush()\nprint(round((time.monotonic() - t) * 1000))'], {
      env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` },
    });
    process.stdout.write(`burst of ${(written / 2 ** 20).toFixed(0)} MiB, pause ${args.pause} s: FLUSH took ${timed.stdout.trim()} ms\n`);
  });
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
