// Proves the Linux kernel NBD client (in a QEMU VM) works against a two-node ftvm cluster: raw I/O
// and ext4 with e2fsck through each node, dm-multipath over one NBD path per node, both paths
// serving at once (multibus); and that ext4 on multipath rides over kill -9 of the owner (writes go
// on through the other path, checksums match, e2fsck clean), with two path groups and with one,
// the killed node returning and taking its volume back in between; and, after that failback, that
// ext4 rides over kill -9 of the other node (the array holder by then).
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { requestControl, type ClusterStatus } from '../src/cluster/index.js';
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
  let configFile = '';

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-system-x86_64', 'ip', 'nbd-client', 'dmsetup', 'cpio', 'apt-get');
    await run(path.join(VM_DIR, 'build-initramfs.sh'), [], { maxBuffer: 1 << 26 });
    await run(path.join(VM_DIR, 'netns.sh'), ['down', namespace]);
    await run(path.join(VM_DIR, 'netns.sh'), ['up', namespace, `${HOST_IP}/24`]);
    directory = await makeTempDirectory();
    // Node a on PORT_A owns vol0; node b on PORT_B forwards to it. Partner links inside the namespace too.
    configFile = await writeClusterConfig(directory, [{ name: 'vol0', sizeBytes: 256 << 20, owner: 'a' }], [
      { name: 'a', listen: { host: HOST_IP, port: PORT_A }, partner: { host: HOST_IP, port: PORT_A + 100 } },
      { name: 'b', listen: { host: HOST_IP, port: PORT_B }, partner: { host: HOST_IP, port: PORT_B + 100 } },
      // The default lease (2000 ms): a VM, both nodes and a takeover's array resync share 2 cores and
      // one virtual disk here. Lease writes go to their own files on their own descriptors, and member
      // I/O is paced while a renewal is late, so the survivor keeps its lease through the resync (it
      // was fenced here once, with lease syncs of 1075 ms queued behind the resync's writes).
    ], { memoryBytes: 64 << 20, partnerTimeoutMs: 500 });
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

  /** Runs a guest with MODE=kill and kills node `victim` (SIGKILL; a by default) once the guest says it is ready for it. */
  async function guestWithKill(env: Record<string, string | number>, victim = 0): Promise<string> {
    const log = path.join(directory, `kill-${env.MP_POLICY}-${victim}.log`);
    const args = ['--netns', namespace, '--host-ip', HOST_IP, '--guest-ip', '10.77.0.2', '--script', path.join(VM_DIR, 'guest-multipath.sh'), '--log', log, '--timeout', '300'];
    for (const [key, value] of Object.entries({ ...env, MODE: 'kill', PAUSE_SECONDS: 3 })) args.push('--env', `${key}=${value}`);
    const vm = spawn(path.join(VM_DIR, 'run-vm.sh'), args, { stdio: 'ignore' });
    const exited = new Promise<number>((resolve) => vm.once('exit', (code) => resolve(code ?? -1)));
    let killed = false;
    while (vm.exitCode === null && !killed) {
      if ((await fs.readFile(log, 'utf8').catch(() => '')).includes('FTVM-GUEST-READY-FOR-KILL')) {
        await nodes[victim]?.kill();
        killed = true;
      } else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const code = await exited;
    const text = await fs.readFile(log, 'utf8').catch(() => '');
    if (code !== 0 || !killed) throw new Error(`guest failed (exit ${code}, node ${victim === 0 ? 'a' : 'b'} killed: ${killed}):\n${text.split('\n').slice(-40).join('\n')}\nserver logs:\n${serverLogs()}`);
    return text;
  }

  const statusOf = async (name: string): Promise<ClusterStatus> => (await requestControl(path.join(directory, `${name}.control`), { op: 'cluster' })).cluster as ClusterStatus;

  for (const policy of ['failover', 'multibus'] as const) {
    it(`ext4 on dm-multipath (${policy === 'failover' ? 'two path groups' : 'one group, both nodes serving'}) rides over kill -9 of the owner (an owner killed by the test before returns and gets its volume back first)`, async () => {
      if (nodes[0]?.child.exitCode !== null || nodes[0]?.child.signalCode !== null) {
        nodes[0] = await launch(configFile, 'a', { host: HOST_IP, port: PORT_A, directory, prefix: ['ip', 'netns', 'exec', namespace] });
      }
      for (let tries = 0; (await statusOf('a')).volumes[0]?.owner !== 'a'; tries++) {
        if (tries > 300) throw new Error('vol0 never came back to node a');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const log = await guestWithKill({ PORT_A, PORT_B, EXPORT: 'vol0', MP_POLICY: policy, EXPECT_FAILED_PATHS: 1 });
      expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
      const survivor = await statusOf('b');
      expect([survivor.arrayHolder, survivor.volumes[0]?.owner]).to.deep.equal(['b', 'b']);
      expect(nodes[1]?.log()).to.match(/took over volume vol0 from node a/);
    });
  }

  it('after failback, kill -9 of the other node (b, which holds the array by now): ext4 on dm-multipath (both paths serving) goes on through a, which takes the array over', async () => {
    nodes[0] = await launch(configFile, 'a', { host: HOST_IP, port: PORT_A, directory, prefix: ['ip', 'netns', 'exec', namespace] });
    for (let tries = 0; (await statusOf('a')).volumes[0]?.owner !== 'a'; tries++) {
      if (tries > 300) throw new Error('vol0 never came back to node a');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await statusOf('a')).arrayHolder, 'b holds the array since a was killed').to.equal('b');
    const log = await guestWithKill({ PORT_A, PORT_B, EXPORT: 'vol0', MP_POLICY: 'multibus', EXPECT_FAILED_PATHS: 1 }, 1);
    expect(log).to.contain('FTVM-GUEST-RESULT: PASS');
    const survivor = await statusOf('a');
    expect([survivor.arrayHolder, survivor.volumes[0]?.owner]).to.deep.equal(['a', 'a']);
    expect(nodes[0]?.log()).to.match(/node b, the array holder, is gone .*taking over the shared array/);
  });
});
