// Proves what `ftvm up` checks before it writes anything (flags, the data directory, free space,
// ports) and the data directory lock: held while its process lives, taken over once it is dead.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CliError, EXIT, UsageError } from '../../../src/cli/failure.js';
import {
  checkFreeSpace,
  checkPortsFree,
  DataDirectoryLock,
  inspectDataDirectory,
  LOCK_FILE,
  refuseForeignFiles,
  upPorts,
  validateUpFlags,
} from '../../../src/cli/up-checks.js';
import { thisProcess } from '../../../src/storage/index.js';

const flags = (overrides: Partial<Parameters<typeof validateUpFlags>[0]> = {}): Parameters<typeof validateUpFlags>[0] => ({
  data: './ftvm-data',
  basePort: '10809',
  host: '127.0.0.1',
  size: undefined,
  ...overrides,
});

/** Runs `action` and returns what it threw (a test fails if it throws nothing). */
async function thrown(action: () => unknown): Promise<CliError> {
  try {
    await action();
  } catch (error) {
    expect(error).to.be.instanceOf(CliError);
    return error as CliError;
  }
  throw new Error('expected a refusal');
}

describe('ftvm up: flag checks', () => {
  it('accepts the defaults: 1 GiB, ports 10809..10910', () => {
    const plan = validateUpFlags(flags());
    expect(plan).to.include({ basePort: 10809, host: '127.0.0.1', sizeBytes: 1 << 30, sizeGiven: false });
    expect(plan.dataDirectory).to.equal(path.resolve('ftvm-data'));
    expect(upPorts(10809).map((entry) => entry.port)).to.deep.equal([10809, 10909, 11009, 10810, 10910, 11010]);
  });

  const refused: Array<[string, Partial<Parameters<typeof validateUpFlags>[0]>, RegExp]> = [
    ['an empty --data', { data: '' }, /--data '': give a directory/],
    ['a blank --data', { data: '  ' }, /--data '': give a directory/],
    ['--size 0', { size: '0' }, /--size 0: a volume is a positive whole number of 4 KiB blocks/],
    ['--size not a multiple of 4 KiB', { size: '1000' }, /--size 1000: .*4 KiB blocks/],
    ['--size that is no size', { size: 'lots' }, /--size: 'lots' is not a size/],
    ['--base-port 0', { basePort: '0' }, /--base-port 0: give a whole number from 1 to 65334/],
    ['--base-port whose metrics ports pass 65535', { basePort: '65335' }, /--base-port 65335: .*P\+100 and P\+101 \(partner links\), P\+200 and P\+201 \(metrics\)/],
    ['--base-port that is no number', { basePort: 'abc' }, /--base-port abc:/],
    ['--base-port with a fraction', { basePort: '10809.5' }, /--base-port 10809.5:/],
    ['an empty --host', { host: '' }, /--host '': give an address/],
    ['a bracketed IPv6 --host', { host: '[::1]' }, /no brackets/],
  ];
  for (const [what, change, message] of refused) {
    it(`refuses ${what} as a usage error`, async () => {
      const error = await thrown(() => validateUpFlags(flags(change)));
      expect(error).to.be.instanceOf(UsageError);
      expect(error.exitCode).to.equal(EXIT.usage);
      expect(error.message).to.match(message);
    });
  }

  it('accepts the highest base port whose ports all fit', () => {
    expect(validateUpFlags(flags({ basePort: '65334' })).basePort).to.equal(65334);
  });
});

describe('ftvm up: data directory checks', function () {
  let scratch = '';
  beforeEach(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-upcheck-'));
  });
  afterEach(async () => {
    await fs.rm(scratch, { recursive: true, force: true });
  });

  it('finds the nearest existing parent of a directory to be created, and writes nothing', async () => {
    const target = path.join(scratch, 'x', 'y');
    expect(await inspectDataDirectory(target)).to.deep.equal({ exists: false, initialised: false, existingAncestor: scratch, foreign: [] });
    expect(await fs.readdir(scratch)).to.deep.equal([]);
  });

  it('refuses /proc, /sys and /dev, also through a symlink, as usage errors', async () => {
    for (const target of ['/proc/x', '/sys/kernel/x', '/dev/x', '/proc']) {
      expect((await thrown(() => inspectDataDirectory(target))).exitCode, target).to.equal(EXIT.usage);
    }
    await fs.symlink('/proc', path.join(scratch, 'link'));
    expect((await thrown(() => inspectDataDirectory(path.join(scratch, 'link', 'x')))).message).to.match(/\/proc\/x is under \/proc/);
  });

  it('refuses a file, and a path through a file', async () => {
    const file = path.join(scratch, 'file');
    await fs.writeFile(file, 'x');
    expect((await thrown(() => inspectDataDirectory(file))).exitCode).to.equal(EXIT.cannotCreate);
    expect((await thrown(() => inspectDataDirectory(path.join(file, 'x')))).exitCode).to.equal(EXIT.noInput);
  });

  it('refuses a directory holding other files (never provisions into them), but not one holding only a lock', async () => {
    await fs.writeFile(path.join(scratch, LOCK_FILE), '{}');
    refuseForeignFiles(scratch, await inspectDataDirectory(scratch));
    await fs.writeFile(path.join(scratch, 'notes.txt'), 'mine');
    const error = await thrown(async () => refuseForeignFiles(scratch, await inspectDataDirectory(scratch)));
    expect(error.exitCode).to.equal(EXIT.cannotCreate);
    expect(error.message).to.match(/holds files but no cluster\.json/);
    await fs.writeFile(path.join(scratch, 'cluster.json'), '{}');
    expect((await inspectDataDirectory(scratch)).initialised).to.equal(true);
    refuseForeignFiles(scratch, await inspectDataDirectory(scratch));
  });

  it('refuses a size whose metadata does not fit on the filesystem, warns when the volumes would not', async () => {
    expect(await checkFreeSpace(scratch, 64 << 20)).to.equal(null);
    const stats = await fs.statfs(scratch);
    const free = stats.bavail * stats.bsize;
    // Two volumes this size take 1.5x the free space on raid5 of 3 once written; their metadata far less.
    const big = Math.ceil(free / 2 / 4096) * 4096;
    expect(await checkFreeSpace(scratch, big)).to.match(/writes will fail once it is full/);
    const error = await thrown(() => checkFreeSpace(scratch, Math.ceil((free * 1024) / 4096) * 4096));
    expect(error.exitCode).to.equal(EXIT.ioError);
    expect(error.message).to.match(/ENOSPC/);
  });
});

describe('ftvm up: port check', () => {
  it('names the port another process holds, and its role', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const held = (holder.address() as net.AddressInfo).port;
    try {
      // The held port is node a's partner link port of this base.
      const error = await thrown(() => checkPortsFree('127.0.0.1', held - 100));
      expect(error.exitCode).to.equal(EXIT.unavailable);
      expect(error.message).to.equal(`port ${held} on 127.0.0.1 (node a's partner link) is in use by another process: stop it, or give another --base-port`);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
    await checkPortsFree('127.0.0.1', held - 100);
  });

  it('names a host that is not this machine\'s', async () => {
    const error = await thrown(() => checkPortsFree('192.0.2.1', 20000));
    expect(error.exitCode).to.equal(EXIT.noHost);
    expect(error.message).to.match(/--host 192\.0\.2\.1: not an address of this machine/);
  });
});

describe('ftvm up: data directory lock', function () {
  let scratch = '';
  const about = { nbdHost: '127.0.0.1', basePort: 10809 };
  const lockFile = (): string => path.join(scratch, LOCK_FILE);
  beforeEach(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-uplock-'));
  });
  afterEach(async () => {
    await fs.rm(scratch, { recursive: true, force: true });
  });

  it('is held while its process lives: a second one is refused, naming it', async () => {
    const lock = await DataDirectoryLock.acquire(scratch, about);
    const written = JSON.parse(await fs.readFile(lockFile(), 'utf8')) as Record<string, unknown>;
    expect(written).to.include({ ...thisProcess(), nbdHost: '127.0.0.1', basePort: 10809 });
    const error = await thrown(() => DataDirectoryLock.acquire(scratch, { nbdHost: '127.0.0.1', basePort: 20000 }));
    expect(error.exitCode).to.equal(EXIT.unavailable);
    expect(error.message).to.match(new RegExp(`is in use by ftvm up \\(pid ${process.pid}, since .*NBD on 127\\.0\\.0\\.1:10809-10810\\): stop it`));
    await lock.release();
    expect(await fs.readdir(scratch), 'released, and no draft left behind').to.deep.equal([]);
  });

  it('is taken over when its process is gone (a pid reused by another process counts as gone)', async () => {
    // This pid with another start time: what a SIGKILLed ftvm up looks like once its pid is reused.
    await fs.writeFile(lockFile(), JSON.stringify({ ...thisProcess(), processStart: thisProcess().processStart + 1, startedAt: 'then', nbdHost: 'x', basePort: 1 }));
    const lock = await DataDirectoryLock.acquire(scratch, about);
    expect(JSON.parse(await fs.readFile(lockFile(), 'utf8'))).to.include(thisProcess());
    await lock.release();
  });

  it('is taken over when it is unreadable', async () => {
    await fs.writeFile(lockFile(), 'not json');
    await (await DataDirectoryLock.acquire(scratch, about)).release();
  });

  it('is respected when another host wrote it (a shared filesystem): that process cannot be looked at', async () => {
    await fs.writeFile(lockFile(), JSON.stringify({ ...thisProcess(), host: 'elsewhere', startedAt: 'then', nbdHost: '10.0.0.1', basePort: 10809 }));
    const error = await thrown(() => DataDirectoryLock.acquire(scratch, about));
    expect(error.message).to.match(/on host elsewhere.*remove .*up\.lock if that host's ftvm up is gone/);
  });

  it('release leaves a lock that another process holds now', async () => {
    const lock = await DataDirectoryLock.acquire(scratch, about);
    const other = JSON.stringify({ ...thisProcess(), pid: 1, startedAt: 'now' });
    await fs.writeFile(lockFile(), other);
    await lock.release();
    expect(await fs.readFile(lockFile(), 'utf8')).to.equal(other);
  });
});
