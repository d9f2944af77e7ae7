// Proves offline `ftvm raid` commands that write refuse members in use (a live lease, or a holder claim on its own) with one line naming the member and the holder, leave the files unchanged then, keep a node from opening members an offline command holds, go ahead with --force, after a clean stop, and at once after SIGKILL; another host's lease is watched for at most --lease-ms.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LeaseFiles } from '../../src/cluster/lease-files.js';
import { HolderClaim, thisProcess, type Lease } from '../../src/storage/index.js';
import { launch, makeTempDirectory, startNode, type FtvmNode } from '../support/ftvm-process.js';
import { eventually, freeze, keepWriting, memberPaths, raid, snapshot, succeed, type Run } from '../support/member-files.js';

const VOLUME_BYTES = 16 << 20;

/** The one line a refusal prints (besides info log lines, such as the one saying a lease is watched). */
function refusal(run: Run): string {
  expect(run.code, run.stderr).to.equal(1);
  const lines = run.stderr.trim().split('\n').filter((line) => !/^\S+ info /.test(line));
  expect(lines, run.stderr).to.have.length(1);
  return lines[0] as string;
}

/** A lease in slot `slot` of the members' lease files, renewed by hand. */
async function fakeLease(members: string[], lease: Omit<Lease, 'sequence' | 'epoch' | 'expiresAtMs'>): Promise<{ renew(): Promise<void>; release(): Promise<void> }> {
  const files = await LeaseFiles.open(members);
  let sequence = 100;
  const write = (holder: string): Promise<void> => files.write({ ...lease, holder, sequence: ++sequence, epoch: 1, expiresAtMs: Date.now() + 2000 });
  await write(lease.holder);
  return {
    renew: () => write(lease.holder),
    async release() {
      await write('');
      await files.close();
    },
  };
}

async function claimFiles(member: string): Promise<string[]> {
  return fs.readdir(`${member}.holders`).catch(() => []);
}

describe('offline raid commands refuse members in use', function () {
  this.timeout(180_000);
  let node: FtvmNode;
  let files: string[];

  before(async () => {
    node = await startNode([{ name: 'vol0', sizeBytes: VOLUME_BYTES }], { logLevel: 'warn' });
    files = await memberPaths(node);
  });

  after(async () => {
    await node.kill();
    await fs.rm(node.directory, { recursive: true, force: true });
  });

  it("refuses fail, rebuild, replace, scrub and assemble on a live node's members: one line naming the member and the node, nothing written", async () => {
    const writer = await keepWriting(node, 'vol0', VOLUME_BYTES);
    await eventually(() => writer.acknowledged() >= 10, 10_000, 'ten acknowledged writes');
    const thaw = await freeze(node);
    const runs: Run[] = [];
    let before: Record<string, string>;
    let after: Record<string, string>;
    try {
      before = await snapshot(node.directory);
      runs.push(await raid('fail', ...files, '--member', '1'));
      runs.push(await raid('rebuild', ...files, '--member', '1'));
      runs.push(await raid('replace', ...files, '--member', '1', '--new', path.join(node.directory, 'new.img')));
      runs.push(await raid('scrub', ...files));
      runs.push(await raid('assemble', ...files));
      after = await snapshot(node.directory);
    } finally {
      thaw();
    }
    for (const run of runs) {
      const pattern = new RegExp(`^ftvm: .*/disk0\\.img is in use: node a \\(pid ${node.child.pid} on this host\\) renews its lease in .*/disk0\\.img\\.lease; .*--force`);
      expect(refusal(run)).to.match(pattern);
    }
    expect(after, 'nothing written, created or left behind').to.deep.equal(before);
    await writer.stop();
  });

  it('refuses by the holder claim alone when the lease files are out of sight', async () => {
    // The node keeps its lease files open: renamed, they are still renewed, but nobody reads them here.
    for (const file of files) await fs.rename(`${file}.lease`, `${file}.lease.away`);
    let run: Run;
    try {
      run = await raid('scrub', ...files);
    } finally {
      for (const file of files) await fs.rename(`${file}.lease.away`, `${file}.lease`);
    }
    expect(refusal(run)).to.match(new RegExp(`^ftvm: .*/disk0\\.img is in use: node a \\(pid ${node.child.pid} on this host\\) has the array open \\(holder claim .*disk0\\.img\\.holders/`));
  });

  it('keeps a node from opening the array while an offline command holds the members', async () => {
    await node.stop();
    const command = await HolderClaim.create(files, { kind: 'admin', name: 'ftvm raid rebuild' });
    try {
      const error = (await launch(node.configFile, 'a', { host: node.host, port: node.port, directory: node.directory, logLevel: 'warn' }).catch((caught: Error) => caught)) as Error;
      expect(error).to.be.instanceOf(Error);
      expect(error.message).to.match(new RegExp(`disk0\\.img is in use by ftvm raid rebuild \\(pid ${process.pid} on this host\\): the array is not opened`));
    } finally {
      await command.release();
    }
    node = await launch(node.configFile, 'a', { host: node.host, port: node.port, directory: node.directory, logLevel: 'warn' });
    await node.stop();
  });

  it('allows fail, rebuild, scrub and assemble without --force once the node stopped cleanly', async () => {
    for (const args of [['fail', '--member', '1'], ['rebuild', '--member', '1'], ['scrub'], ['assemble']]) {
      const run = await succeed(args[0] as string, ...files, ...args.slice(1));
      expect(run.stderr).to.not.include('watching');
    }
    expect(await claimFiles(files[0] as string), 'claims released').to.deep.equal([]);
  });

  it("allows them at once after SIGKILL: the dead node's lease and claim block nothing (no wait on this host)", async () => {
    node = await launch(node.configFile, 'a', { host: node.host, port: node.port, directory: node.directory, logLevel: 'warn' });
    const writer = await keepWriting(node, 'vol0', VOLUME_BYTES);
    await eventually(() => writer.acknowledged() >= 10, 10_000, 'ten acknowledged writes');
    await node.kill();
    await writer.stop().catch(() => undefined);
    expect(await claimFiles(files[0] as string), 'the killed node left its claim').to.have.length(1);
    // A watch of 60 s would show in the time taken: a same-host holder is judged from /proc at once.
    const run = await succeed('assemble', ...files, '--lease-ms', '60000');
    expect(run.elapsedMs).to.be.below(30_000);
    expect(run.stderr).to.not.include('watching');
    expect(run.stderr).to.match(/not stopped cleanly: resyncing/);
    expect(await claimFiles(files[0] as string), 'the stale claim was removed').to.deep.equal([]);
    await succeed('scrub', ...files);
  });
});

describe('holders the guard cannot check in /proc, and --force', function () {
  this.timeout(120_000);
  let directory: string;
  let files: string[];
  const elsewhere = { pid: 1, processStart: 1, host: 'elsewhere.example' };

  before(async () => {
    directory = await makeTempDirectory('ftvm-raid-guard-');
    files = ['g0.img', 'g1.img', 'g2.img'].map((name) => path.join(directory, name));
    await succeed('create', '--level', 'raid5', '--member-size', '4MiB', ...files);
  });

  after(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  it('a live lease of this host refuses; --force goes ahead with a warning (cluster stopped, holder faked)', async () => {
    const lease = await fakeLease(files, { slot: 0, holder: 'a', ...thisProcess() });
    try {
      expect(refusal(await raid('fail', ...files, '--member', '1'))).to.match(new RegExp(`is in use: node a \\(pid ${process.pid} on this host\\) renews its lease`));
      const forced = await succeed('fail', ...files, '--member', '1', '--force');
      expect(forced.stderr).to.match(new RegExp(`--force: going ahead although node a \\(pid ${process.pid} on this host\\)`));
      expect(forced.stdout).to.match(/^ {2}1\s+failed/m);
    } finally {
      await lease.release();
    }
  });

  it('an unrenewed lease of another host is watched for --lease-ms, then taken for gone', async () => {
    const lease = await fakeLease(files, { slot: 1, holder: 'b', ...elsewhere });
    try {
      const run = await succeed('rebuild', ...files, '--member', '1', '--lease-ms', '800');
      expect(run.stderr).to.include('watching the lease of node b (pid 1 on host elsewhere.example) for up to 800 ms');
      expect(run.elapsedMs).to.be.at.least(800);
    } finally {
      await lease.release();
    }
  });

  it('a lease of another host renewed while watched refuses, as soon as the renewal is seen', async () => {
    const lease = await fakeLease(files, { slot: 1, holder: 'b', ...elsewhere });
    const renewing = setInterval(() => void lease.renew(), 100);
    let run: Run;
    try {
      run = await raid('scrub', ...files, '--lease-ms', '20000');
    } finally {
      clearInterval(renewing);
      await lease.release();
    }
    expect(refusal(run)).to.match(/is in use: node b \(pid 1 on host elsewhere\.example\) renewed its lease while watched/);
    expect(run.elapsedMs).to.be.below(15_000);
  });

  it("another offline command's claim refuses; one of another host needs --force, which removes it", async () => {
    const command = await HolderClaim.create(files, { kind: 'admin', name: 'ftvm raid rebuild' });
    try {
      expect(refusal(await raid('scrub', ...files))).to.match(new RegExp(`is in use: ftvm raid rebuild \\(pid ${process.pid} on this host\\) has the array open`));
    } finally {
      await command.release();
    }
    const foreign = path.join(`${files[1]}.holders`, 'elsewhere_1_1_feedbeef');
    await fs.mkdir(path.dirname(foreign), { recursive: true });
    await fs.writeFile(foreign, JSON.stringify({ kind: 'admin', name: 'ftvm raid scrub', ...elsewhere, sinceMs: Date.now() }));
    expect(refusal(await raid('assemble', ...files))).to.match(/g1\.img is in use: ftvm raid scrub \(pid 1 on host elsewhere\.example\) has the array open .*\(cannot be checked from here\); .*--force/);
    await succeed('assemble', ...files, '--force');
    expect(await claimFiles(files[1] as string)).to.deep.equal([]);
  });

  it('create refuses new names whose lease files a live node still renews, and creates nothing', async () => {
    const fresh = ['n0.img', 'n1.img', 'n2.img'].map((name) => path.join(directory, name));
    const lease = await fakeLease(fresh, { slot: 0, holder: 'a', ...thisProcess() });
    try {
      expect(refusal(await raid('create', '--level', 'raid5', '--member-size', '4MiB', ...fresh))).to.match(/n0\.img is in use: node a .* renews its lease/);
      for (const file of fresh) await fs.access(file).then(() => expect.fail(`${file} was created`), () => undefined);
    } finally {
      await lease.release();
    }
    await succeed('create', '--level', 'raid5', '--member-size', '4MiB', ...fresh);
  });
});
