// Proves `ftvm up` as a user runs it: bad flags and a busy environment are refused with one line
// and an exit code of their own before anything is written; one `ftvm up` at a time runs on a data
// directory, and the lock of a SIGKILLed one does not block the next.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { EXIT } from '../../src/cli/failure.js';
import { checkPortsFree, LOCK_FILE, upPorts } from '../../src/cli/up-checks.js';
import { FTVM_BIN, freeUpBasePort, makeTempDirectory } from '../support/ftvm-process.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `ftvm up ...` to its end (a refusal must end it; 20 s is a hang, as /proc/x once was). */
function upRun(...args: string[]): Promise<Run> {
  return ftvmRun('up', ...args);
}

/** Runs `ftvm ...` to its end (20 s is a hang). */
function ftvmRun(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FTVM_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** A running `ftvm up`: resolves once it printed that the cluster is up. */
async function upStarted(...args: string[]): Promise<{ child: ChildProcess; output: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [FTVM_BIN, 'up', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!/ftvm cluster \S+ is up/.test(output)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`ftvm up did not come up:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { child, output: () => output, exited };
}

async function waitPortsFree(base: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await checkPortsFree('127.0.0.1', base);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function expectOneLine(run: Run): void {
  expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1);
  expect(run.stderr).to.match(/^ftvm: /);
  expect(run.stderr).to.not.match(/\n\s+at /);
}

describe('ftvm up refuses before it writes anything', function () {
  let scratch = '';
  before(async () => {
    scratch = await makeTempDirectory('ftvm-up-');
  });
  after(async () => {
    await fs.rm(scratch, { recursive: true, force: true });
  });

  const cases: Array<[string, (data: string) => string[], number, RegExp]> = [
    ['--size 0', (data) => ['--data', data, '--size', '0'], EXIT.usage, /--size 0: a volume is a positive whole number/],
    ['--size 1000', (data) => ['--data', data, '--size', '1000'], EXIT.usage, /4 KiB blocks/],
    ['--base-port 65500', (data) => ['--data', data, '--base-port', '65500'], EXIT.usage, /--base-port 65500: give a whole number from 1 to 65334/],
    ['--base-port 0', (data) => ['--data', data, '--base-port', '0'], EXIT.usage, /--base-port 0/],
    ["--host ''", (data) => ['--data', data, '--host', ''], EXIT.usage, /--host ''/],
    ['--host of another machine', (data) => ['--data', data, '--host', '192.0.2.1', '--base-port', '20000'], EXIT.noHost, /not an address of this machine/],
    ['a size whose metadata cannot fit', (data) => ['--data', data, '--size', '1000TiB'], EXIT.ioError, /ENOSPC/],
  ];
  for (const [what, args, code, message] of cases) {
    it(`${what}: exit ${code}, one line, no data directory`, async () => {
      const data = path.join(scratch, 'nested', 'data');
      const run = await upRun(...args(data));
      expect(run.code, run.stderr).to.equal(code);
      expectOneLine(run);
      expect(run.stderr).to.match(message);
      expect(await fs.readdir(scratch), 'nothing created').to.deep.equal([]);
    });
  }

  it("--data '' (which once provisioned into the current directory): exit 2", async () => {
    const run = await upRun('--data', '');
    expect(run.code).to.equal(EXIT.usage);
    expectOneLine(run);
  });

  it('--data /proc/x (which once hung): exit 2 at once', async () => {
    const started = Date.now();
    const run = await upRun('--data', '/proc/x');
    expect(run.code, run.stderr).to.equal(EXIT.usage);
    expect(run.stderr).to.match(/under \/proc, a kernel filesystem/);
    expect(Date.now() - started).to.be.below(10_000);
  });

  it('--data in an existing directory of other files: exit 73, the files untouched', async () => {
    const data = path.join(scratch, 'mine');
    await fs.mkdir(data, { mode: 0o755 });
    await fs.writeFile(path.join(data, 'notes.txt'), 'mine');
    const run = await upRun('--data', data, '--base-port', String(await freeUpBasePort()));
    expect(run.code, run.stderr).to.equal(EXIT.cannotCreate);
    expect(run.stderr).to.match(/holds files but no cluster\.json/);
    expect(await fs.readdir(data)).to.deep.equal(['notes.txt']);
    expect((await fs.stat(data)).mode & 0o777, 'not chmodded either').to.equal(0o755);
    await fs.rm(data, { recursive: true });
  });

  for (const [node, role] of [
    ['b', 'partner link'],
    ['a', 'metrics'],
  ] as const) {
    it(`a port another process holds (node ${node}'s ${role}): exit 69 naming it, before any node starts or any file is written`, async () => {
      const base = await freeUpBasePort();
      const holder = net.createServer();
      const held = (upPorts(base).find((entry) => entry.node === node && entry.role === role) as { port: number }).port;
      await new Promise<void>((resolve) => holder.listen(held, '127.0.0.1', resolve));
      try {
        const run = await upRun('--data', path.join(scratch, 'ports'), '--base-port', String(base), '--size', '16MiB');
        expect(run.code, run.stderr).to.equal(EXIT.unavailable);
        expectOneLine(run);
        expect(run.stderr).to.include(`port ${held} on 127.0.0.1 (node ${node}'s ${role}) is in use by another process`);
        expect(await fs.readdir(scratch)).to.deep.equal([]);
      } finally {
        await new Promise((resolve) => holder.close(resolve));
      }
    });
  }
});

describe('ftvm up: one at a time on a data directory', function () {
  let scratch = '';
  const running: ChildProcess[] = [];
  before(async () => {
    scratch = await makeTempDirectory('ftvm-uplock-');
  });
  after(async () => {
    for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await fs.rm(scratch, { recursive: true, force: true });
  });

  it('refuses a second ftvm up naming the first, leaves cluster.json alone; after a SIGKILL of the first, the next one starts', async () => {
    const data = path.join(scratch, 'data');
    const base = await freeUpBasePort();
    const first = await upStarted('--data', data, '--base-port', String(base), '--size', '16MiB');
    running.push(first.child);
    const config = await fs.readFile(path.join(data, 'cluster.json'));

    const otherBase = await freeUpBasePort();
    const second = await upRun('--data', data, '--base-port', String(otherBase));
    expect(second.code, second.stderr).to.equal(EXIT.unavailable);
    expectOneLine(second);
    expect(second.stderr).to.include(`--data ${data} is in use by ftvm up (pid ${first.child.pid}`);
    expect(second.stderr).to.include(`NBD on 127.0.0.1:${base}-${base + 1}`);
    expect(await fs.readFile(path.join(data, 'cluster.json')), 'the running cluster\'s config is untouched').to.deep.equal(config);

    // SIGKILL: no cleanup runs; the lock names a process that is gone. Its nodes stop on their own
    // (their IPC channel to it closed).
    first.child.kill('SIGKILL');
    await first.exited;
    await waitPortsFree(base);
    expect(await fs.readdir(data)).to.include(LOCK_FILE);

    const third = await upStarted('--data', data, '--base-port', String(otherBase));
    running.push(third.child);
    expect(third.output()).to.include(`nbd://127.0.0.1:${otherBase}/vol0`);
    // Metrics of each node at base + 200 and + 201, as the banner says, and they answer.
    for (const [node, port] of [['a', otherBase + 200], ['b', otherBase + 201]] as const) {
      expect(third.output()).to.include(`node ${node}: http://127.0.0.1:${port}/metrics`);
      const scrape = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(scrape.status).to.equal(200);
      expect(await scrape.text()).to.match(new RegExp(`^ftvm_node_epoch\\{node="${node}"\\} [1-9]`, 'm'));
    }
    // Without --control, status asks the first node that answers in the data directory.
    const found = await ftvmRun('status', '--data', data);
    expect(found.code, found.stderr).to.equal(0);
    expect(found.stdout).to.match(/^cluster \S+, node a\n/);
    expect(found.stdout).to.include('  array holder:  a');
    const none = await ftvmRun('status', '--data', path.join(scratch, 'nothing-here'));
    expect(none.code).to.equal(EXIT.noInput);
    expectOneLine(none);
    expect(none.stderr).to.include('no --control given and no data directory');
    const lock = JSON.parse(await fs.readFile(path.join(data, LOCK_FILE), 'utf8')) as { pid: number };
    expect(lock.pid).to.equal(third.child.pid);
    third.child.kill('SIGINT');
    expect(await third.exited).to.equal(0);
    expect(await fs.readdir(data), 'a clean stop removes the lock').to.not.include(LOCK_FILE);
  });
});
