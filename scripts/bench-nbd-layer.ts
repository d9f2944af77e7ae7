// The NBD front end alone: ftvm's NbdServer over a volume held in RAM (pre-touched, so no page
// faults) against `nbdkit memory`, same fio jobs, same run. Shows what the protocol layer costs
// without any storage below it, and what it costs the server process: CPU µs per MiB moved and the
// collections V8 ran during each ftvm job (a 'gc' PerformanceObserver in the server child, asked
// over the IPC channel, so nothing is profiled). Usage: node dist/scripts/bench-nbd-layer.js [--seconds 5]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { Exports, NbdServer } from '../src/nbd/index.js';
import { silentLogger } from '../src/observe/index.js';
import { freePort } from '../test/support/ftvm-process.js';
import { RamVolume } from '../test/support/ram-volume.js';
import { countCollections } from './gc-counter.js';

const run = promisify(execFile);
const SIZE = 1 << 30;
const JOBS = [
  ['4k randread QD32', 'randread', '4k', 32],
  ['4k randwrite QD32', 'randwrite', '4k', 32],
  ['1M seq read QD8', 'read', '1M', 8],
  ['1M seq write QD8', 'write', '1M', 8],
] as const;

async function serveChild(): Promise<void> {
  const volume = new RamVolume(SIZE);
  volume.bytes.fill(1);
  // The test double records calls; a benchmark must not grow that list forever.
  volume.calls.push = () => 0;
  const exports = new Exports();
  exports.add({ name: 'vol0', description: '', volume, readOnly: false });
  const server = new NbdServer(exports, silentLogger());
  await server.listen({ host: '127.0.0.1', port: Number(process.env.FTVM_BENCH_PORT) });
  const gcs = countCollections();
  let cpu = process.cpuUsage();
  // The parent asks before and after each job: the answer is what happened since the last question.
  process.on('message', () => {
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    // Entries are delivered asynchronously: let the last ones of the job arrive.
    setTimeout(() => {
      process.send?.({ cpuMicros: used.user + used.system, ...gcs });
      gcs.minor = gcs.major = 0;
    }, 100);
  });
  process.send?.('ready');
}

interface ServerStats {
  cpuMicros: number;
  minor: number;
  major: number;
}

function statsOf(child: ChildProcess): Promise<ServerStats> {
  return new Promise((resolve) => {
    child.once('message', (message) => resolve(message as ServerStats));
    child.send('stats');
  });
}

async function iops(uri: string, rw: string, bs: string, depth: number, seconds: number): Promise<number> {
  const { stdout } = await run('fio', ['--name=b', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`, `--size=${SIZE}`, '--time_based', `--runtime=${seconds}`, '--output-format=json'], { maxBuffer: 1 << 26 });
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<Record<string, { iops: number }>> }).jobs[0];
  return job?.[rw.includes('read') ? 'read' : 'write']?.iops ?? 0;
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] ?? 5) || 5;
  const ftvmPort = await freePort();
  const nbdkitPort = await freePort();
  const child = spawn(process.execPath, [process.argv[1] as string, '--child'], { env: { ...process.env, FTVM_BENCH_PORT: String(ftvmPort) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise((resolve) => child.once('message', resolve));
  const nbdkit = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(nbdkitPort), 'memory', String(SIZE)], { stdio: 'ignore' });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const lines = ['| job | ftvm NBD layer IOPS | nbdkit memory IOPS | ratio | server CPU µs/MiB | GCs minor/major |', '| --- | --- | --- | --- | --- | --- |'];
  try {
    for (const [name, rw, bs, depth] of JOBS) {
      const theirs = await iops(`nbd://127.0.0.1:${nbdkitPort}`, rw, bs, depth, seconds);
      await statsOf(child);
      const ours = await iops(`nbd://127.0.0.1:${ftvmPort}/vol0`, rw, bs, depth, seconds);
      const stats = await statsOf(child);
      const mib = (ours * seconds * blockBytes(bs)) / (1 << 20);
      const cpuPerMiB = mib > 0 ? (stats.cpuMicros / mib).toFixed(0) : '-';
      lines.push(`| ${name} | ${ours.toFixed(0)} | ${theirs.toFixed(0)} | ${(ours / theirs).toFixed(2)} | ${cpuPerMiB} | ${stats.minor}/${stats.major} |`);
    }
  } finally {
    child.kill('SIGKILL');
    nbdkit.kill('SIGTERM');
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

function blockBytes(bs: string): number {
  return bs.endsWith('M') ? Number(bs.slice(0, -1)) << 20 : Number(bs.slice(0, -1)) << 10;
}

(process.argv.includes('--child') ? serveChild() : main()).catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
