// Proves holder claims and read-only members: a claim is seen by the next claimant and gone (with its directory) after release; a dead process's claim is removed, another host's is kept as unknown; a node's assembly gives way to a live offline command only and releases its claim when the array closes; a read-only member refuses writes.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../../src/observe/index.js';
import { assembleArray, FileMember, HolderClaim, listHolderClaims, MemberError, MemberInUseError, provisionArray, thisProcess } from '../../../src/storage/index.js';

const deps = { logger: silentLogger(), now: () => Date.now() };

describe('holder claims', () => {
  let directory: string;
  let members: string[];

  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-claims-'));
    members = ['a.img', 'b.img'].map((name) => path.join(directory, name));
  });

  afterEach(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  async function writeClaim(member: string, name: string, fields: object | string): Promise<string> {
    const file = path.join(`${member}.holders`, name);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, typeof fields === 'string' ? fields : JSON.stringify(fields));
    return file;
  }

  it('is seen by the next claimant on every member, and gone with its directory after release', async () => {
    const first = await HolderClaim.create(members, { kind: 'admin', name: 'ftvm raid scrub' });
    const second = await HolderClaim.create(members, { kind: 'node', name: 'a' });
    const seen = await second.others();
    expect(seen.map((record) => [path.basename(record.member), record.kind, record.name, record.pid, record.alive])).to.deep.equal([
      ['a.img', 'admin', 'ftvm raid scrub', process.pid, true],
      ['b.img', 'admin', 'ftvm raid scrub', process.pid, true],
    ]);
    await first.release();
    expect(await second.others()).to.deep.equal([]);
    await second.release();
    expect(await fs.readdir(directory)).to.deep.equal([]);
  });

  it("removes a dead process's claim (its pid now runs a process started at another time) and keeps another host's", async () => {
    const me = thisProcess();
    const dead = await writeClaim(members[0] as string, 'dead', { kind: 'node', name: 'a', pid: me.pid, processStart: me.processStart + 1, host: me.host, sinceMs: 0 });
    await writeClaim(members[0] as string, 'remote', { kind: 'admin', name: 'ftvm raid rebuild', pid: 7, processStart: 9, host: 'elsewhere.example', sinceMs: 0 });
    expect((await listHolderClaims(members)).map((record) => [record.name, record.alive])).to.have.deep.members([
      ['a', false],
      ['ftvm raid rebuild', null],
    ]);
    const claim = await HolderClaim.create(members, { kind: 'admin', name: 'ftvm raid fail' });
    expect((await claim.others()).map((record) => record.host)).to.deep.equal(['elsewhere.example']);
    await fs.access(dead).then(() => expect.fail('the dead claim is still there'), () => undefined);
    await claim.release();
  });

  it("counts a claim that does not parse as an unknown holder, not as nobody's", async () => {
    await writeClaim(members[1] as string, 'garbage', 'not json');
    const [record] = await listHolderClaims(members);
    expect(record).to.include({ kind: 'admin', alive: null });
  });

  describe('a node assembling the array', () => {
    let files: string[];

    beforeEach(async () => {
      files = await provisionArray(directory, { level: 'raid1', memberCount: 2, volumeBytes: [1 << 20] }, deps);
    });

    it('refuses while a live offline command holds the members, naming it', async () => {
      const command = await HolderClaim.create(files, { kind: 'admin', name: 'ftvm raid rebuild' });
      const error = (await assembleArray(files, deps, FileMember.open, { holder: 'a' }).catch((caught: Error) => caught)) as Error;
      expect(error).to.be.instanceOf(MemberInUseError);
      expect(error.message).to.match(new RegExp(`disk0\\.img is in use by ftvm raid rebuild \\(pid ${process.pid} on this host\\)`));
      expect((await listHolderClaims(files)).map((record) => record.kind), 'the refused node left no claim').to.deep.equal(['admin', 'admin']);
      await command.release();
    });

    it("ignores another node's claim (leases decide between nodes), and releases its own when the array closes", async () => {
      const other = await HolderClaim.create(files, { kind: 'node', name: 'b' });
      const array = await assembleArray(files, deps, FileMember.open, { holder: 'a' });
      expect((await listHolderClaims(files)).map((record) => record.name).sort()).to.deep.equal(['a', 'a', 'b', 'b']);
      await array.stop();
      expect((await listHolderClaims(files)).map((record) => record.name)).to.deep.equal(['b', 'b']);
      await other.release();
      const abandoned = await assembleArray(files, deps, FileMember.open, { holder: 'a' });
      await abandoned.abandon();
      expect(await listHolderClaims(files)).to.deep.equal([]);
    });
  });
});

describe('read-only member', () => {
  it('reads, and refuses write and sync without touching the file', async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-ro-'));
    const file = path.join(directory, 'm.img');
    await fs.writeFile(file, Buffer.alloc(8192, 7));
    const member = await FileMember.openReadOnly(file);
    try {
      const into = Buffer.alloc(4096);
      await member.read(4096, into);
      expect(into.every((byte) => byte === 7)).to.equal(true);
      const write = await member.write(0, Buffer.alloc(4096)).catch((error: Error) => error);
      expect(write).to.be.instanceOf(MemberError);
      expect((write as Error).message).to.match(/opened read-only/);
      expect(await member.sync().catch((error: Error) => error)).to.be.instanceOf(MemberError);
    } finally {
      await member.close();
    }
    expect((await fs.readFile(file)).every((byte) => byte === 7)).to.equal(true);
    await fs.rm(directory, { recursive: true, force: true });
  });
});
