// Proves offline `ftvm raid status` and `examine` write nothing (member and lease files hash the same, nothing is created) with all members, one left off, after a SIGKILL left dirty regions, and on a live node's files under client writes; and that `status --test` exits 0/1/2/4 like `mdadm --detail --test`.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { ArrayStatus, MemberExamination } from '../../src/storage/index.js';
import { makeTempDirectory, startCluster, startNode, type FtvmCluster, type FtvmNode } from '../support/ftvm-process.js';
import { eventually, freeze, keepWriting, memberAndLeaseFiles, memberPaths, raid, snapshot, succeed } from '../support/member-files.js';

const VOLUME_BYTES = 16 << 20;

interface OfflineStatus extends ArrayStatus {
  offline: { clean: boolean; assemblable: boolean; resyncRegions: number; atAssembly: string[]; inUse: Array<{ who: string; why: string }> };
}

async function offlineStatus(files: string[]): Promise<OfflineStatus> {
  return JSON.parse((await succeed('status', ...files, '--json')).stdout) as OfflineStatus;
}

async function examined(files: string[]): Promise<MemberExamination[]> {
  return (JSON.parse((await succeed('examine', ...files, '--json')).stdout) as { members: MemberExamination[] }).members;
}

/** Every read-only way of looking at the files, as an administrator would try them. */
async function lookAt(files: string[]): Promise<void> {
  await succeed('status', ...files);
  await succeed('status', ...files, '--json');
  await raid('status', ...files, '--test');
  await succeed('examine', ...files);
  await succeed('examine', ...files, '--json');
}

describe('offline raid status and examine are read-only', function () {
  this.timeout(120_000);
  const nodes: FtvmNode[] = [];

  after(async () => {
    for (const node of nodes) {
      await node.kill();
      await fs.rm(node.directory, { recursive: true, force: true });
    }
  });

  async function nodeWithData(): Promise<FtvmNode> {
    const node = await startNode([{ name: 'vol0', sizeBytes: VOLUME_BYTES }], { logLevel: 'warn' });
    nodes.push(node);
    return node;
  }

  describe('on the files of a node that stopped cleanly', () => {
    let node: FtvmNode;
    let files: string[];

    before(async () => {
      node = await nodeWithData();
      const writer = await keepWriting(node, 'vol0', VOLUME_BYTES);
      await eventually(() => writer.acknowledged() >= 10, 10_000, 'ten acknowledged writes');
      await writer.stop();
      await node.stop();
      files = await memberPaths(node);
    });

    it('changes no byte of the members or lease files and creates nothing, with every member given', async () => {
      const before = await snapshot(node.directory);
      expect(Object.keys(memberAndLeaseFiles(before))).to.have.length(6);
      await lookAt(files);
      expect(await snapshot(node.directory)).to.deep.equal(before);
      const status = await offlineStatus(files);
      expect(status).to.include({ state: 'optimal', dirtyRegions: 0 });
      expect(status.offline).to.include({ clean: true, assemblable: true, resyncRegions: 0 });
      expect(status.offline.inUse).to.deep.equal([]);
      // The counter shown is the one on disk, and it did not move.
      expect((await examined(files)).map((member) => member.superblock?.eventCounter)).to.deep.equal(files.map(() => status.eventCounter));
      expect((await examined(files)).map((member) => member.superblock?.zeroEntries), 'a new array reads never-written blocks from its checksums').to.deep.equal(files.map(() => true));
      expect((await succeed('examine', ...files)).stdout).to.match(/^ {2}checksums: +zero entry means zeroes/m);
    });

    it('with a member left off, says the array would assemble degraded and records nothing', async () => {
      const before = await snapshot(node.directory);
      const run = await succeed('status', files[0] as string, files[1] as string);
      expect(run.stdout).to.match(/^state:\s+degraded$/m);
      expect(run.stdout).to.match(/^ {2}- member 2 missing: the array would assemble degraded and record it missing/m);
      await lookAt(files.slice(0, 2));
      expect(await snapshot(node.directory)).to.deep.equal(before);
      const all = await offlineStatus(files);
      expect(all.state, 'the missing member was not recorded').to.equal('optimal');
      expect(all.members.map((member) => member.state)).to.deep.equal(['active', 'active', 'active']);
    });

    it('whereas assemble with a member left off does record it (the fingerprint catches a write)', async () => {
      const before = await snapshot(node.directory);
      await succeed('assemble', files[0] as string, files[1] as string);
      expect(memberAndLeaseFiles(await snapshot(node.directory))).to.not.deep.equal(memberAndLeaseFiles(before));
      expect((await offlineStatus(files)).members[2]).to.include({ state: 'failed' });
    });
  });

  describe('after SIGKILL left dirty regions', () => {
    let node: FtvmNode;
    let files: string[];

    before(async () => {
      node = await nodeWithData();
      const writer = await keepWriting(node, 'vol0', VOLUME_BYTES);
      await eventually(() => writer.acknowledged() >= 20, 10_000, 'twenty acknowledged writes');
      await node.kill();
      await writer.stop().catch(() => undefined);
      files = await memberPaths(node);
    });

    it('reports the regions an assembly would resync, resyncs none, and leaves the dead lease as it is', async () => {
      const before = await snapshot(node.directory);
      await lookAt(files);
      expect(await snapshot(node.directory)).to.deep.equal(before);
      const status = await offlineStatus(files);
      expect(status.offline.clean).to.equal(false);
      expect(status.offline.resyncRegions).to.be.greaterThan(0);
      expect(status.dirtyRegions).to.equal(status.offline.resyncRegions);
      expect(status.offline.atAssembly.join('\n')).to.match(new RegExp(`${status.offline.resyncRegions} dirty region\\(s\\) would be resynced`));
      expect(status.offline.inUse, 'a killed node uses nothing').to.deep.equal([]);
      const members = await examined(files);
      expect(members.every((member) => member.superblock?.clean === false)).to.equal(true);
      expect(members.some((member) => typeof member.bitmapSlots[0] === 'number' && member.bitmapSlots[0] > 0)).to.equal(true);
    });

    it('an assemble then does what status announced: resynced, stopped cleanly', async () => {
      await succeed('assemble', ...files);
      const status = await offlineStatus(files);
      expect(status.offline).to.include({ clean: true, resyncRegions: 0 });
      expect(status.state).to.equal('optimal');
    });
  });

  describe('on the files of a live node while a client writes', () => {
    let node: FtvmNode;
    let files: string[];

    before(async () => {
      node = await nodeWithData();
      files = await memberPaths(node);
    });

    it('writes nothing (the node frozen while status and examine run), names the node, and the node serves on', async () => {
      const writer = await keepWriting(node, 'vol0', VOLUME_BYTES);
      await eventually(() => writer.acknowledged() >= 20, 10_000, 'twenty acknowledged writes');
      // SIGSTOP holds the node's own writes still, so any change seen is the commands' doing.
      const thaw = await freeze(node);
      let before: Record<string, string>;
      let after: Record<string, string>;
      let status: OfflineStatus;
      let text: string;
      try {
        before = await snapshot(node.directory);
        await lookAt(files);
        status = await offlineStatus(files);
        text = (await succeed('status', ...files)).stdout;
        after = await snapshot(node.directory);
      } finally {
        thaw();
      }
      expect(after).to.deep.equal(before);
      expect(status.offline.clean, 'a running array is never clean').to.equal(false);
      expect(status.offline.inUse.map((user) => user.who)).to.include(`node a (pid ${node.child.pid} on this host)`);
      expect(text).to.match(new RegExp(`^in use:\\s+node a \\(pid ${node.child.pid} on this host\\) renews its lease in .*disk0\\.img\\.lease$`, 'm'));
      const acknowledged = writer.acknowledged();
      await eventually(() => writer.acknowledged() >= acknowledged + 20, 10_000, 'twenty more writes after the thaw');
      await writer.stop();
      expect(node.log()).to.not.match(/\berror\b/);
    });

    it('status --control --test exits 0 for the live array, 4 for a socket nobody answers', async () => {
      const control = path.join(node.directory, 'a.control');
      expect((await raid('status', '--control', control, '--test')).code).to.equal(0);
      const nobody = await raid('status', '--control', path.join(node.directory, 'nobody.control'), '--test');
      expect(nobody.code).to.equal(4);
      expect(nobody.stderr).to.match(/^ftvm: /m);
    });
  });
});

describe('raid status --test exit codes', function () {
  this.timeout(60_000);
  let directory: string;
  let files: string[];

  before(async () => {
    directory = await makeTempDirectory('ftvm-raid-test-');
    files = ['t0.img', 't1.img', 't2.img'].map((name) => path.join(directory, name));
    await succeed('create', '--level', 'raid5', '--member-size', '4MiB', ...files);
  });

  after(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  it('0 when optimal', async () => {
    expect((await raid('status', ...files, '--test')).code).to.equal(0);
  });

  it('1 when a member is missing', async () => {
    expect((await raid('status', files[0] as string, files[2] as string, '--test')).code).to.equal(1);
  });

  it('2 when two raid5 members are missing: the array would not assemble', async () => {
    const run = await raid('status', files[0] as string, '--test');
    expect(run.code).to.equal(2);
    expect(run.stdout).to.match(/^state:\s+failed$/m);
    expect(run.stdout).to.match(/the array would not assemble: too many members unavailable/);
  });

  it('4 when the files cannot be read as an array (not a member, or no file)', async () => {
    const junk = path.join(directory, 'junk.img');
    await fs.writeFile(junk, Buffer.alloc(65536, 1));
    const notMember = await raid('status', junk, '--test');
    expect(notMember.code).to.equal(4);
    expect(notMember.stderr).to.include('not an ftvm RAID member');
    expect((await raid('status', path.join(directory, 'absent.img'), '--test')).code).to.equal(4);
  });

  it('1 when a member is failed (recorded on disk by fail)', async () => {
    await succeed('fail', ...files, '--member', '1');
    const run = await raid('status', ...files, '--test');
    expect(run.code).to.equal(1);
    expect(run.stdout).to.match(/member 1 \(.*t1\.img\) stays out, recorded failed/);
  });
});

describe('online raid commands through a node that does not hold the array', function () {
  this.timeout(90_000);
  let cluster: FtvmCluster;

  before(async () => {
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 4 * 1024 * 1024 }], { logLevel: 'warn' });
  });

  after(async () => {
    await cluster.stop();
    await fs.rm(cluster.directory, { recursive: true, force: true });
  });

  it("go to the holder's socket beside the one named, and say so", async () => {
    const viaB = await raid('status', '--control', path.join(cluster.directory, 'b.control'), '--json');
    expect(viaB.code, viaB.stderr).to.equal(0);
    expect(viaB.stderr).to.match(/node b does not hold the array; asking node a, which does/);
    const status = JSON.parse(viaB.stdout) as ArrayStatus;
    expect(status.state).to.equal('optimal');
    const viaA = JSON.parse((await raid('status', '--control', path.join(cluster.directory, 'a.control'), '--json')).stdout) as ArrayStatus;
    expect(status.members.length).to.equal(viaA.members.length);
    expect((await raid('status', '--control', path.join(cluster.directory, 'b.control'), '--test')).code).to.equal(0);
  });

  it('name the holder when its socket is not beside the one given (exit 4 under --test); scrub is refused the same way', async () => {
    const elsewhere = await makeTempDirectory('ftvm-control-');
    try {
      await fs.symlink(path.join(cluster.directory, 'b.control'), path.join(elsewhere, 'b.control'));
      const status = await raid('status', '--control', path.join(elsewhere, 'b.control'));
      expect(status.code).to.not.equal(0);
      expect(status.stderr).to.match(/node b does not hold the array; node a does: run again with --control and that node's control socket/);
      expect((await raid('status', '--control', path.join(elsewhere, 'b.control'), '--test')).code).to.equal(4);
      const scrub = await raid('scrub', '--control', path.join(elsewhere, 'b.control'));
      expect(scrub.code).to.not.equal(0);
      expect(scrub.stderr).to.match(/node a does/);
    } finally {
      await fs.rm(elsewhere, { recursive: true, force: true });
    }
  });
});
