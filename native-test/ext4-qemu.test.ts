// Proves a real ext4 filesystem lives on ftvm: QEMU's NBD client exported via FUSE, a loop device, 200 files, clean e2fsck, checksums after a remount.
// Runs on one node, and on a two-node cluster where the files are written through node a (the owner) and read back through node b.
import { randomBytes, randomInt, createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { ArrayReader } from '../test/support/array-reader.js';
import { makeTempDirectory, startCluster, startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';
import { shutDown } from './lib/node.js';
import { startClientStack as startQemuClient, stopClientStack, isMountPoint, type ClientStack } from './lib/qemu-client.js';
import { run, runOk, sha256File } from './lib/run.js';

const startClientStack = (node: FtvmNode, diskFile: string): Promise<ClientStack> => startQemuClient({ host: node.host, port: node.port, volume: VOLUME.name, sizeBytes: VOLUME.sizeBytes }, diskFile);

const VOLUME = { name: 'vol0', sizeBytes: 256 << 20 };
const FILE_COUNT = 200;
const FILE_SIZE_MAX_BYTES = 1 << 20;

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
