// Failback with and without the warm handover (config `warmFailback`), same machine, same run:
// node a owns vol0; data is written through a, a is killed, b takes vol0 over and reads all of the
// data (so it is resident in b's memory manager), then 4 KiB random writes run through b while a
// comes back and b hands vol0 back to it. Then a 4 KiB random-read job runs through a over the
// data. Reports, per mode, the pages b copied while serving and while paused (from b's log), the
// longest gap between the writes' completions (the pause a client sees), and the read job's IOPS.
// Usage: scripts/failback-warmth [--runs 3] [--data 128] (MiB) [--seconds 5]
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { requestControl, type ClusterStatus } from '../src/cluster/index.js';
import { startCluster, type FtvmNode } from '../test/support/ftvm-process.js';
import { completionTimes, longestGap, median } from './fio-log.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

interface RunResult {
  pagesCopied: number;
  /** The copy's pass while vol0 was still served. */
  liveMs: number;
  /** Pages sent, and time taken, while vol0 was paused (the part of the copy clients wait for). */
  pausedPages: number;
  pausedMs: number;
  /** The longest gap between completions of the writes running through b during the failback. */
  gapMs: number;
  iops: number;
}

async function clusterStatus(node: FtvmNode): Promise<ClusterStatus> {
  const result = await requestControl(path.join(node.directory, `${path.basename(node.socketPath, '.sock')}.control`), { op: 'cluster' });
  return result.cluster as ClusterStatus;
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function fio(uri: string, args: string[]): Promise<{ readIops: number }> {
  const { stdout } = await run('fio', ['--name=job', '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', ...args], { maxBuffer: 64 * MiB });
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<{ read: { iops: number }; error: number }> }).jobs[0];
  if (!job || job.error !== 0) throw new Error(`fio failed: ${stdout.slice(0, 400)}`);
  return { readIops: job.read.iops };
}

async function oneRun(warm: boolean, dataMiB: number, seconds: number): Promise<RunResult> {
  const cluster = await startCluster([{ name: 'vol0', sizeBytes: 512 * MiB, owner: 'a' }], { logLevel: 'info', memoryBytes: 256 * MiB, warmFailback: warm });
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-warmth-'));
  try {
    const a = cluster.node('a');
    const b = cluster.node('b');
    const size = `--size=${dataMiB}M`;
    await fio(a.uri('vol0'), ['--rw=write', '--bs=1M', '--iodepth=8', size]);
    await a.kill();
    await until('b serves vol0', async () => (await clusterStatus(b)).volumes.find((volume) => volume.name === 'vol0')?.owner === 'b');
    await fio(b.uri('vol0'), ['--rw=read', '--bs=1M', '--iodepth=8', size]);
    // Writes go on through b during the failback: the live pass copies around them, the paused pass
    // sends what they changed, and their longest gap is the pause a client sees.
    const logPrefix = path.join(work, 'lat');
    const writer = spawn('fio', ['--name=writer', '--ioengine=nbd', `--uri=${b.uri('vol0')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=16M', '--time_based', '--runtime=120', `--write_lat_log=${logPrefix}`, '--log_avg_msec=0'], { stdio: 'ignore' });
    const writerDone = new Promise<void>((resolve) => writer.once('exit', () => resolve()));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const returned = await cluster.start('a');
    await until('a serves vol0 again', async () => (await clusterStatus(returned)).volumes.find((volume) => volume.name === 'vol0')?.owner === 'a');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    writer.kill('SIGINT');
    await writerDone;
    const gapMs = longestGap(await completionTimes(`${logPrefix}_clat.1.log`));
    const copied = /volume vol0: (\d+) resident page\(s\) copied to node a \((\d+) in (\d+) ms while serving, (\d+) in (\d+) ms paused\)/.exec(b.log());
    const job = await fio(returned.uri('vol0'), ['--rw=randread', '--bs=4k', '--iodepth=32', size, '--time_based', `--runtime=${seconds}`, '--randrepeat=0']);
    return { pagesCopied: Number(copied?.[1] ?? 0), liveMs: Number(copied?.[3] ?? 0), pausedPages: Number(copied?.[4] ?? 0), pausedMs: Number(copied?.[5] ?? 0), gapMs, iops: job.readIops };
  } finally {
    await cluster.stop().catch(() => undefined);
    await fs.rm(cluster.directory, { recursive: true, force: true });
    await fs.rm(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('runs', { type: 'number', default: 3 })
    .option('data', { type: 'number', default: 128, describe: 'MiB written, read through b, then read through a' })
    .option('seconds', { type: 'number', default: 5 })
    .strict()
    .parseAsync();
  await run('fio', ['--version']);
  const results = { warm: [] as RunResult[], cold: [] as RunResult[] };
  // Interleaved, so drift of the machine falls on both modes alike.
  for (let index = 0; index < args.runs; index++) {
    for (const mode of ['warm', 'cold'] as const) {
      const result = await oneRun(mode === 'warm', args.data, args.seconds);
      results[mode].push(result);
      process.stdout.write(`run ${index + 1} ${mode}: ${result.pagesCopied} page(s) copied (${result.liveMs} ms live, ${result.pausedPages} page(s) in ${result.pausedMs} ms paused); longest write gap ${result.gapMs} ms; 4k randread QD32 through a for ${args.seconds} s: ${Math.round(result.iops)} IOPS\n`);
    }
  }
  const row = (mode: 'warm' | 'cold'): string => {
    const all = results[mode];
    const m = (pick: (result: RunResult) => number): number => Math.round(median(all.map(pick)));
    return `| ${mode} | ${all.length} | ${m((r) => r.pagesCopied)} | ${m((r) => r.liveMs)} | ${m((r) => r.pausedPages)} | ${m((r) => r.pausedMs)} | ${m((r) => r.gapMs)} | ${m((r) => r.iops)} |`;
  };
  process.stdout.write('| failback | runs | pages copied | live pass ms | pages copied paused | paused pass ms | longest write gap ms | 4k randread IOPS after |\n|---|---|---|---|---|---|---|---|\n');
  process.stdout.write(`${row('warm')}\n${row('cold')}\n`);
  const ratio = median(results.warm.map((result) => result.iops)) / median(results.cold.map((result) => result.iops));
  process.stdout.write(`first-read IOPS after failback, warm/cold: ${ratio.toFixed(2)} (medians)\n`);
}

await main();
