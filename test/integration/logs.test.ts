// Proves what a node logs about its clients: one line when an NBD client attaches and one when it
// detaches, both at info with node, peer and export, as text or as JSON lines (--log-format json);
// status polls over the control socket only at debug.
import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { FTVM_BIN, freePort, makeTempDirectory, writeSingleNodeConfig } from '../support/ftvm-process.js';
import { RawClient } from '../support/raw-client.js';

const run = promisify(execFile);

interface Served {
  child: ChildProcess;
  log: () => string;
  port: number;
  control: string;
  stop(): Promise<void>;
}

async function serve(directory: string, format: 'text' | 'json', level = 'info'): Promise<Served> {
  const port = await freePort();
  const configFile = await writeSingleNodeConfig(directory, [{ name: 'vol0', sizeBytes: 1 << 20 }], { host: '127.0.0.1', port });
  const child = spawn(process.execPath, [FTVM_BIN, 'serve', '--config', configFile, '--node', 'a', '--log-format', format, '--log-level', level], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`ftvm serve exited with ${code}:\n${log}`)));
  });
  return {
    child,
    log: () => log,
    port,
    control: path.join(directory, 'a.control'),
    async stop() {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/** Attaches to vol0, then leaves; resolves once the node logged the detach. */
async function attachAndLeave(node: Served): Promise<void> {
  const client = await RawClient.connect({ port: node.port });
  await client.attach('vol0');
  client.close();
  const deadline = Date.now() + 5000;
  while (!node.log().includes('client detached')) {
    if (Date.now() > deadline) throw new Error(`no detach line:\n${node.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('node logs', function () {
  let scratch = '';
  beforeEach(async () => {
    scratch = await makeTempDirectory('ftvm-logs-');
  });
  afterEach(async () => {
    await fs.rm(scratch, { recursive: true, force: true });
  });

  it('--log-format json: every line is one JSON object; attach and detach at info with node, peer and export', async () => {
    const node = await serve(scratch, 'json');
    try {
      await attachAndLeave(node);
    } finally {
      await node.stop();
    }
    const lines = node.log().trim().split('\n');
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const entry of entries) expect(entry).to.include.keys('time', 'level', 'node', 'msg');
    const attached = entries.filter((entry) => entry.msg === 'client attached');
    const detached = entries.filter((entry) => entry.msg === 'client detached');
    expect(attached).to.have.length(1);
    expect(detached).to.have.length(1);
    for (const entry of [attached[0], detached[0]]) {
      expect(entry).to.include({ level: 'info', node: 'a', export: 'vol0', conn: 1 });
      expect(entry?.peer).to.match(/^127\.0\.0\.1:\d+$/);
    }
  });

  it('text: the same two lines, with the node name and fields', async () => {
    const node = await serve(scratch, 'text');
    try {
      await attachAndLeave(node);
    } finally {
      await node.stop();
    }
    expect(node.log()).to.match(/ info \[a\] client attached conn=1 peer=127\.0\.0\.1:\d+ export=vol0/);
    expect(node.log()).to.match(/ info \[a\] client detached conn=1 peer=127\.0\.0\.1:\d+ export=vol0/);
  });

  it('status polls over the control socket are logged at debug only; a raid change at info', async () => {
    const node = await serve(scratch, 'json', 'debug');
    try {
      await run(process.execPath, [FTVM_BIN, 'status', '--control', node.control]);
      await run(process.execPath, [FTVM_BIN, 'raid', 'status', '--control', node.control]);
      await run(process.execPath, [FTVM_BIN, 'raid', 'fail', '--control', node.control, '--member', '2']);
    } finally {
      await node.stop();
    }
    const controls = node
      .log()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { level: string; msg: string })
      .filter((entry) => entry.msg.startsWith('control: '));
    expect(controls.map((entry) => [entry.level, JSON.parse(entry.msg.slice('control: '.length)).op])).to.deep.equal([
      ['debug', 'cluster'],
      // Each raid command first asks who holds the array (a read, at debug), then acts.
      ['debug', 'cluster'],
      ['debug', 'status'],
      ['debug', 'cluster'],
      ['info', 'fail'],
    ]);
  });
});
