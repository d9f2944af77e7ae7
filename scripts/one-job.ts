// One fio job on a fresh two-node cluster: the harness behind the paired (A/B) figures of
// docs/benchmarks.md. Starts a cluster of this checkout (bin/ftvm), with frame pools of 1.5 times
// the volume unless --memory says otherwise; fills the volume first (1M writes, fsync at the end)
// unless --cold; then runs one fio nbd job through node --via, after a 1 s ramp, and prints its
// IOPS. To compare two builds, run it from two checkouts (a git worktree for the older one) in
// turn, several times: one run says little on a machine shared with fio. It also prints each node's
// CPU time per request over the job (utime + stime from /proc, ramp included, at the job's rate),
// which moves less between runs here than the IOPS do.
// Usage: node dist/scripts/one-job.js --rw randread --bs 4k --depth 32 [--via a|b] [--owner a|b] [--size 256MiB] [--memory SIZE]
//          [--seconds 5 | --ios N] [--cold] [--cpu-prof DIR]
// --ios N: a fixed amount of work instead of a time: N requests and a FLUSH at the end (fio's
// end_fsync), so everything the job dirtied is destaged inside it; then the CPU per request is the
// whole cost of a write, destage included, and moves less between runs than the IOPS.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import { promisify } from 'node:util';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseSize } from '../src/config/index.js';
import { withCluster } from '../test/support/ftvm-process.js';

const run = promisify(execFile);

function size(text: string, option: string): number {
  const bytes = parseSize(text);
  if (typeof bytes === 'string') throw new Error(`--${option}: ${bytes}`);
  return bytes;
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('rw', { type: 'string', default: 'randread', choices: ['read', 'write', 'randread', 'randwrite'], describe: "fio's --rw" })
    .option('bs', { type: 'string', default: '4k', describe: "fio's --bs" })
    .option('depth', { type: 'number', default: 32, describe: "fio's --iodepth" })
    .option('via', { type: 'string', default: 'a', choices: ['a', 'b'], describe: 'the node fio talks to' })
    .option('owner', { type: 'string', default: 'a', choices: ['a', 'b'], describe: 'the node that owns the volume (a holds the array either way)' })
    .option('size', { type: 'string', default: '256MiB', describe: 'the volume' })
    .option('memory', { type: 'string', describe: 'each node frame pool (default 1.5 times the volume)' })
    .option('seconds', { type: 'number', default: 5, describe: 'the job, after a 1 s ramp' })
    .option('ios', { type: 'number', describe: 'a fixed number of requests and a FLUSH at the end instead of --seconds' })
    .option('cold', { type: 'boolean', default: false, describe: 'no fill first: a never-written volume' })
    .option('cpu-prof', { type: 'string', describe: 'each node writes a V8 CPU profile into this directory; the job window is printed in the profiles\' clock (monotonic µs)' })
    .strict()
    .parse();
  const sizeBytes = size(args.size, 'size');
  const memoryBytes = args.memory === undefined ? Math.floor(sizeBytes * 1.5) : size(args.memory, 'memory');
  const nodeArgs = args.cpuProf === undefined ? undefined : ['--cpu-prof', '--cpu-prof-dir', args.cpuProf];
  await withCluster([{ name: 'vol0', sizeBytes, owner: args.owner }], { memoryBytes, logLevel: 'warn', nodeArgs }, async (cluster) => {
    const uri = cluster.node(args.via).uri('vol0');
    if (!args.cold) await run('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`, '--end_fsync=1']);
    const nodes = ['a', 'b'].map((name) => cluster.node(name));
    const before = await Promise.all(nodes.map(cpuTicks));
    const startedUs = process.hrtime.bigint() / 1000n;
    const { stdout } = await run(
      'fio',
      ['--name=job', '--ioengine=nbd', `--uri=${uri}`, `--rw=${args.rw}`, `--bs=${args.bs}`, `--iodepth=${args.depth}`, `--size=${sizeBytes}`, ...(args.ios === undefined ? ['--time_based', `--runtime=${args.seconds}`, '--ramp_time=1'] : [`--number_ios=${args.ios}`, '--end_fsync=1']), '--output-format=json'],
      { maxBuffer: 1 << 26 },
    );
    const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<Record<string, FioSide>> }).jobs[0];
    const side = job?.[args.rw.includes('read') ? 'read' : 'write'];
    const iops = side?.iops ?? 0;
    const after = await Promise.all(nodes.map(cpuTicks));
    if (args.cpuProf !== undefined) process.stdout.write(`job window in the profiles' clock: ${startedUs} ${process.hrtime.bigint() / 1000n}\n`);
    const requests = args.ios ?? iops * (args.seconds + 1);
    const us = (ticks: number): string => ((ticks * 1e6) / USER_HZ / requests).toFixed(1);
    const perRequest = after
      .map(([user, system], index) => {
        const [userBefore, systemBefore] = before[index] as [number, number];
        return `${['a', 'b'][index]} ${us(user - userBefore + system - systemBefore)} (user ${us(user - userBefore)}, system ${us(system - systemBefore)})`;
      })
      .join(', ');
    process.stdout.write(`${args.cold ? 'cold ' : ''}${args.rw} ${args.bs} QD${args.depth} via ${args.via} (owner ${args.owner}): ${iops.toFixed(0)} IOPS; CPU µs per request: ${perRequest}\n`);
    process.stdout.write(`completion latency µs: ${latencies(side)}\n`);
  });
}

interface FioSide {
  iops: number;
  clat_ns?: { percentile?: Record<string, number>; max?: number };
}

/** fio's completion latency percentiles, the tail included: a stall shows there, not in the mean. */
function latencies(side: FioSide | undefined): string {
  const percentile = side?.clat_ns?.percentile ?? {};
  const at = (key: string): string => (percentile[key] === undefined ? '-' : ((percentile[key] as number) / 1000).toFixed(0));
  return `p50 ${at('50.000000')}, p99 ${at('99.000000')}, p99.9 ${at('99.900000')}, p99.99 ${at('99.990000')}, max ${((side?.clat_ns?.max ?? 0) / 1000).toFixed(0)}`;
}

/** USER_HZ: what /proc counts CPU time in on Linux. */
const USER_HZ = 100;

/** User and system CPU ticks of a node so far. */
async function cpuTicks(node: { child: { pid?: number } }): Promise<[number, number]> {
  const stat = await fs.readFile(`/proc/${node.child.pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): utime is field 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [Number(fields[11]), Number(fields[12])];
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
