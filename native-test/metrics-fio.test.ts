// Proves /metrics counts what a real NBD client (fio's nbd engine, libnbd) did: as many write and
// read requests and bytes as fio reports having issued, each with a latency observation.
import { expect } from 'chai';
import { freePort, startCluster, type FtvmCluster } from '../test/support/ftvm-process.js';
import { scrape, value } from '../test/support/prometheus.js';
import { requireTools } from '../test/support/tools.js';
import { run } from './lib/run.js';

const MiB = 1 << 20;

interface FioDirection {
  io_bytes: number;
  total_ios: number;
}

async function fio(uri: string, args: string[]): Promise<{ read: FioDirection; write: FioDirection }> {
  const result = await run('fio', ['--ioengine=nbd', `--uri=${uri}`, '--output-format=json', '--verify_state_save=0', '--name=job', ...args], { timeoutMs: 90_000 });
  expect(result.code, `fio failed:\n${result.stdout}\n${result.stderr}`).to.equal(0);
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: Array<{ read: FioDirection; write: FioDirection }> }).jobs[0];
  if (!job) throw new Error(`no job in fio output:\n${result.stdout}`);
  return job;
}

describe('native: /metrics against fio', function () {
  this.timeout(120_000);
  let cluster: FtvmCluster | null = null;
  let metricsPort = 0;

  before(async function () {
    requireTools(this, 'fio');
    metricsPort = await freePort();
    const port = metricsPort;
    cluster = await startCluster([{ name: 'vol0', sizeBytes: 64 * MiB }], { nodes: ['a'], nodeExtra: () => ({ metrics: { host: '127.0.0.1', port } }) });
  });

  after(async () => {
    await cluster?.stop();
  });

  it('write and read requests, bytes and latency counts equal what fio issued', async () => {
    const uri = (cluster as FtvmCluster).node('a').uri('vol0');
    const written = await fio(uri, ['--rw=write', '--bs=64k', '--iodepth=8', '--size=4M']);
    const read = await fio(uri, ['--rw=randread', '--bs=4k', '--iodepth=16', '--size=2M']);
    expect(written.write.total_ios).to.equal(64);
    const samples = await scrape(metricsPort);
    const of = (name: string, command: string): number | undefined => value(samples, name, { command, ...(name.includes('duration') ? {} : { volume: 'vol0' }) });
    expect(of('ftvm_nbd_requests_total', 'write')).to.equal(written.write.total_ios);
    expect(of('ftvm_nbd_request_bytes_total', 'write')).to.equal(written.write.io_bytes);
    expect(of('ftvm_nbd_requests_total', 'read')).to.equal(read.read.total_ios);
    expect(of('ftvm_nbd_request_bytes_total', 'read')).to.equal(read.read.io_bytes);
    expect(of('ftvm_nbd_request_duration_seconds_count', 'write')).to.equal(written.write.total_ios);
    expect(of('ftvm_nbd_request_duration_seconds_count', 'read')).to.equal(read.read.total_ios);
    // fio has gone; the server hears its connection close a moment later.
    const deadline = Date.now() + 5000;
    while (value(await scrape(metricsPort), 'ftvm_nbd_connections') !== 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(value(await scrape(metricsPort), 'ftvm_nbd_connections'), 'fio has disconnected').to.equal(0);
  });
});
