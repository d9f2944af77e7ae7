// Proves `ftvm raid` end to end on real member files: create, status, fail, rebuild, scrub, replace and refusals, as a user runs them.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { progressReporter, progressTenth, renderProgressBar, renderProgressLogLine } from '../../src/cli/raid.js';
import type { Logger } from '../../src/observe/index.js';
import type { ArrayStatus } from '../../src/storage/index.js';
import { newestSuperblock, SUPERBLOCK_BYTES } from '../../src/storage/superblock.js';
import { FTVM_BIN, makeTempDirectory } from '../support/ftvm-process.js';

const MIB = 1024 * 1024;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `ftvm raid ...` with piped output, so stderr is not a TTY and progress comes as log lines. */
function raid(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FTVM_BIN, 'raid', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function succeed(...args: string[]): Promise<Run> {
  const run = await raid(...args);
  expect(run.code, `ftvm raid ${args.join(' ')}\n${run.stderr}`).to.equal(0);
  return run;
}

async function status(files: string[]): Promise<ArrayStatus> {
  return JSON.parse((await succeed('status', ...files, '--json')).stdout) as ArrayStatus;
}

function scrubCount(run: Run, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+)$`, 'm').exec(run.stdout);
  expect(match, run.stdout).to.not.equal(null);
  return Number((match as RegExpExecArray)[1]);
}

async function dataOffsetOf(file: string): Promise<number> {
  const handle = await fs.open(file, 'r');
  const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
  await handle.read(copies, 0, copies.length, 0);
  await handle.close();
  return newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES)).dataOffset;
}

describe('ftvm raid on member files', function () {
  this.timeout(60_000);
  let directory: string;
  let files: string[];

  before(async () => {
    directory = await makeTempDirectory('ftvm-raid-cli-');
    files = ['m0.img', 'm1.img', 'm2.img'].map((name) => path.join(directory, name));
  });

  after(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  // The steps below run in order on one array, as an administrator would.
  it('creates a raid5 array over 3 new files and prints its uuid and usable size', async () => {
    const run = await succeed('create', '--level', 'raid5', '--member-size', '8MiB', ...files);
    expect(run.stdout).to.match(/^uuid:\s+[0-9a-f-]{36}$/m);
    expect(run.stdout).to.match(/^size:\s+16 MiB \(16777216 bytes\)$/m);
  });

  it('status --json is RaidArray.status(): optimal, 3 active members; looking moves no event counter', async () => {
    const current = await status(files);
    expect(current).to.include({ level: 'raid5', state: 'optimal', memberCount: 3, sizeBytes: 16 * MIB, dirtyRegions: 0 });
    expect(current.members.map((member) => [member.path, member.state])).to.deep.equal(files.map((file) => [file, 'active']));
    // Offline status only reads: it used to assemble and stop the array, moving the counter by 2.
    expect((await status(files)).eventCounter).to.equal(current.eventCounter);
  });

  it('fail --member 1 leaves the array degraded with member 1 failed', async () => {
    await succeed('fail', ...files, '--member', '1');
    const current = await status(files);
    expect(current.state).to.equal('degraded');
    expect(current.members[1]).to.include({ state: 'failed' });
  });

  it('refuses to fail a second raid5 member', async () => {
    const run = await raid('fail', ...files, '--member', '2');
    expect(run.code).to.equal(1);
    expect(run.stderr).to.match(/^ftvm: refusing to fail member 2/m);
    expect((await status(files)).members[2]).to.include({ state: 'active' });
  });

  it('rebuild --member 1 makes it optimal, logging progress every 10% on a pipe', async () => {
    const run = await succeed('rebuild', ...files, '--member', '1');
    const progress = run.stderr.split('\n').filter((line) => line.includes('rebuild member 1: '));
    // 128 stripes report 128 times; a pipe gets one line per tenth.
    expect(progress.map((line) => /: (\d+)% \(/.exec(line)?.[1])).to.deep.equal(['10', '20', '30', '40', '50', '60', '70', '80', '90', '100']);
    expect(progress[9]).to.match(/100% \(8\.0\/8\.0 MiB, [\d.]+ MiB\/s\)$/);
    const current = await status(files);
    expect(current.state).to.equal('optimal');
    expect(current.members.every((member) => member.state === 'active')).to.equal(true);
  });

  it('scrub repairs corrupted bytes in member 0 from redundancy; a second scrub finds nothing', async () => {
    const dataOffset = await dataOffsetOf(files[0] as string);
    const handle = await fs.open(files[0] as string, 'r+');
    await handle.write(Buffer.from('not what was written'), 0, 20, dataOffset + 100);
    await handle.close();

    const first = await succeed('scrub', ...files);
    expect(scrubCount(first, 'checksum repairs')).to.be.greaterThan(0);
    expect(scrubCount(first, 'unrecoverable blocks')).to.equal(0);
    const back = await fs.readFile(files[0] as string);
    expect(back.subarray(dataOffset, dataOffset + 4096).every((byte) => byte === 0)).to.equal(true);

    const second = await succeed('scrub', ...files);
    expect(scrubCount(second, 'checksum repairs')).to.equal(0);
    expect(scrubCount(second, 'parity repairs')).to.equal(0);
  });

  it('replace --member 2 --new puts the new file in as an active member', async () => {
    const replacement = path.join(directory, 'm2-new.img');
    await succeed('replace', ...files, '--member', '2', '--new', replacement);
    files = [files[0] as string, files[1] as string, replacement];
    const current = await status(files);
    expect(current.state).to.equal('optimal');
    expect(current.members[2]).to.include({ path: replacement, state: 'active' });
  });

  it('refuses raid5 over 2 files, naming the minimum of 3', async () => {
    const two = [path.join(directory, 'x0.img'), path.join(directory, 'x1.img')];
    const run = await raid('create', '--level', 'raid5', '--member-size', '8MiB', ...two);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.match(/^ftvm: .*\b3\b/m);
    expect(run.stderr).to.not.match(/\n\s+at /);
  });

  it('refuses status on a file that is not a member', async () => {
    const junk = path.join(directory, 'junk.img');
    await fs.writeFile(junk, Buffer.alloc(64 * 1024, 'ftvm'));
    const run = await raid('status', junk);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include('not an ftvm RAID member');
    expect(run.stderr).to.not.match(/\n\s+at /);
  });

  it('refuses to create over an existing file, leaving it and the other names alone', async () => {
    const existing = path.join(directory, 'precious.img');
    await fs.writeFile(existing, 'keep me');
    const fresh = [path.join(directory, 'y0.img'), path.join(directory, 'y1.img')];
    const run = await raid('create', '--level', 'raid1', '--member-size', '8MiB', ...fresh, existing);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.match(/^ftvm: .*precious\.img/m);
    expect(await fs.readFile(existing, 'utf8')).to.equal('keep me');
    for (const file of fresh) await fs.access(file).then(() => expect.fail(`${file} was created`), () => undefined);
  });
});

describe('raid progress rendering', () => {
  const half = { label: 'rebuild member 1', doneBytes: 4 * MIB, totalBytes: 8 * MIB, elapsedMs: 2000 };

  it('draws a bar with percentage, MiB done/total and rate', () => {
    expect(renderProgressBar(half, 10)).to.equal('rebuild member 1 [#####.....]  50%  4.0/8.0 MiB, 2.0 MiB/s');
    expect(renderProgressBar({ ...half, doneBytes: 0, elapsedMs: 0 }, 4)).to.equal('rebuild member 1 [....]   0%  0.0/8.0 MiB, - MiB/s');
    expect(renderProgressBar({ ...half, doneBytes: 8 * MIB }, 4)).to.equal('rebuild member 1 [####] 100%  8.0/8.0 MiB, 4.0 MiB/s');
  });

  it('writes the same figures as a log line', () => {
    expect(renderProgressLogLine(half)).to.equal('rebuild member 1: 50% (4.0/8.0 MiB, 2.0 MiB/s)');
  });

  it('counts whole tenths', () => {
    expect([0, 1, 9, 10, 99, 100].map((done) => progressTenth(done, 100))).to.deep.equal([0, 0, 0, 1, 9, 10]);
    expect(progressTenth(0, 0)).to.equal(10);
  });

  function reporterOn(isTTY: boolean, clock: { ms: number }): { written: string[]; logged: string[]; reporter: ReturnType<typeof progressReporter> } {
    const written: string[] = [];
    const logged: string[] = [];
    const logger = { info: (line: string) => logged.push(line) } as unknown as Logger;
    const stream = { isTTY, write: (text: string) => written.push(text) } as unknown as NodeJS.WriteStream;
    return { written, logged, reporter: progressReporter('scrub', { logger, stream, now: () => clock.ms }) };
  }

  it('logs once per tenth, not per callback, when not on a terminal', () => {
    const clock = { ms: 0 };
    const { written, logged, reporter } = reporterOn(false, clock);
    for (let stripe = 1; stripe <= 1000; stripe++) {
      clock.ms += 1;
      reporter.onProgress(stripe, 1000);
    }
    reporter.finish();
    expect(written).to.deep.equal([]);
    expect(logged).to.have.length(10);
    expect(logged[9]).to.match(/^scrub: 100% /);
  });

  it('redraws one terminal line at most every 100 ms and ends it when done', () => {
    const clock = { ms: 0 };
    const { written, logged, reporter } = reporterOn(true, clock);
    for (let stripe = 1; stripe <= 1000; stripe++) {
      clock.ms += 1;
      reporter.onProgress(stripe, 1000);
    }
    reporter.finish();
    expect(logged).to.deep.equal([]);
    expect(written.length).to.be.within(10, 12);
    expect(written.every((text) => text.startsWith('\rscrub ['))).to.equal(true);
    expect(written.at(-1)).to.match(/100% .*\n$/);
  });
});
