// Proves a real ext4 filesystem lives on ftvm: QEMU's NBD client exported via FUSE, a loop device, 200 files, clean e2fsck, checksums after a remount.
// Runs on one node, and on a two-node cluster where the files are written through node a (the owner) and read back through node b.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt, createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { ArrayReader } from '../test/support/array-reader.js';
import { makeTempDirectory, startCluster, startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';
import { shutDown } from './lib/node.js';
import { run, runOk, sha256File } from './lib/run.js';

const VOLUME = { name: 'vol0', sizeBytes: 256 << 20 };
const FILE_COUNT = 200;
const FILE_SIZE_MAX_BYTES = 1 << 20;

/** qemu-storage-daemon (NBD client → FUSE file) plus the loop device on that file. */
interface ClientStack {
  daemon: ChildProcess;
  daemonLog: () => string;
  loopDevice: string | null;
}

async function isMountPoint(target: string): Promise<boolean> {
  const mountInfo = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return mountInfo.split('\n').some((line) => line.split(' ')[4] === target);
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return condition();
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Starts qemu-storage-daemon exporting the volume as `diskFile` through FUSE, then attaches a loop device. */
async function startClientStack(node: FtvmNode, diskFile: string): Promise<ClientStack> {
  await fs.writeFile(diskFile, '');
  const daemon = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=nbd,node-name=n0,server.type=inet,server.host=${node.host},server.port=${node.port},export=${VOLUME.name}`,
      '--export',
      `type=fuse,id=e0,node-name=n0,mountpoint=${diskFile},writable=on`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  daemon.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  daemon.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const stack: ClientStack = { daemon, daemonLog: () => log, loopDevice: null };
  const mounted = await waitFor(async () => exited(daemon) || (await isMountPoint(diskFile)), 15_000);
  if (!mounted || exited(daemon)) {
    await stopClientStack(stack, diskFile);
    throw new Error(`qemu-storage-daemon did not export ${diskFile}:\n${log}`);
  }
  expect((await fs.stat(diskFile)).size, 'the FUSE file has the volume size').to.equal(VOLUME.sizeBytes);
  stack.loopDevice = (await runOk('losetup', ['-f', '--show', diskFile])).stdout.trim();
  return stack;
}

/** Detaches the loop device and stops the daemon; best effort, for after() hooks too. */
async function stopClientStack(stack: ClientStack | null, diskFile: string): Promise<void> {
  if (!stack) return;
  if (stack.loopDevice) await run('losetup', ['-d', stack.loopDevice]);
  stack.loopDevice = null;
  if (!exited(stack.daemon)) {
    const gone = new Promise<void>((resolve) => stack.daemon.once('exit', () => resolve()));
    stack.daemon.kill('SIGTERM');
    const timer = setTimeout(() => stack.daemon.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }
  if (await isMountPoint(diskFile)) await run('umount', ['-l', diskFile]);
}

/** Where the filesystem is written, where it is read back, and how to tear it all down. */
interface Servers {
  writer: FtvmNode;
  reader: FtvmNode;
  configFile: string;
  stop(): Promise<void>;
}

const SET_UPS: Array<[string, () => Promise<Servers>]> = [
  [
    'one node',
    async () => {
      const node = await startNode([VOLUME]);
      return { writer: node, reader: node, configFile: node.configFile, stop: () => shutDown(node) };
    },
  ],
  [
    'two nodes, written through a, read through b',
    async () => {
      const cluster = await startCluster([VOLUME], { logLevel: 'warn' });
      return {
        writer: cluster.node('a'),
        reader: cluster.node('b'),
        configFile: cluster.configFile,
        async stop() {
          await cluster.stop();
          await fs.rm(cluster.directory, { recursive: true, force: true });
        },
      };
    },
  ],
];

for (const [label, setUp] of SET_UPS) describe(`native: ext4 through qemu-storage-daemon (FUSE) and a loop device (${label})`, function () {
  let servers: Servers | undefined;
  let scratch = '';
  let stack: ClientStack | null = null;
  const checksums = new Map<string, string>();
  const diskFile = (): string => path.join(scratch, 'disk');
  const mountPoint = (): string => path.join(scratch, 'mnt');

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-storage-daemon', 'losetup', 'mkfs.ext4', 'e2fsck', 'debugfs', 'mount', 'umount');
    servers = await setUp();
    scratch = await makeTempDirectory('ftvm-ext4-');
    await fs.mkdir(mountPoint());
  });

  after(async function () {
    if (scratch && (await isMountPoint(mountPoint()))) await run('umount', ['-l', mountPoint()]);
    if (scratch) await stopClientStack(stack, diskFile());
    await servers?.stop();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it(`makes ext4, writes ${FILE_COUNT} files of up to 1 MiB, and e2fsck finds it clean`, async function () {
    stack = await startClientStack(servers!.writer, diskFile());
    const loop = stack.loopDevice as string;
    await runOk('mkfs.ext4', ['-q', '-F', loop]);
    await runOk('mount', ['-t', 'ext4', loop, mountPoint()]);
    const dataDirectory = path.join(mountPoint(), 'data');
    await fs.mkdir(dataDirectory);
    for (let i = 0; i < FILE_COUNT; i++) {
      const name = `file-${String(i).padStart(3, '0')}.bin`;
      const content = randomBytes(randomInt(0, FILE_SIZE_MAX_BYTES + 1));
      await fs.writeFile(path.join(dataDirectory, name), content);
      checksums.set(name, createHash('sha256').update(content).digest('hex'));
    }
    await runOk('sync', ['-f', mountPoint()]);
    await runOk('umount', [mountPoint()]);
    const fsck = await run('e2fsck', ['-fn', loop]);
    expect(fsck.code, `e2fsck:\n${fsck.stdout}\n${fsck.stderr}`).to.equal(0);
    expect(fsck.stdout).to.match(new RegExp(`${FILE_COUNT + 12}/\\d+ files`));
  });

  it('a fresh client stack mounts it again and every checksum matches', async function () {
    expect(checksums.size, 'the first test wrote the files').to.equal(FILE_COUNT);
    // A new daemon and loop device: nothing can come from a cache of the first stack.
    await stopClientStack(stack, diskFile());
    stack = await startClientStack(servers!.reader, diskFile());
    const loop = stack.loopDevice as string;
    const fsck = await run('e2fsck', ['-fn', loop]);
    expect(fsck.code, `e2fsck:\n${fsck.stdout}\n${fsck.stderr}`).to.equal(0);
    await runOk('mount', ['-t', 'ext4', loop, mountPoint()]);
    const dataDirectory = path.join(mountPoint(), 'data');
    expect((await fs.readdir(dataDirectory)).sort()).to.deep.equal([...checksums.keys()].sort());
    for (const [name, checksum] of checksums) expect(await sha256File(path.join(dataDirectory, name)), name).to.equal(checksum);
    await runOk('umount', [mountPoint()]);
    await stopClientStack(stack, diskFile());
    stack = null;
  });

  it("the volume on the server's RAID member files itself holds the clean filesystem and the files", async function () {
    expect(checksums.size, 'the first test wrote the files').to.equal(FILE_COUNT);
    // The volume's bytes straight off disk0..2.img, not through the server.
    const storedImage = path.join(scratch, 'stored.img');
    await (await ArrayReader.fromConfig(servers!.configFile)).exportVolume(VOLUME.name, storedImage);
    const fsck = await run('e2fsck', ['-fn', storedImage]);
    expect(fsck.code, `e2fsck on the volume read from the member files:\n${fsck.stdout}\n${fsck.stderr}`).to.equal(0);
    const dump = path.join(scratch, 'dump');
    await fs.mkdir(dump);
    await runOk('debugfs', ['-R', `rdump /data ${dump}`, storedImage]);
    for (const [name, checksum] of checksums) expect(await sha256File(path.join(dump, 'data', name)), name).to.equal(checksum);
  });
});
