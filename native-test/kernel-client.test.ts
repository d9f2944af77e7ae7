// Proves the Linux kernel NBD client (in a QEMU VM) works against a two-node ftvm cluster: raw I/O
// and ext4 with e2fsck through each node, and dm-multipath over one NBD path per node, both paths
// serving at once (multibus).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { launch, makeTempDirectory, REPO_ROOT, writeClusterConfig, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';

const run = promisify(execFile);
const VM_DIR = path.join(REPO_ROOT, 'native-test', 'vm');
const HOST_IP = '10.77.0.1';
const PORT_A = 10809;
const PORT_B = 10810;

describe('kernel nbd-client in a VM', function () {
  this.timeout(600_000);
  const namespace = `ftvmk${process.pid % 100000}`;
  const nodes: FtvmNode[] = [];
  let directory = '';

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-system-x86_64', 'ip', 'nbd-client', 'dmsetup', 'cpio', 'apt-get');
    await run(path.join(VM_DIR, 'build-initramfs.sh'), [], { maxBuffer: 1 << 26 });
    await run(path.join(VM_DIR, 'netns.sh'), ['down', namespace]);
    await run(path.join(VM_DIR, 'netns.sh'), ['up', namespace, `${HOST_IP}/24`]);
    directory = await makeTempDirectory();
    // Node a on PORT_A owns vol0; node b on PORT_B forwards to it. Partner links inside the namespace too.
    const configFile = await writeClusterConfig(directory, [{ name: 'vol0', sizeBytes: 256 << 20, owner: 'a' }], [
      { name: 'a', listen: { host: HOST_IP, port: PORT_A }, partner: { host: HOST_IP, port: PORT_A + 100 } },
      { name: 'b', listen: { host: HOST_IP, port: PORT_B }, partner: { host: HOST_IP, port: PORT_B + 100 } },
    ], { memoryBytes: 64 << 20 });
    for (const [name, port] of [['a', PORT_A], ['b', PORT_B]] as const) {
      nodes.push(await launch(configFile, name, { host: HOST_IP, port, directory, prefix: ['ip', 'netns', 'exec', namespace] }));
    }
  });

  after(async () => {
    for (const node of [...nodes].reverse()) await node.stop();
    await run(path.join(VM_DIR, 'netns.sh'), ['down', namespace]).catch(() => undefined);
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  });

  const serverLogs = (): string => nodes.map((node, index) => `--- node ${index === 0 ? 'a' : 'b'} ---\n${node.log()}`).join('\n');
  const attached = (node: FtvmNode | undefined): number => (node?.log().match(/client attached .*export=vol0/g) ?? []).length;

  async function guest(script: string, env: Record<string, string | number>): Promise<string> {
    const log = path.join(directory, `${script}.log`);
    const args = ['--netns', namespace, '--host-ip', HOST_IP, '--guest-ip', '10.77.0.2', '--script', path.join(VM_DIR, script), '--log', log, '--timeout', '300'];
    for (const [key, value] of Object.entries(env)) args.push('--env', `${key}=${value}`);
    try {
      await run(path.join(VM_DIR, 'run-vm.sh'), args, { maxBuffer: 1 << 26 });
    } catch (error) {
      const tail = (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').slice(-40).join('\n');
      throw new Error(`guest ${script} failed: ${(error as Error).message}\n${tail}\nserver logs:\n${serverLogs()}`, { cause: error });
    }
    return fs.readFile(log, 'utf8');
  }

  for (const [index, port] of [PORT_A, PORT_B].entries()) {
    it(`attaches through node ${index === 0 ? 'a (the owner)' : 'b (forwarding to a)'}, writes and reads back patterns, runs ext4 with a clean e2fsck`, async () => {
      const before = attached(nodes[index]);
      const log = await guest('guest-basic.sh', { NBD_PORT: port, EXPORT: 'vol0' });
      expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
      expect(attached(nodes[index])).to.be.greaterThan(before);
    });
  }

  it('runs ext4 on dm-multipath over one NBD path per node, both serving at once (multibus)', async () => {
    const before = nodes.map(attached);
    const log = await guest('guest-multipath.sh', { PORT_A, PORT_B, EXPORT: 'vol0', MP_POLICY: 'multibus' });
    expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
    expect(nodes.map(attached).map((count, index) => count - (before[index] as number)), 'a path attached to each node').to.satisfy((counts: number[]) => counts.every((count) => count > 0));
  });
});
