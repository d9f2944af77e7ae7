// Proves the npm package works where it is installed, not only in the checkout: `npm pack` (which
// builds dist/ in prepack) gives a tarball that `npm install -g --prefix DIR` turns into a working
// `ftvm`; the installed `ftvm up` serves volumes that nbdinfo reads, and stops cleanly.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freeUpBasePort, makeTempDirectory, REPO_ROOT } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { run, runOk } from './lib/run.js';

const VOLUME_BYTES = 16 << 20;

describe('native: npm pack, npm install -g, the installed ftvm', function () {
  let scratch = '';
  let tarball = '';
  let installed = '';

  before(async function () {
    this.timeout(900_000);
    requireTools(this, 'nbdinfo', 'npm', 'tar');
    scratch = await makeTempDirectory('ftvm-pack-');
    // The real command: prepack builds dist/ in the checkout.
    const packed = await runOk('npm', ['pack', '--pack-destination', scratch], { cwd: REPO_ROOT, timeoutMs: 600_000 });
    tarball = path.join(scratch, packed.stdout.trim().split('\n').at(-1) as string);
    const prefix = path.join(scratch, 'prefix');
    await runOk('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: scratch, timeoutMs: 600_000 });
    installed = path.join(prefix, 'bin', 'ftvm');
  });

  after(async () => {
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('ships bin/ftvm, the compiled CLI and the docs (with the systemd unit), not the tests or the TypeScript', async () => {
    const files = (await runOk('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean);
    expect(files).to.include.members(['package/bin/ftvm', 'package/dist/src/cli/main.js', 'package/docs/packaging/ftvm@.service', 'package/docs/packaging/cluster.json']);
    expect(files.filter((file) => /^package\/(src|test|native-test|scripts|dist\/test|dist\/scripts)\//.test(file))).to.deep.equal([]);
  });

  it('the installed ftvm --help lists the commands', async () => {
    const help = await runOk(installed, ['--help'], { cwd: scratch });
    for (const command of ['ftvm up', 'ftvm serve', 'ftvm status', 'ftvm raid', 'ftvm keygen']) expect(help.stdout).to.include(command);
    expect(help.stdout).to.include('--log-format');
  });

  it('the installed ftvm up serves both volumes to nbdinfo, and stops cleanly on SIGINT', async function () {
    this.timeout(180_000);
    const base = await freeUpBasePort();
    const data = path.join(scratch, 'data');
    const up = spawn(installed, ['up', '--data', data, '--base-port', String(base), '--size', '16MiB'], { cwd: scratch, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    up.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    up.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)));
    try {
      for (const deadline = Date.now() + 90_000; !/ftvm cluster \S+ is up/.test(output); ) {
        if (up.exitCode !== null || Date.now() > deadline) throw new Error(`installed ftvm up did not come up:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // Each node serves each volume; node a's port and node b's.
      for (const [port, volume] of [[base, 'vol0'], [base + 1, 'vol1'], [base + 1, 'vol0']] as const) {
        const info = JSON.parse((await runOk('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/${volume}`])).stdout) as { exports: Array<{ 'export-name': string; 'export-size': number }> };
        expect(info.exports[0]).to.include({ 'export-name': volume, 'export-size': VOLUME_BYTES });
      }
      const status = await runOk(installed, ['status', '--control', path.join(data, 'a.control')], { cwd: scratch });
      expect(status.stdout).to.match(/^cluster ftvm-\S+, node a$/m);
    } finally {
      if (up.exitCode === null) up.kill('SIGINT');
    }
    expect(await exited, output).to.equal(0);
    expect(output).to.match(/\[a\] stopped cleanly/);
    expect(output).to.match(/\[b\] stopped cleanly/);
    expect(await fs.readdir(data), 'the lock is gone after a clean stop').to.not.include('up.lock');
  });

  it('a tarball without dist/ says so in one line, not a stack trace', async () => {
    // What npm pack gave before `files` and prepack: the installed bin finds no compiled CLI.
    const bare = path.join(scratch, 'bare');
    await fs.mkdir(path.join(bare, 'bin'), { recursive: true });
    await fs.copyFile(path.join(REPO_ROOT, 'bin', 'ftvm'), path.join(bare, 'bin', 'ftvm'));
    await fs.writeFile(path.join(bare, 'package.json'), JSON.stringify({ type: 'module' }));
    const result = await run(process.execPath, [path.join(bare, 'bin', 'ftvm'), '--help']);
    expect(result.code).to.equal(1);
    expect(result.stderr.trim().split('\n')).to.have.length(1);
    expect(result.stderr).to.match(/dist\/src\/cli\/main\.js is missing: .*npm pack/);
  });
});
