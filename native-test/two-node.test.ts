// Proves the two-node cluster with real clients on both paths: nbdcopy in through one node and out
// through the other is byte-identical; fio writes through both nodes at once and verifies across
// them (written via a, checked via b and the reverse); a working set four times the frame pool
// verifies under fio with no deadlock and no error.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startCluster, type FtvmCluster } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { run, sha256File, writeRandomFile } from './lib/run.js';

const MiB = 1024 * 1024;

async function fio(uri: string, args: string[]): Promise<void> {
  const result = await run('fio', ['--ioengine=nbd', `--uri=${uri}`, '--verify_state_save=0', '--output-format=terse', ...args], { timeoutMs: 110_000 });
  expect(result.code, `fio ${args.join(' ')} failed:\n${result.stdout}\n${result.stderr}`).to.equal(0);
  expect(result.stdout + result.stderr).to.not.match(/verify: bad magic|crc32c: verify failed|bad header/i);
}

describe('native: two-node cluster on both paths', function () {
  this.timeout(180_000);
  let cluster: FtvmCluster | null = null;

  afterEach(async () => {
    for (const node of cluster?.nodes.values() ?? []) await node.kill();
    if (cluster) await fs.rm(cluster.directory, { recursive: true, force: true });
    cluster = null;
  });

  it('nbdcopy in through one node and out through the other is byte-identical, for a volume of each owner, over TCP and unix sockets', async function () {
    requireTools(this, 'nbdcopy');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 48 * MiB }, { name: 'vol1', sizeBytes: 48 * MiB }], { logLevel: 'warn' });
    const source = path.join(cluster.directory, 'source.bin');
    await writeRandomFile(source, 48 * MiB);
    const want = await sha256File(source);
    const a = cluster.node('a');
    const b = cluster.node('b');
    for (const volume of ['vol0', 'vol1']) {
      for (const [into, from] of [[a.uri(volume), b.unixUri(volume)], [b.uri(volume), a.unixUri(volume)]] as const) {
        await fs.rm(path.join(cluster.directory, 'back.bin'), { force: true });
        const copyIn = await run('nbdcopy', [source, into], { timeoutMs: 60_000 });
        expect(copyIn.code, copyIn.stderr).to.equal(0);
        const back = path.join(cluster.directory, 'back.bin');
        const copyOut = await run('nbdcopy', [from, back], { timeoutMs: 60_000 });
        expect(copyOut.code, copyOut.stderr).to.equal(0);
        expect(await sha256File(back), `${volume}: ${into} → ${from}`).to.equal(want);
      }
    }
  });

  it('nbdinfo and qemu-io see the same export on both nodes: a pattern written through one reads back through the other', async function () {
    requireTools(this, 'nbdinfo', 'qemu-io', 'qemu-img');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 16 * MiB }, { name: 'vol1', sizeBytes: 16 * MiB }], { logLevel: 'warn' });
    const a = cluster.node('a');
    const b = cluster.node('b');
    for (const volume of ['vol0', 'vol1']) {
      const sizes = await Promise.all([a, b].map((node) => run('nbdinfo', ['--size', node.uri(volume)])));
      expect(sizes.map((size) => size.stdout.trim())).to.deep.equal([String(16 * MiB), String(16 * MiB)]);
      for (const [writer, reader, pattern] of [[a, b, '0x5a'], [b, a, '0xc3']] as const) {
        const write = await run('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} 1M 3M`, '-c', `write -P ${pattern} 12345 777`, writer.uri(volume)]);
        expect(write.code, write.stderr).to.equal(0);
        const read = await run('qemu-io', ['-f', 'raw', '-c', `read -P ${pattern} 1M 3M`, '-c', `read -P ${pattern} 12345 777`, reader.uri(volume)]);
        expect(read.code, read.stderr).to.equal(0);
        expect(read.stdout, `${volume}: pattern ${pattern} back through the other node`).to.not.match(/Pattern verification failed/);
      }
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a.uri(volume), b.uri(volume)]);
      expect(compare.code, `${volume}: qemu-img compare a vs b\n${compare.stdout}${compare.stderr}`).to.equal(0);
    }
  });

  it('fio writes through both nodes at once, then each node verifies what the other wrote (crc32c)', async function () {
    requireTools(this, 'fio');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 64 * MiB }, { name: 'vol1', sizeBytes: 64 * MiB }], { logLevel: 'warn' });
    const a = cluster.node('a');
    const b = cluster.node('b');
    // Two regions per volume: one written through a, one through b, all four jobs at once.
    const job = (region: number): string[] => ['--name=w', '--rw=randwrite', '--bs=4k', '--iodepth=16', `--offset=${region * 32}M`, '--size=32M', '--verify=crc32c', '--do_verify=1', `--randseed=${1000 + region}`];
    await Promise.all([fio(a.uri('vol0'), job(0)), fio(b.uri('vol0'), job(1)), fio(a.uri('vol1'), job(0)), fio(b.uri('vol1'), job(1))]);
    // Cross-check: the same jobs in verify-only mode, each through the other node.
    const check = (region: number): string[] => [...job(region), '--verify_only'];
    await Promise.all([fio(b.uri('vol0'), check(0)), fio(a.uri('vol0'), check(1)), fio(b.uri('vol1'), check(0)), fio(a.uri('vol1'), check(1))]);
  });

  it('a working set four times the frame pool verifies under fio, through the owner and through the partner', async function () {
    requireTools(this, 'fio');
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 64 * MiB }], { logLevel: 'warn', memoryBytes: 16 * MiB, cacheBytes: 4 * MiB });
    const a = cluster.node('a');
    const b = cluster.node('b');
    await Promise.all([
      fio(a.uri('vol0'), ['--name=big', '--rw=randwrite', '--bs=16k', '--iodepth=32', '--offset=0', '--size=32M', '--verify=crc32c', '--randseed=7']),
      fio(b.uri('vol0'), ['--name=big', '--rw=randwrite', '--bs=16k', '--iodepth=32', '--offset=32M', '--size=32M', '--verify=crc32c', '--randseed=8']),
    ]);
    await fio(b.uri('vol0'), ['--name=big', '--rw=randwrite', '--bs=16k', '--iodepth=32', '--offset=0', '--size=32M', '--verify=crc32c', '--randseed=7', '--verify_only']);
  });
});
