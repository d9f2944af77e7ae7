// Proves the Linux kernel NBD client (in a QEMU VM) works against ftvm: raw I/O, ext4 with
// e2fsck, and dm-multipath over two NBD paths to the same server (both serving at once).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { launch, makeTempDirectory, REPO_ROOT, writeSingleNodeConfig, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';

const run = promisify(execFile);
const VM_DIR = path.join(REPO_ROOT, 'native-test', 'vm');
const HOST_IP = '10.77.0.1';
const PORT_A = 10809;
const PORT_B = 10810;

describe('kernel nbd-client in a VM', function () {
  this.timeout(600_000);
  const namespace = `ftvmk${process.pid % 100000}`;
  let node: FtvmNode | null = null;
  let directory = '';

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-system-x86_64', 'ip', 'nbd-client', 'dmsetup', 'cpio', 'apt-get');
    await run(path.join(VM_DIR, 'build-initramfs.sh'), [], { maxBuffer: 1 << 26 });
    await run(path.join(VM_DIR, 'netns.sh'), ['down', namespace]);
    await run(path.join(VM_DIR, 'netns.sh'), ['up', namespace, `${HOST_IP}/24`]);
    directory = await makeTempDirectory();
    const configFile = await writeSingleNodeConfig(
      directory,
      [{ name: 'vol0', sizeBytes: 256 << 20 }],
      { host: HOST_IP, port: PORT_A },
      [{ host: HOST_IP, port: PORT_B }],
    );
    node = await launch(configFile, 'a', { host: HOST_IP, port: PORT_A, directory, prefix: ['ip', 'netns', 'exec', namespace] });
  });

  after(async () => {
    await node?.stop();
    await run(path.join(VM_DIR, 'netns.sh'), ['down', namespace]).catch(() => undefined);
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  });

  async function guest(script: string, env: Record<string, string | number>): Promise<string> {
    const log = path.join(directory, `${script}.log`);
    const args = ['--netns', namespace, '--host-ip', HOST_IP, '--guest-ip', '10.77.0.2', '--script', path.join(VM_DIR, script), '--log', log, '--timeout', '300'];
    for (const [key, value] of Object.entries(env)) args.push('--env', `${key}=${value}`);
    try {
      await run(path.join(VM_DIR, 'run-vm.sh'), args, { maxBuffer: 1 << 26 });
    } catch (error) {
      const tail = (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').slice(-40).join('\n');
      throw new Error(`guest ${script} failed: ${(error as Error).message}\n${tail}\nserver log:\n${node?.log()}`, { cause: error });
    }
    return fs.readFile(log, 'utf8');
  }

  it('attaches, writes and reads back patterns, runs ext4 with a clean e2fsck', async () => {
    const attachedBefore = (node?.log().match(/client attached/g) ?? []).length;
    const log = await guest('guest-basic.sh', { NBD_PORT: PORT_A, EXPORT: 'vol0' });
    expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
    expect((node?.log().match(/client attached/g) ?? []).length).to.be.greaterThan(attachedBefore);
  });

  it('runs ext4 on dm-multipath over two NBD paths served at once (multibus)', async () => {
    const log = await guest('guest-multipath.sh', { PORT_A, PORT_B, EXPORT: 'vol0', MP_POLICY: 'multibus' });
    expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
    expect(node?.log()).to.match(new RegExp(`client attached .*export=vol0[\\s\\S]*client attached .*export=vol0`));
  });
});
