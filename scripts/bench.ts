// Benchmark: the same fio jobs against ftvm and against nbdkit's file plugin over a file of the
// same size, in one run, interleaved job by job so both see the same machine state. nbdkit's file
// plugin is unmirrored and acknowledges from the page cache. ftvm runs as:
//   mirrored    the two-node cluster (processes a and b, raid5 over three files): fio through the
//               owner a, each write acknowledged once node b holds it
//   forwarded   the same cluster, fio through node b, which forwards every request to the owner
//   single      one node, no partner: write-through (on the array and synced before the ack)
//   degraded    single, with one RAID member failed through the control socket
//   tls         the cost of TLS: the mirrored cluster again with NBD TLS (PSK, required) and the
//               partner link encrypted, against the same cluster without TLS, via owner and via
//               partner (where every byte crosses both links)
//   cold        a fresh two-node cluster on a never-written volume, no fill and no flush first:
//               what a new volume costs (page allocation, first writes), not the warm steady state
//   cold-forwarded  the same on another fresh cluster, fio through b, the node that does not own
//               the volume (nor hold the array): what a multipath client's second path meets first
// Every job is preceded by an NBD FLUSH to both servers, so one job's destage does not run into
// the next. Prints IOPS, MB/s and the ftvm/nbdkit ratio (for tls: TLS on / TLS off), and for fio
// jobs what the ftvm processes spent on them: CPU µs per MiB moved (utime + stime from /proc, no
// profiler) and V8 collections (minor/major, from --trace-gc on the nodes' stdout). With both
// mirrored and forwarded, each job runs through the owner and then through the partner before the
// next job, and a second table gives IOPS via partner over IOPS via owner.
// --json FILE also writes the rows as JSON (date, commit, command), for scripts/plot-bench.
// --rounds N runs each job N times (each round: every set-up's pair of runs), reports the round of
// the median ftvm/nbdkit ratio with every round's ratio beside it, and the median of the rounds'
// partner/owner ratios; the cold mode runs once whatever N says (a volume is cold once).
// Usage: scripts/bench [--seconds 5] [--size 1GiB] [--markdown] [--modes cold,cold-forwarded,mirrored,forwarded,single,degraded,tls]
//          [--rounds 1] [--json FILE]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseSize } from '../src/config/index.js';
import { requestControl } from '../src/cluster/index.js';
import { RawClient } from '../test/support/raw-client.js';
import { freePort, launch, makeTempDirectory, startCluster, withCluster, writeSingleNodeConfig, type FtvmNode } from '../test/support/ftvm-process.js';
import { prefill, startNbdkit } from './nbdkit-peer.js';

const run = promisify(execFile);

interface Job {
  name: string;
  rw: string;
  bs: string;
  iodepth: number;
}

const JOBS: Job[] = [
  { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { name: '1M seq read QD8', rw: 'read', bs: '1M', iodepth: 8 },
  { name: '1M seq write QD8', rw: 'write', bs: '1M', iodepth: 8 },
];

interface Result {
  iops: number;
  bytesPerSecond: number;
  /** With --rounds above 1 (ftvm's side): every round's IOPS and ratio to its peer, in round order; the row is the round of the median ratio. */
  rounds?: { iops: number[]; ratios: number[] };
  /** What the ftvm processes spent on the job (fio jobs against ftvm only). */
  server?: ServerCost;
}

interface ServerCost {
  cpuMicrosPerMiB: number;
  minorGcs: number;
  majorGcs: number;
}

/**
 * The CPU time and collections of the ftvm processes between two samples. CPU comes from
 * /proc/PID/stat (Linux); collections from the lines V8's --trace-gc writes to each node's stdout
 * (the nodes are started with it: TRACE_GC).
 */
class ServerMeter {
  private minor = 0;
  private major = 0;
  private cpuTicks = 0;

  constructor(private readonly nodes: readonly FtvmNode[]) {
    for (const node of nodes) {
      let partial = '';
      node.child.stdout?.on('data', (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (/Scavenge|Minor Mark-Compact/.test(line)) this.minor++;
          else if (/Mark-Compact|Mark-sweep/.test(line)) this.major++;
        }
      });
    }
  }

  /** Starts a measurement. */
  async start(): Promise<void> {
    this.minor = this.major = 0;
    this.cpuTicks = await this.ticks();
  }

  /** What was spent since start(), for `bytes` moved. */
  async stop(bytes: number): Promise<ServerCost> {
    const ticks = (await this.ticks()) - this.cpuTicks;
    return { cpuMicrosPerMiB: (ticks * (1e6 / CLOCK_TICKS_PER_SECOND)) / (bytes / 2 ** 20), minorGcs: this.minor, majorGcs: this.major };
  }

  private async ticks(): Promise<number> {
    let total = 0;
    for (const node of this.nodes) {
      const stat = await fs.readFile(`/proc/${node.child.pid}/stat`, 'utf8').catch(() => '');
      // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    }
    return total;
  }
}

/** USER_HZ: what /proc counts CPU time in on Linux. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Node's own arguments for the ftvm processes: their collections traced to stdout, for ServerMeter. */
const TRACE_GC = ['--trace-gc'];

/** An NBD FLUSH, so the previous job's writes are on disk before the next job starts (our own client: no nbdsh/Python needed). */
async function flush(uri: string): Promise<void> {
  const { hostname, port, pathname } = new URL(uri);
  const client = await RawClient.connect({ host: hostname, port: Number(port) });
  try {
    await client.attach(decodeURIComponent(pathname.slice(1)));
    client.request(NBD_CMD_FLUSH, { handle: 1n });
    const reply = await client.readReply();
    if (reply.error !== 0) throw new Error(`FLUSH of ${uri} failed with errno ${reply.error}`);
  } finally {
    client.close();
  }
}

const NBD_CMD_FLUSH = 3;

/** A time-based run of `seconds`; 0 seconds means one pass over the whole size. */
async function fio(uri: string, job: Job, seconds: number, sizeBytes: number, extra: readonly string[] = []): Promise<Result> {
  const timing = seconds > 0 ? ['--time_based', `--runtime=${seconds}`, '--ramp_time=1'] : [];
  const { stdout } = await run(
    'fio',
    ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`,
      `--size=${sizeBytes}`, ...timing, ...extra, '--output-format=json'],
    { maxBuffer: 1 << 26 },
  );
  const report = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<Record<'read' | 'write', { iops: number; bw_bytes: number }>> };
  const side = job.rw.includes('read') ? 'read' : 'write';
  const stats = report.jobs[0]?.[side];
  if (!stats) throw new Error(`fio printed no ${side} stats`);
  return { iops: stats.iops, bytesPerSecond: stats.bw_bytes };
}

function format(rows: Array<[string, Result, Result]>, markdown: boolean, names: [string, string] = ['ftvm', 'nbdkit']): string {
  const [ours, theirs] = names;
  const costs = rows.some(([, measured]) => measured.server !== undefined);
  const rounds = rows.some(([, measured]) => measured.rounds !== undefined);
  const header = ['job', `${ours} IOPS`, `${ours} MB/s`, `${theirs} IOPS`, `${theirs} MB/s`, `${ours}/${theirs}`, ...(rounds ? ['per round'] : []), ...(costs ? [`${ours} CPU µs/MiB`, `${ours} GCs minor/major`] : [])];
  const lines = rows.map(([name, ours, theirs]) => [
    name,
    ours.iops.toFixed(0),
    (ours.bytesPerSecond / 1e6).toFixed(1),
    theirs.iops.toFixed(0),
    (theirs.bytesPerSecond / 1e6).toFixed(1),
    (ours.iops / theirs.iops).toFixed(2),
    ...(rounds ? [ours.rounds ? ours.rounds.ratios.map((ratio) => ratio.toFixed(2)).join(' ') : '-'] : []),
    ...(costs ? [ours.server ? ours.server.cpuMicrosPerMiB.toFixed(0) : '-', ours.server ? `${ours.server.minorGcs}/${ours.server.majorGcs}` : '-'] : []),
  ]);
  return table(header, lines, markdown);
}

/** A markdown table, or columns padded to their widest cell. */
function table(header: readonly string[], lines: ReadonlyArray<readonly string[]>, markdown: boolean): string {
  if (markdown) return [header, header.map(() => '---'), ...lines].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
  const widths = header.map((_, column) => Math.max(...[header, ...lines].map((cells) => (cells[column] as string).length)));
  return [header, ...lines].map((cells) => cells.map((cell, column) => cell.padStart(widths[column] as number)).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('seconds', { type: 'number', default: 5, describe: 'fio runtime per job and server' })
    .option('size', { type: 'string', default: '1GiB', describe: 'file size for each server' })
    .option('markdown', { type: 'boolean', default: false, describe: 'print a markdown table' })
    .option('modes', { type: 'string', default: 'mirrored,forwarded,single,degraded', describe: `which ftvm set-ups to run (comma-separated: ${MODES.join(', ')})` })
    .option('memory', { type: 'string', describe: 'frame pool per node in the cluster modes (default 1.5 × size: the working set fits, as the file fits nbdkit\'s page cache)' })
    .option('page-size', { type: 'string', describe: 'memory manager page size in the cluster modes (default: the config default)' })
    .option('json', { type: 'string', describe: 'also write the results to this file as JSON (scripts/plot-bench reads it)' })
    .option('rounds', { type: 'number', default: 1, describe: 'run each job this many times, interleaved, and report the round of the median ratio (not the cold mode: a volume is cold once)' })
    .strict()
    .parseAsync();
  const sizeBytes = parseSize(args.size);
  if (typeof sizeBytes === 'string') throw new Error(`--size: ${sizeBytes}`);
  const memoryBytes = args.memory === undefined ? Math.ceil((sizeBytes * 1.5) / 2 ** 20) * 2 ** 20 : parseSize(args.memory);
  if (typeof memoryBytes === 'string') throw new Error(`--memory: ${memoryBytes}`);
  const modes = new Set(args.modes.split(',').map((mode) => mode.trim()));
  const unknown = [...modes].filter((mode) => !MODES.includes(mode));
  if (unknown.length > 0) throw new Error(`--modes: unknown mode ${unknown.join(', ')} (known: ${MODES.join(', ')})`);
  if (!(Number.isInteger(args.rounds) && args.rounds >= 1)) throw new Error(`--rounds: a whole number from 1, not ${args.rounds}`);
  const rounds = args.rounds;
  const directory = await makeTempDirectory('ftvm-bench-');
  const nbdkitFile = path.join(directory, 'nbdkit.img');
  await fs.writeFile(nbdkitFile, '');
  await prefill(nbdkitFile, sizeBytes);
  const nbdkit = await startNbdkit(nbdkitFile);
  const rows: Array<[string, Result, Result]> = [];
  const tlsRows: Array<[string, Result, Result]> = [];
  // Fill through NBD, so reads hit written data on the array, as they do for nbdkit; then FLUSH,
  // as nbdkit's file was synced: without it the first job (4k randread) ran beside the destage
  // of the fill's dirty pages, and measured 11k–36k IOPS instead of ~50k (session 6).
  const fill = (uri: string): Promise<unknown> => fio(uri, { name: 'fill', rw: 'write', bs: '1M', iodepth: 8 }, 0, sizeBytes, ['--end_fsync=1']).catch(() => undefined);
  try {
    const pageBytes = args['page-size'] === undefined ? undefined : parseSize(args['page-size']);
    if (typeof pageBytes === 'string') throw new Error(`--page-size: ${pageBytes}`);
    if (modes.has('cold')) {
      // First, on purpose: nothing has run on this machine's caches for ftvm yet either.
      await withCluster([{ name: 'vol0', sizeBytes }], { memoryBytes, pageBytes, logLevel: 'warn', nodeArgs: TRACE_GC }, async (cluster) => {
        const meter = new ServerMeter([...cluster.nodes.values()]);
        await runJobs(rows, [{ suffix: ' (2 nodes, cold volume)', uri: cluster.node('a').uri('vol0') }], nbdkit.uri, args.seconds, sizeBytes, meter, false);
      });
    }
    if (modes.has('cold-forwarded')) {
      await withCluster([{ name: 'vol0', sizeBytes }], { memoryBytes, pageBytes, logLevel: 'warn', nodeArgs: TRACE_GC }, async (cluster) => {
        const meter = new ServerMeter([...cluster.nodes.values()]);
        await runJobs(rows, [{ suffix: ' (2 nodes, cold volume, via partner)', uri: cluster.node('b').uri('vol0') }], nbdkit.uri, args.seconds, sizeBytes, meter, false);
      });
    }
    if (modes.has('mirrored') || modes.has('forwarded')) {
      await withCluster([{ name: 'vol0', sizeBytes }], { memoryBytes, pageBytes, logLevel: 'warn', nodeArgs: TRACE_GC }, async (cluster) => {
        const meter = new ServerMeter([...cluster.nodes.values()]);
        await fill(cluster.node('a').uri('vol0'));
        // Through the owner and through the partner job by job, so that the partner/owner ratio
        // (issue 15's target for the forwarded path) compares runs seconds apart, not minutes.
        const targets = [
          ...(modes.has('mirrored') ? [{ suffix: OWNER_SUFFIX, uri: cluster.node('a').uri('vol0') }] : []),
          ...(modes.has('forwarded') ? [{ suffix: PARTNER_SUFFIX, uri: cluster.node('b').uri('vol0') }] : []),
        ];
        await runJobs(rows, targets, nbdkit.uri, args.seconds, sizeBytes, meter, true, rounds);
      });
    }
    if (modes.has('tls')) await runTlsComparison(tlsRows, memoryBytes);
    if (modes.has('single') || modes.has('degraded')) {
      const port = await freePort();
      const configFile = await writeSingleNodeConfig(directory, [{ name: 'vol0', sizeBytes }], { host: '127.0.0.1', port });
      const ftvm = await launch(configFile, 'a', { host: '127.0.0.1', port, directory, logLevel: 'warn', nodeArgs: TRACE_GC });
      try {
        const meter = new ServerMeter([ftvm]);
        await fill(ftvm.uri('vol0'));
        if (modes.has('single')) await runJobs(rows, [{ suffix: ' (1 node, write-through)', uri: ftvm.uri('vol0') }], nbdkit.uri, args.seconds, sizeBytes, meter, true, rounds);
        if (modes.has('degraded')) {
          const result = await requestControl(path.join(directory, 'a.control'), { op: 'fail', member: 1 });
          if (!result.ok) throw new Error(`could not fail a member: ${result.error}`);
          await runJobs(rows, [{ suffix: ' (1 node, raid5 degraded)', uri: ftvm.uri('vol0') }], nbdkit.uri, args.seconds, sizeBytes, meter, true, rounds);
        }
      } finally {
        await ftvm.stop();
      }
    }
  } finally {
    nbdkit.child.kill('SIGTERM');
    await fs.rm(directory, { recursive: true, force: true });
  }
  if (rows.length > 0) process.stdout.write(`${format(rows, args.markdown)}\n`);
  const forwarding = partnerOverOwner(rows);
  if (forwarding.length > 0) process.stdout.write(`\n${formatForwarding(forwarding, args.markdown)}\n`);
  if (tlsRows.length > 0) process.stdout.write(`${rows.length > 0 ? '\n' : ''}${format(tlsRows, args.markdown, ['TLS', 'plain'])}\n`);
  if (args.json) await writeJson(args.json, rows, tlsRows, forwarding);
}

/**
 * The rows as JSON: each with its job and set-up (the label's parenthesis), both sides' figures
 * and the ratio, plus when, on which commit and with which command they were measured.
 */
async function writeJson(file: string, rows: Array<[string, Result, Result]>, tlsRows: Array<[string, Result, Result]>, forwarding: Forwarding[]): Promise<void> {
  const cwd = path.dirname(new URL(import.meta.url).pathname);
  const head = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd }).then(
    ({ stdout }) => stdout.trim(),
    () => null,
  );
  // A run from a changed working tree is not that commit's figure: say so in the record.
  const changed = await run('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src', 'scripts', 'bin'], { cwd }).then(
    ({ stdout }) => stdout.trim() !== '',
    () => false,
  );
  const commit = head !== null && changed ? `${head}+changes` : head;
  const entry = (compared: [string, string]) => ([label, ours, theirs]: [string, Result, Result]) => {
    const match = /^(.*?) \((.*)\)$/.exec(label);
    return { label, job: match?.[1] ?? label, setup: match?.[2] ?? '', names: compared, ours, theirs, ratio: ours.iops / theirs.iops };
  };
  const report = {
    tool: 'scripts/bench',
    date: new Date().toISOString(),
    commit,
    command: `scripts/bench ${process.argv.slice(2).join(' ')}`,
    fio: (await run('fio', ['--version'])).stdout.trim(),
    rows: [...rows.map(entry(['ftvm', 'nbdkit'])), ...tlsRows.map(entry(['TLS', 'plain']))],
    forwarding,
  };
  await fs.writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
}

/**
 * What the TLS comparison runs: nbdcopy (one connection, one thread), because fio's nbd engine may
 * not name a PSK file in its URI. A read copies a whole volume to null:, a write a file of the same
 * size onto it: the 4k jobs on a 64 MiB volume, the 1M jobs on a 256 MiB one.
 */
const COPY_JOBS: Array<{ name: string; requestBytes: number; requests: number; write: boolean; volume: 'small' | 'large' }> = [
  { name: '4k read QD32', requestBytes: 4096, requests: 32, write: false, volume: 'small' },
  { name: '4k write QD32', requestBytes: 4096, requests: 32, write: true, volume: 'small' },
  { name: '1M read QD8', requestBytes: 2 ** 20, requests: 8, write: false, volume: 'large' },
  { name: '1M write QD8', requestBytes: 2 ** 20, requests: 8, write: true, volume: 'large' },
];
const COPY_VOLUMES = { small: 64 * 2 ** 20, large: 256 * 2 ** 20 };

/** One nbdcopy between `uri` and `file` (or null:); the rate it reached. */
async function copyRate(uri: string, job: (typeof COPY_JOBS)[number], file: string): Promise<Result> {
  const options = ['-C', '1', '-T', '1', `--request-size=${job.requestBytes}`, `--requests=${job.requests}`, '--no-extents', '--sparse=0'];
  const started = process.hrtime.bigint();
  await run('nbdcopy', job.write ? [...options, file, uri] : [...options, uri, 'null:']);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const bytes = COPY_VOLUMES[job.volume];
  return { iops: bytes / job.requestBytes / seconds, bytesPerSecond: bytes / seconds };
}

/**
 * Two clusters of the same shape, one plain, one with TLS on both links (NBD: PSK, required;
 * partner link: TLS-PSK, as across hosts), filled first, then job by job interleaved.
 */
async function runTlsComparison(rows: Array<[string, Result, Result]>, memoryBytes: number): Promise<void> {
  const volumes = [{ name: 'small', sizeBytes: COPY_VOLUMES.small, owner: 'a' }, { name: 'large', sizeBytes: COPY_VOLUMES.large, owner: 'a' }];
  const plain = await startCluster(volumes, { memoryBytes, logLevel: 'warn' });
  const scratch = await makeTempDirectory('ftvm-bench-tls-');
  const pskFile = path.join(scratch, 'nbd.psk');
  await fs.writeFile(pskFile, `bench:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const secure = await startCluster(volumes, { memoryBytes, logLevel: 'warn', extra: { partnerLink: { tls: 'on' }, tls: { mode: 'require', pskFile } } });
  const uris = (node: string) => ({
    plain: (volume: string) => plain.node(node).uri(volume),
    tls: (volume: string) => `nbds://bench@${secure.node(node).host}:${secure.node(node).port}/${volume}?tls-psk-file=${pskFile}`,
  });
  const fileOf = (volume: keyof typeof COPY_VOLUMES): string => path.join(scratch, `${volume}.img`);
  try {
    for (const volume of ['small', 'large'] as const) {
      await fs.writeFile(fileOf(volume), randomBytes(COPY_VOLUMES[volume]));
      // Written once through each cluster, so reads find written pages, as nbdkit's would.
      for (const uri of [uris('a').plain(volume), uris('a').tls(volume)]) await run('nbdcopy', ['--request-size=1048576', fileOf(volume), uri]);
    }
    for (const [suffix, node] of [[' via owner', 'a'], [' via partner', 'b']] as const) {
      for (const job of COPY_JOBS) {
        const theirs = await copyRate(uris(node).plain(job.volume), job, fileOf(job.volume));
        const ours = await copyRate(uris(node).tls(job.volume), job, fileOf(job.volume));
        rows.push([`${job.name}${suffix} (nbdcopy)`, ours, theirs]);
        process.stderr.write(`bench: TLS ${job.name}${suffix} done\n`);
      }
    }
  } finally {
    await plain.stop();
    await secure.stop();
    for (const directory of [plain.directory, secure.directory, scratch]) await fs.rm(directory, { recursive: true, force: true });
  }
}

/**
 * Each job against nbdkit, then ftvm, for each target in turn (job by job: all targets run one job
 * before the next job starts); both are flushed before each job (`flushFirst`; the cold mode's first
 * job runs on a cluster that never wrote, and is not flushed: that is the point). The rows come out
 * grouped by target, in the order of the targets.
 */
async function runJobs(
  rows: Array<[string, Result, Result]>,
  targets: ReadonlyArray<{ suffix: string; uri: string }>,
  nbdkitUri: string,
  seconds: number,
  sizeBytes: number,
  meter: ServerMeter,
  flushFirst = true,
  rounds = 1,
): Promise<void> {
  const grouped = targets.map((): Array<[string, Result, Result]> => []);
  let first = true;
  for (const job of JOBS) {
    const measured = targets.map((): Array<[Result, Result]> => []);
    for (let round = 0; round < rounds; round++) {
      for (const [index, { suffix, uri }] of targets.entries()) {
        if (flushFirst || !first) await Promise.all([flush(nbdkitUri), flush(uri)]);
        first = false;
        const theirs = await fio(nbdkitUri, job, seconds, sizeBytes);
        await meter.start();
        const ours = await fio(uri, job, seconds, sizeBytes);
        // fio's ramp second is not in its figures but is in the server's: counted in the bytes too.
        const movedBytes = ours.bytesPerSecond * (seconds > 0 ? seconds + 1 : 0) || sizeBytes;
        ours.server = await meter.stop(movedBytes);
        measured[index]?.push([ours, theirs]);
        process.stderr.write(`bench: ${job.name}${suffix}${rounds > 1 ? ` round ${round + 1}` : ''} done\n`);
      }
    }
    for (const [index, { suffix }] of targets.entries()) grouped[index]?.push([`${job.name}${suffix}`, ...medianRound(measured[index] ?? [])]);
  }
  for (const group of grouped) rows.push(...group);
}

/** The round whose ratio is the median (the lower of the two middle ones for an even count), carrying every round's figures. */
function medianRound(pairs: ReadonlyArray<[Result, Result]>): [Result, Result] {
  if (pairs.length === 1) return pairs[0] as [Result, Result];
  const ratios = pairs.map(([ours, theirs]) => ours.iops / theirs.iops);
  const order = ratios.map((_, index) => index).sort((a, b) => (ratios[a] as number) - (ratios[b] as number));
  const [ours, theirs] = pairs[order[Math.floor((pairs.length - 1) / 2)] as number] as [Result, Result];
  return [{ ...ours, rounds: { iops: pairs.map(([measured]) => measured.iops), ratios } }, theirs];
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor((sorted.length - 1) / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle] as number) + (sorted[middle + 1] as number)) / 2;
}

const MODES = ['cold', 'cold-forwarded', 'mirrored', 'forwarded', 'single', 'degraded', 'tls'];
const OWNER_SUFFIX = ' (2 nodes, via owner)';
const PARTNER_SUFFIX = ' (2 nodes, via partner)';

/** A job through the node that does not own the volume against the same job through the owner. */
interface Forwarding {
  job: string;
  ownerIops: number;
  partnerIops: number;
  ratio: number;
  /** With --rounds: each round's ratio (the IOPS above are then medians over the rounds). */
  ratios?: number[];
}

/** For each job run both ways: IOPS via partner over IOPS via owner (issue 15's target: ≥ 0.6). */
function partnerOverOwner(rows: ReadonlyArray<[string, Result, Result]>): Forwarding[] {
  const result: Forwarding[] = [];
  for (const [label, owner] of rows) {
    if (!label.endsWith(OWNER_SUFFIX)) continue;
    const job = label.slice(0, -OWNER_SUFFIX.length);
    const partner = rows.find(([other]) => other === `${job}${PARTNER_SUFFIX}`)?.[1];
    if (!partner) continue;
    const ownerRounds = owner.rounds?.iops;
    const partnerRounds = partner.rounds?.iops;
    if (ownerRounds && partnerRounds && ownerRounds.length === partnerRounds.length) {
      // Each round ran the two paths seconds apart: the ratio is the median of the rounds' ratios.
      const ratios = partnerRounds.map((iops, round) => iops / (ownerRounds[round] as number));
      result.push({ job, ownerIops: median(ownerRounds), partnerIops: median(partnerRounds), ratio: median(ratios), ratios });
    } else result.push({ job, ownerIops: owner.iops, partnerIops: partner.iops, ratio: partner.iops / owner.iops });
  }
  return result;
}

function formatForwarding(forwarding: readonly Forwarding[], markdown: boolean): string {
  const rounds = forwarding.some(({ ratios }) => ratios !== undefined);
  const header = ['job', 'via owner IOPS', 'via partner IOPS', 'partner/owner', ...(rounds ? ['per round'] : [])];
  const lines = forwarding.map(({ job, ownerIops, partnerIops, ratio, ratios }) => [
    job,
    ownerIops.toFixed(0),
    partnerIops.toFixed(0),
    ratio.toFixed(2),
    ...(rounds ? [ratios ? ratios.map((value) => value.toFixed(2)).join(' ') : '-'] : []),
  ]);
  return table(header, lines, markdown);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
