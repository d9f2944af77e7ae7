// Proves fio's crc32c verify finds nothing lost when the node serving a client dies mid-job, run after
// run: QEMU's client (reconnect-delay) on node a's address, fio random writes into it, a killed with
// SIGKILL at a random moment; b takes over a's volume and address and the job completes; after the
// page cache is dropped, fio verifies every block through the server. Then a is started again, gets
// its volume and address back (failback), and the next run kills it again.
// FTVM_FAILOVER_RUNS sets the number of runs (default 2; the campaign before a stop runs 20).
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { makeTempDirectory, startCluster, type FtvmCluster } from '../test/support/ftvm-process.js';
import { requireRoot, requireTools } from '../test/support/tools.js';
import { status, until } from './lib/cluster.js';
import { startClientStack, stopClientStack, type ClientStack } from './lib/qemu-client.js';

const VOLUME = { name: 'vol0', sizeBytes: 128 << 20 };
const RUNS = Number(process.env.FTVM_FAILOVER_RUNS ?? 2);

function fio(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => resolve({ code: code ?? -1, output }));
  });
}

describe(`native: fio crc32c verify through QEMU's reconnecting client, kill -9 of the serving node, ${RUNS} run(s)`, function () {
  this.timeout(120_000 + RUNS * 90_000);
  let cluster: FtvmCluster | null = null;
  let stack: ClientStack | null = null;
  let directory = '';
  const diskFile = (): string => path.join(directory, 'disk');

  before(async function () {
    requireRoot(this);
    requireTools(this, 'qemu-storage-daemon', 'fio');
    directory = await makeTempDirectory('ftvm-failover-fio-');
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') for (const [name, node] of cluster?.nodes ?? []) process.stderr.write(`--- node ${name} ---\n${node.log()}`);
  });

  after(async () => {
    await stopClientStack(stack, diskFile());
    await cluster?.stop();
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  });

  it('zero verify errors after every kill; the volume moves back to its home node between runs', async () => {
    cluster = await startCluster([{ ...VOLUME, owner: 'a' }], { partnerTimeoutMs: 500, takeoverAddresses: true, logLevel: 'info' });
    const a = cluster.node('a');
    stack = await startClientStack({ host: a.host, port: a.port, volume: VOLUME.name, sizeBytes: VOLUME.sizeBytes, reconnectDelaySeconds: 30 }, diskFile());
    for (let index = 1; index <= RUNS; index++) {
      const job = ['--name=failover', `--filename=${diskFile()}`, '--rw=randwrite', '--bs=4k', '--size=48M', '--ioengine=psync', '--numjobs=1', '--verify=crc32c', `--randseed=${index}`];
      const writing = fio([...job, '--do_verify=0', '--end_fsync=1']);
      const killAfterMs = 200 + randomInt(1500);
      await new Promise((resolve) => setTimeout(resolve, killAfterMs));
      await cluster.node('a').kill();
      const written = await writing;
      expect(written.code, `run ${index}: the write phase (a killed after ${killAfterMs} ms)\n${written.output}`).to.equal(0);
      expect((await status(cluster.node('b'), 'b')).volumes[0]?.owner, `run ${index}: b serves vol0`).to.equal('b');
      // Reads must come from the server, not from this machine's page cache of the FUSE file.
      await fs.writeFile('/proc/sys/vm/drop_caches', '3');
      const verified = await fio([...job, '--verify_only', '--verify_fatal=1']);
      expect(verified.code, `run ${index}: verify after the failover\n${verified.output}`).to.equal(0);
      expect(verified.output).to.not.match(/verify: bad/);
      // Failback: a returns, takes vol0 and its address back; QEMU reconnects to it.
      const returned = await cluster.start('a');
      await until(`run ${index}: vol0 is served by a again`, async () => (await status(returned, 'a')).volumes[0]?.owner === 'a');
      await until(`run ${index}: a listens on its own address again`, async () => returned.log().includes(`nbd listening on ${a.host}:${a.port}`));
      await fs.writeFile('/proc/sys/vm/drop_caches', '3');
      const again = await fio([...job, '--verify_only', '--verify_fatal=1']);
      expect(again.code, `run ${index}: verify after the failback\n${again.output}`).to.equal(0);
    }
  });
});
