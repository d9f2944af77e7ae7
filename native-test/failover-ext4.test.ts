// Proves a mounted ext4 rides over the death of the node serving it: QEMU's client (reconnect-delay)
// on node a's address, files written and checksummed in a loop while a is killed with SIGKILL; b takes
// over a's volume and address and the loop goes on; every checksum matches and e2fsck is clean. Then a
// returns and gets the volume back (failback), b is killed, and a serves everything: checksums again.
import { createHash, randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { makeTempDirectory, startCluster, type FtvmCluster } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';
import { status, until } from './lib/cluster.js';
import { isMountPoint, startClientStack, stopClientStack, type ClientStack } from './lib/qemu-client.js';
import { run, runOk } from './lib/run.js';

const VOLUME = { name: 'vol0', sizeBytes: 128 << 20 };
const FILES_BEFORE_KILL = 40;
const FILES_AFTER_KILL = 40;

describe('native: ext4 through QEMU with reconnect, kill -9 of the serving node, failback', function () {
  this.timeout(600_000);
  let cluster: FtvmCluster | null = null;
  let stack: ClientStack | null = null;
  let directory = '';
  const diskFile = (): string => path.join(directory, 'disk');
  const mountPoint = (): string => path.join(directory, 'mnt');

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-storage-daemon', 'losetup', 'mkfs.ext4', 'e2fsck', 'mount', 'umount');
    directory = await makeTempDirectory('ftvm-failover-ext4-');
    await fs.mkdir(mountPoint());
  });

  after(async () => {
    if (directory && (await isMountPoint(mountPoint()))) await run('umount', ['-l', mountPoint()]);
    await stopClientStack(stack, diskFile());
    await cluster?.stop();
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  });

  it('keeps every file through a failover and a failback; e2fsck is clean after each', async () => {
    cluster = await startCluster([{ ...VOLUME, owner: 'a' }], { partnerTimeoutMs: 500, takeoverAddresses: true, logLevel: 'info' });
    const a = cluster.node('a');
    stack = await startClientStack({ host: a.host, port: a.port, volume: VOLUME.name, sizeBytes: VOLUME.sizeBytes, reconnectDelaySeconds: 30 }, diskFile());
    const device = stack.loopDevice as string;
    await runOk('mkfs.ext4', ['-q', '-F', device]);
    await runOk('mount', [device, mountPoint()]);
    const sums = new Map<string, string>();
    const writeFiles = async (first: number, count: number): Promise<void> => {
      for (let index = first; index < first + count; index++) {
        const data = randomBytes(1 + randomInt(512 * 1024));
        const file = path.join(mountPoint(), `f${index}`);
        const handle = await fs.open(file, 'w');
        await handle.writeFile(data);
        await handle.sync();
        await handle.close();
        sums.set(file, createHash('sha256').update(data).digest('hex'));
      }
    };
    const checkFiles = async (what: string): Promise<void> => {
      for (const [file, sum] of sums) expect(createHash('sha256').update(await fs.readFile(file)).digest('hex'), `${what}: ${file}`).to.equal(sum);
    };
    await writeFiles(0, FILES_BEFORE_KILL / 2);
    // The kill lands while the loop writes: those writes wait for b to take over a's address.
    const killed = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 50 + randomInt(300)));
      await a.kill();
    })();
    await writeFiles(FILES_BEFORE_KILL / 2, FILES_BEFORE_KILL / 2);
    await killed;
    await writeFiles(FILES_BEFORE_KILL, FILES_AFTER_KILL);
    const b = cluster.node('b');
    const afterKill = await status(b, 'b');
    expect([afterKill.arrayHolder, afterKill.volumes[0]?.owner]).to.deep.equal(['b', 'b']);
    await checkFiles('after the failover');
    const fsck = async (what: string): Promise<void> => {
      await runOk('umount', [mountPoint()]);
      const check = await run('e2fsck', ['-fn', device]);
      expect(check.code, `${what}: e2fsck\n${check.stdout}${check.stderr}`).to.equal(0);
      await runOk('mount', [device, mountPoint()]);
    };
    await fsck('after the failover');
    await checkFiles('after the failover, remounted');

    // Failback: a comes back, takes vol0 and its address back; the client reconnects to it.
    const returned = await cluster.start('a');
    await until('vol0 is served by a again', async () => (await status(returned, 'a')).volumes[0]?.owner === 'a');
    await writeFiles(FILES_BEFORE_KILL + FILES_AFTER_KILL, 20);
    await b.kill();
    await until('a holds the array again', async () => (await status(returned, 'a')).arrayHolder === 'a');
    await writeFiles(FILES_BEFORE_KILL + FILES_AFTER_KILL + 20, 20);
    await fsck('after the failback and the death of b');
    await checkFiles('after the failback and the death of b');
    await runOk('umount', [mountPoint()]);
  });
});
