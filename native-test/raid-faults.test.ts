// Proves the RAID under a live NBD export survives what real disks do while fio verifies every
// byte: a member rots silently, a member is truncated, a member file is deleted; an online
// `ftvm raid replace --control` rebuilds under I/O, and scrub afterwards finds nothing to repair.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { FTVM_BIN, launch, startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { memberFiles } from './lib/array.js';
import { run, runOk } from './lib/run.js';

const MiB = 1024 * 1024;
const VOLUME = { name: 'vol0', sizeBytes: 96 * MiB };

/** fio random writes of mixed sizes, then a full read-back that checks every block's crc32c. */
function fioVerify(node: FtvmNode, region: number, loops = 1): Promise<Awaited<ReturnType<typeof run>>> {
  return run(
    'fio',
    [
      '--name=faults', '--ioengine=nbd', `--uri=${node.uri(VOLUME.name)}`, '--rw=randwrite', '--bsrange=4k-64k', '--iodepth=16',
      `--offset=${region * 32 * MiB}`, '--size=24M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0',
      '--randrepeat=0', `--loops=${loops}`, '--output-format=json',
    ],
    { timeoutMs: 180_000 },
  );
}

function expectClean(result: Awaited<ReturnType<typeof run>>, what: string): void {
  expect(result.code, `${what}: fio exit\n${result.stderr}`).to.equal(0);
  const report = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: Array<{ error: number; read: { io_bytes: number } }> };
  expect(report.jobs[0]?.error, `${what}: fio error`).to.equal(0);
  expect(report.jobs[0]?.read.io_bytes, `${what}: bytes verified`).to.be.greaterThan(20 * MiB);
}

async function ftvm(args: string[]): Promise<Awaited<ReturnType<typeof run>>> {
  return run(process.execPath, [FTVM_BIN, ...args], { timeoutMs: 120_000 });
}

async function status(node: FtvmNode): Promise<{ state: string; members: Array<{ state: string; path: string; repairedBlocks: number; reason: string }> }> {
  const result = await ftvm(['raid', 'status', '--json', '--control', path.join(node.directory, 'a.control')]);
  expect(result.code, result.stderr).to.equal(0);
  return JSON.parse(result.stdout) as Awaited<ReturnType<typeof status>>;
}

async function dataOffset(member: string): Promise<number> {
  const { newestSuperblock, SUPERBLOCK_BYTES } = await import('../src/storage/superblock.js');
  const handle = await fs.open(member, 'r');
  const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
  await handle.read(copies, 0, copies.length, 0);
  await handle.close();
  return newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES)).dataOffset;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('native: RAID faults under fio verify', function () {
  this.timeout(600_000);
  let node: FtvmNode | null = null;

  before(function () {
    requireTools(this, 'fio');
  });

  beforeEach(async () => {
    // A small cache, so fio's read-back reaches the members instead of being served from memory.
    node = await startNode([VOLUME], { logLevel: 'info', cacheBytes: MiB });
  });

  afterEach(async () => {
    await node?.stop();
    if (node) await fs.rm(node.directory, { recursive: true, force: true });
    node = null;
  });

  it('a member that rots while fio runs is repaired from parity; no verify error; scrub then finds nothing', async () => {
    const current = node as FtvmNode;
    const members = await memberFiles(current.configFile);
    const fio = fioVerify(current, 0, 4);
    await sleep(1000);
    const offset = await dataOffset(members[0] as string);
    const handle = await fs.open(members[0] as string, 'r+');
    for (let i = 0; i < 64; i++) await handle.write(Buffer.alloc(4096, 0xa5), 0, 4096, offset + i * 96 * 1024);
    await handle.close();
    expectClean(await fio, 'rot');
    const control = path.join(current.directory, 'a.control');
    const scrub = await ftvm(['raid', 'scrub', '--control', control]);
    expect(scrub.code, scrub.stderr).to.equal(0);
    const repairedByReads = (await status(current)).members[0]?.repairedBlocks ?? 0;
    expect(repairedByReads + Number(/checksum repairs:\s*(\d+)/i.exec(scrub.stdout)?.[1] ?? 0), `rot was found:\n${scrub.stdout}`).to.be.greaterThan(0);
    const again = await ftvm(['raid', 'scrub', '--control', control]);
    expect(again.stdout).to.match(/checksum repairs:\s*0/i);
    expect(again.stdout).to.match(/parity repairs:\s*0/i);
  });

  it('a truncated member is failed, I/O goes on degraded, and an online replace rebuilds under fio', async () => {
    const current = node as FtvmNode;
    const members = await memberFiles(current.configFile);
    const fio = fioVerify(current, 0, 4);
    await sleep(1000);
    await fs.truncate(members[1] as string, (await dataOffset(members[1] as string)) + MiB);
    expectClean(await fio, 'truncate');
    const degraded = await status(current);
    expect(degraded.state, current.log().slice(-3000)).to.equal('degraded');
    expect(degraded.members[1]?.state).to.equal('failed');
    const replacement = path.join(current.directory, 'new1.img');
    const busy = fioVerify(current, 1, 3);
    const replace = await ftvm(['raid', 'replace', '--control', path.join(current.directory, 'a.control'), '--member', '1', '--new', replacement]);
    expect(replace.code, replace.stderr).to.equal(0);
    expect(replace.stderr, 'progress was reported').to.match(/100%/);
    expectClean(await busy, 'fio during the replace');
    const after = await status(current);
    expect(after.state).to.equal('optimal');
    expect(after.members[1]).to.include({ state: 'active', path: replacement });
    const scrub = await ftvm(['raid', 'scrub', '--control', path.join(current.directory, 'a.control')]);
    expect(scrub.stdout).to.match(/checksum repairs:\s*0/i);
    expect(scrub.stdout).to.match(/parity repairs:\s*0/i);
  });

  it('a deleted member keeps serving through its open file; after a restart it is missing and replace restores it', async () => {
    let current = node as FtvmNode;
    const members = await memberFiles(current.configFile);
    const fio = fioVerify(current, 0, 4);
    await sleep(1000);
    await fs.rm(members[2] as string);
    expectClean(await fio, 'delete');
    await current.stop();
    current = await launch(current.configFile, 'a', { host: current.host, port: current.port, directory: current.directory, logLevel: 'info' });
    node = current;
    const degraded = await status(current);
    expect(degraded.members[2]?.state).to.equal('missing');
    expectClean(await fioVerify(current, 1), 'degraded after restart');
    const replace = await ftvm(['raid', 'replace', '--control', path.join(current.directory, 'a.control'), '--member', '2', '--new', members[2] as string]);
    expect(replace.code, replace.stderr).to.equal(0);
    expect((await status(current)).state).to.equal('optimal');
    // The config names the same files again, so a plain restart assembles the whole array.
    await current.stop();
    current = await launch(current.configFile, 'a', { host: current.host, port: current.port, directory: current.directory, logLevel: 'info' });
    node = current;
    expect((await status(current)).state).to.equal('optimal');
    expectClean(await fioVerify(current, 2), 'after replace and restart');
    await runOk(process.execPath, [FTVM_BIN, 'raid', 'status', '--control', path.join(current.directory, 'a.control')]);
  });
});
