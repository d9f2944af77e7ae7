// Failover pause: a steady fio random-write job (4 KiB, QD16, crc32c verify) through node b on the
// volume node a owns and serves (so every write is forwarded to a and mirrored back to b); node a
// is killed (SIGKILL) or frozen (SIGSTOP, a silent hang) mid-job. Reports the longest gap between two
// completions (the pause the client saw) and fio's verify errors after the job (an acknowledged
// write that was lost shows up there). Prints each run and the median. --keep-log DIR keeps each
// run's completion log and a summary (DIR/failover-<mode>.json) for scripts/plot-bench.
// The defaults keep the dirty set small (a 128 MiB frame pool: destage starts at 32 MiB dirty).
// --memory, --volume, --write and --after measure a deep one: what the dead owner had not destaged
// (a taking-over node serves first and destages those mirrored pages behind; before session 11 it
// destaged them before it served, and the pause grew with them).
// Usage: scripts/failover-pause [--runs 10] [--mode kill|hang] [--markdown] [--keep-log DIR]
//          [--memory 128MiB] [--dirty SIZE] [--volume 256MiB] [--write 48MiB] [--after 700]
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseSize } from '../src/config/index.js';
import { makeTempDirectory, startCluster } from '../test/support/ftvm-process.js';
import { completionTimes, longestGap, median } from './fio-log.js';

const run = promisify(execFile);

interface RunResult {
  pauseMs: number;
  verifyErrors: number;
  completions: number;
  killedAtMs: number;
  /** Unix time (ms) of the kill or SIGSTOP, on the clock fio's log uses (log_unix_epoch). */
  killedAtEpochMs: number;
}

interface Shape {
  memoryBytes: number;
  /** The config's limits.dirtyBytes; null: its default. */
  dirtyBytes: number | null;
  volumeBytes: number;
  writeBytes: number;
  /** When the kill comes, after fio started (plus up to 600 ms, by seed). */
  afterMs: number;
}

async function oneRun(mode: 'kill' | 'hang', seed: number, keepLog: string | undefined, shape: Shape): Promise<RunResult> {
  const cluster = await startCluster([{ name: 'vol0', sizeBytes: shape.volumeBytes, owner: 'a' }], { logLevel: 'warn', memoryBytes: shape.memoryBytes, ...(shape.dirtyBytes === null ? {} : { limits: { dirtyBytes: shape.dirtyBytes } }) });
  const work = await makeTempDirectory('ftvm-pause-');
  try {
    const a = cluster.node('a');
    const b = cluster.node('b');
    const logPrefix = path.join(work, 'lat');
    const fio = spawn(
      'fio',
      [
        '--name=pause', '--ioengine=nbd', `--uri=${b.uri('vol0')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
        `--size=${shape.writeBytes}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=0', `--write_lat_log=${logPrefix}`, '--log_avg_msec=0',
        // Unix times in the log, so a kept log lines up with the kill (gaps are the same either way).
        '--log_unix_epoch=1',
        `--randseed=${seed}`, '--output-format=json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    fio.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    fio.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const finished = new Promise<number>((resolve) => fio.once('exit', (code) => resolve(code ?? -1)));
    const started = Date.now();
    await new Promise((resolve) => setTimeout(resolve, shape.afterMs + (seed % 7) * 100));
    const killedAtEpochMs = Date.now();
    const killedAtMs = killedAtEpochMs - started;
    if (mode === 'kill') await a.kill();
    else a.child.kill('SIGSTOP');
    const code = await finished;
    if (mode === 'hang') {
      a.child.kill('SIGKILL');
      await a.kill();
    }
    const times = await completionTimes(`${logPrefix}_clat.1.log`);
    if (keepLog) await fs.copyFile(`${logPrefix}_clat.1.log`, path.join(keepLog, `failover-${mode}-${seed}.clat.log`));
    const pauseMs = longestGap(times);
    if (process.env.FTVM_PAUSE_LOG) process.stderr.write(b.log());
    const verifyErrors = (output.match(/verify: bad/g) ?? []).length + (code === 0 ? 0 : 1);
    return { pauseMs, verifyErrors, completions: times.length, killedAtMs, killedAtEpochMs };
  } finally {
    await cluster.stop().catch(() => undefined);
    await fs.rm(work, { recursive: true, force: true });
    await fs.rm(cluster.directory, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('runs', { type: 'number', default: 10 })
    .option('mode', { choices: ['kill', 'hang'] as const, default: 'kill' as const })
    .option('markdown', { type: 'boolean', default: false })
    .option('keep-log', { type: 'string', describe: 'keep each run\'s fio completion log and a JSON summary in this directory (scripts/plot-bench reads them)' })
    .option('memory', { type: 'string', default: '128MiB', describe: 'frame pool per node (destage starts at a quarter of it dirty, or at half of --dirty if less)' })
    .option('dirty', { type: 'string', describe: 'the config\'s limits.dirtyBytes: how much may be dirty before writes wait (default: the config default, 768 MiB)' })
    .option('volume', { type: 'string', default: '256MiB', describe: 'size of vol0' })
    .option('write', { type: 'string', default: '48MiB', describe: 'what fio writes (random 4 KiB) and then verifies' })
    .option('after', { type: 'number', default: 700, describe: 'ms after fio started that the owner is killed or frozen (plus up to 600 by run)' })
    .strict()
    .parseAsync();
  const size = (option: string, value: string): number => {
    const bytes = parseSize(value);
    if (typeof bytes === 'string') throw new Error(`--${option}: ${bytes}`);
    return bytes;
  };
  const shape: Shape = { memoryBytes: size('memory', args.memory), dirtyBytes: args.dirty === undefined ? null : size('dirty', args.dirty), volumeBytes: size('volume', args.volume), writeBytes: size('write', args.write), afterMs: args.after };
  const fioVersion = (await run('fio', ['--version'])).stdout.trim();
  if (args['keep-log']) await fs.mkdir(args['keep-log'], { recursive: true });
  const results: RunResult[] = [];
  for (let index = 0; index < args.runs; index++) {
    const result = await oneRun(args.mode, index + 1, args['keep-log'], shape);
    results.push(result);
    process.stdout.write(`run ${index + 1}: ${args.mode} at ${result.killedAtMs} ms, pause ${result.pauseMs} ms, ${result.completions} completions, ${result.verifyErrors} verify error(s)\n`);
  }
  const pauses = results.map((result) => result.pauseMs).sort((x, y) => x - y);
  const middle = median(pauses);
  const errors = results.reduce((sum, result) => sum + result.verifyErrors, 0);
  const line = `${args.mode}: ${results.length} runs, pause median ${middle} ms, min ${pauses[0]} ms, max ${pauses.at(-1)} ms; verify errors ${errors}`;
  process.stdout.write(args.markdown ? `| ${args.mode} | ${results.length} | ${middle} | ${pauses[0]} | ${pauses.at(-1)} | ${errors} |\n` : `${line}\n`);
  if (args['keep-log']) {
    const summary = {
      tool: 'scripts/failover-pause',
      date: new Date().toISOString(),
      command: `scripts/failover-pause ${process.argv.slice(2).join(' ')}`,
      fio: fioVersion,
      mode: args.mode,
      runs: results.map((result, index) => ({ ...result, log: `failover-${args.mode}-${index + 1}.clat.log` })),
      pauseMs: { median: middle, min: pauses[0], max: pauses.at(-1) },
      verifyErrors: errors,
    };
    await fs.writeFile(path.join(args['keep-log'], `failover-${args.mode}.json`), `${JSON.stringify(summary, null, 2)}\n`);
  }
  if (errors > 0) process.exitCode = 1;
}

await main();
