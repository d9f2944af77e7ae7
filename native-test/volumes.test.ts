// Proves `ftvm volume` on a live two-node cluster with real clients: a volume made through either
// node's control socket is exported by both, its bytes cross between them; a resize is seen by
// reconnecting clients; a delete is refused while a client holds the volume open and otherwise frees
// space that reads zeros when it is used again; restarts keep what was made and deleted; nothing
// changes when a node is down or the request is bad.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { FTVM_BIN, startCluster, type FtvmCluster } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { run, type RunResult } from './lib/run.js';

const MiB = 1024 * 1024;

interface Listed {
  name: string;
  sizeBytes: number;
  pageBytes: number;
  owner: string;
  home: string;
  origin: string;
  state: string;
  arrayOffset: number;
}

describe('native: online volume management (ftvm volume)', function () {
  this.timeout(180_000);
  let cluster: FtvmCluster | null = null;
  const holders: ChildProcess[] = [];

  const control = (node: string): string => path.join((cluster as FtvmCluster).directory, `${node}.control`);
  const ftvm = (node: string, ...args: string[]): Promise<RunResult> => run(process.execPath, [FTVM_BIN, 'volume', ...args, '--control', control(node)], { timeoutMs: 60_000 });
  const ok = async (node: string, ...args: string[]): Promise<string> => {
    const result = await ftvm(node, ...args);
    expect(result.code, `ftvm volume ${args.join(' ')}: ${result.stderr}`).to.equal(0);
    return result.stdout;
  };
  const list = async (node: string): Promise<Listed[]> => JSON.parse(await ok(node, 'list', '--json')) as Listed[];
  const exportSize = async (uri: string): Promise<number> => {
    const result = await run('nbdinfo', ['--size', uri]);
    expect(result.code, `nbdinfo --size ${uri}: ${result.stderr}`).to.equal(0);
    return Number(result.stdout.trim());
  };
  const qemuIo = async (uri: string, command: string): Promise<void> => {
    const result = await run('qemu-io', ['-f', 'raw', '-c', command, uri]);
    expect(result.code, `qemu-io ${command} on ${uri}: ${result.stdout}${result.stderr}`).to.equal(0);
    expect(result.stdout, `qemu-io ${command}`).to.not.match(/Pattern verification failed|error/i);
  };
  /** A client that keeps `uri` open (qemu-io sleeping) until killed. */
  const holdOpen = async (uri: string): Promise<ChildProcess> => {
    const child = spawn('qemu-io', ['-f', 'raw', '-c', 'sleep 120000', uri], { stdio: 'ignore' });
    holders.push(child);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    return child;
  };

  afterEach(async () => {
    for (const child of holders.splice(0)) child.kill('SIGKILL');
    for (const node of cluster?.nodes.values() ?? []) await node.kill();
    if (cluster) await fs.rm(cluster.directory, { recursive: true, force: true });
    cluster = null;
  });

  it('makes a volume through the node that does not hold the array: both nodes export it, bytes written through one read back through the other', async function () {
    requireTools(this, 'nbdinfo', 'qemu-io');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'info', spareBytes: 96 * MiB });
    const [a, b] = [cluster.node('a'), cluster.node('b')];
    // b does not hold the array: the command is passed on to a, the default owner is b (the node asked).
    expect(await ok('b', 'create', 'made', '--size', '24MiB', '--description', 'made online')).to.match(/created made: 24 MiB, 4 KiB pages, owner b/);
    const made = (await list('a')).find((volume) => volume.name === 'made');
    expect(made, 'listed').to.include({ sizeBytes: 24 * MiB, owner: 'b', home: 'b', origin: 'online', state: 'ok' });
    for (const node of [a, b]) expect(await exportSize(node.uri('made')), `size through ${node.uri('made')}`).to.equal(24 * MiB);
    await qemuIo(a.uri('made'), 'write -P 0x5a 1M 3M');
    await qemuIo(b.uri('made'), 'read -P 0x5a 1M 3M');
    await qemuIo(b.uri('made'), 'write -P 0x3c 20M 4M');
    await qemuIo(a.uri('made'), 'read -P 0x3c 20M 4M');
    // Never written: zeros, not whatever the array held there.
    await qemuIo(a.uri('made'), 'read -P 0 8M 8M');
    expect(b.log()).to.match(/volume made \(24 MiB\) is exported here, served by node b/);
    // The same name again, and the config volumes, are untouched by a second try.
    const again = await ftvm('a', 'create', 'made', '--size', '8MiB');
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/volume made exists/);
  });

  it('grows a volume in place: reconnecting clients see the new size, the new tail reads zeros; shrinking and growing into a neighbour are refused', async function () {
    requireTools(this, 'nbdinfo', 'qemu-io');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'info', spareBytes: 96 * MiB });
    const [a, b] = [cluster.node('a'), cluster.node('b')];
    await ok('a', 'create', 'grows', '--size', '16MiB', '--owner', 'a');
    await qemuIo(b.uri('grows'), 'write -P 0x77 12M 4M');
    expect(await ok('b', 'resize', 'grows', '--size', '48MiB')).to.match(/resized grows: 48 MiB/);
    for (const node of [a, b]) expect(await exportSize(node.uri('grows'))).to.equal(48 * MiB);
    await qemuIo(b.uri('grows'), 'read -P 0x77 12M 4M');
    await qemuIo(a.uri('grows'), 'read -P 0 16M 32M');
    await qemuIo(b.uri('grows'), 'write -P 0x12 44M 4M');
    await qemuIo(a.uri('grows'), 'read -P 0x12 44M 4M');
    const shrink = await ftvm('a', 'resize', 'grows', '--size', '32MiB');
    expect(shrink.code).to.equal(1);
    expect(shrink.stderr).to.match(/volumes only grow/);
    const intoNeighbour = await ftvm('a', 'resize', 'vol0', '--size', '32MiB');
    expect(intoNeighbour.code).to.equal(1);
    expect(intoNeighbour.stderr).to.match(/volume vol1 lies right after it/);
    expect(await exportSize(a.uri('grows'))).to.equal(48 * MiB);
    expect(await exportSize(a.uri('vol0'))).to.equal(16 * MiB);
  });

  it('refuses to delete a volume a client holds open on either node; --force cuts it off; the freed space reads zeros when a new volume takes it', async function () {
    requireTools(this, 'nbdinfo', 'qemu-io');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'info', spareBytes: 96 * MiB });
    const [a, b] = [cluster.node('a'), cluster.node('b')];
    await ok('a', 'create', 'doomed', '--size', '16MiB', '--owner', 'b');
    await qemuIo(a.uri('doomed'), 'write -P 0xee 0 16M');
    const placed = (await list('a')).find((volume) => volume.name === 'doomed') as Listed;
    await holdOpen(b.uri('doomed'));
    const refused = await ftvm('a', 'delete', 'doomed');
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.match(/volume doomed is open by NBD clients on b/);
    await qemuIo(a.uri('doomed'), 'read -P 0xee 0 16M');
    expect((await list('b')).map((volume) => volume.name)).to.include('doomed');
    expect(await ok('b', 'delete', 'doomed', '--force')).to.match(/deleted doomed/);
    expect((await list('a')).map((volume) => volume.name)).to.deep.equal(['vol0', 'vol1']);
    for (const node of [a, b]) {
      const gone = await run('nbdinfo', ['--size', node.uri('doomed')]);
      expect(gone.code, `${node.uri('doomed')} is gone`).to.not.equal(0);
    }
    await ok('a', 'create', 'reborn', '--size', '16MiB', '--owner', 'a');
    const reborn = (await list('a')).find((volume) => volume.name === 'reborn') as Listed;
    expect(reborn.arrayOffset, 'the freed extent is used again').to.equal(placed.arrayOffset);
    await qemuIo(b.uri('reborn'), 'read -P 0 0 16M');
  });

  it('keeps what was made, grown and deleted across a restart of both nodes; a config volume deleted online is not made again', async function () {
    requireTools(this, 'nbdinfo', 'qemu-io');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'info', spareBytes: 96 * MiB });
    await ok('a', 'create', 'kept', '--size', '16MiB', '--owner', 'b');
    await ok('a', 'resize', 'kept', '--size', '32MiB');
    await qemuIo(cluster.node('a').uri('kept'), 'write -P 0x42 28M 4M');
    await ok('a', 'delete', 'vol1');
    await cluster.stop();
    await cluster.start('a');
    await cluster.start('b');
    const [a, b] = [cluster.node('a'), cluster.node('b')];
    const listed = await list('b');
    expect(listed.map((volume) => [volume.name, volume.sizeBytes, volume.home])).to.deep.equal([
      ['vol0', 16 * MiB, 'a'],
      ['kept', 32 * MiB, 'b'],
    ]);
    await qemuIo(b.uri('kept'), 'read -P 0x42 28M 4M');
    expect(a.log()).to.match(/volume vol1 was deleted online .* take it out of the config/);
    expect((await run('nbdinfo', ['--size', a.uri('vol1')])).code).to.not.equal(0);
  });

  it('changes nothing while a node is down, or when the request is bad', async function () {
    requireTools(this, 'nbdinfo');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'info', spareBytes: 32 * MiB, leaseMs: 1500 });
    const before = await list('a');
    const bad: Array<[string[], RegExp]> = [
      [['create', 'bad/name', '--size', '4MiB'], /is not a volume name/],
      [['create', 'huge', '--size', '10GiB'], /does not fit: \d+ bytes free/],
      [['create', 'odd', '--size', '5000'], /size must be a positive multiple of 4096/],
      [['create', 'pages', '--size', '4MiB', '--page-size', '12KiB'], /page size must be a power of two/],
      [['create', 'bigpages', '--size', '4MiB', '--page-size', '64KiB'], /page size 64 KiB is larger than any config volume's \(4 KiB\)/],
      [['create', 'nobody', '--size', '4MiB', '--owner', 'z'], /'z' is not a node/],
      [['resize', 'missing', '--size', '4MiB'], /no volume missing/],
      [['delete', 'missing'], /no volume missing/],
    ];
    for (const [args, message] of bad) {
      const result = await ftvm('a', ...args);
      expect(result.code, args.join(' ')).to.equal(1);
      expect(result.stderr, args.join(' ')).to.match(message);
    }
    await cluster.node('b').kill();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const refused = await ftvm('a', 'create', 'lonely', '--size', '4MiB');
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.match(/node b is unreachable: every node must be up and linked to create a volume/);
    const deleteRefused = await ftvm('a', 'delete', 'vol1');
    expect(deleteRefused.code).to.equal(1);
    expect(deleteRefused.stderr).to.match(/node b is unreachable/);
    const after = await list('a');
    expect(after.map((volume) => [volume.name, volume.sizeBytes, volume.state])).to.deep.equal(before.map((volume) => [volume.name, volume.sizeBytes, volume.state]));
    expect(await exportSize(cluster.node('a').uri('vol1'))).to.equal(16 * MiB);
  });
});
