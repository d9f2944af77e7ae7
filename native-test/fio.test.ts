// Proves concurrent fio jobs (one NBD connection each, own regions, queue depth 32) write through ftvm and verify with crc32c.
import { expect } from 'chai';
import { ArrayReader } from '../test/support/array-reader.js';
import { startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { shutDown } from './lib/node.js';
import { run } from './lib/run.js';

const VOLUME = { name: 'vol0', sizeBytes: 64 << 20 };
const MiB = 1 << 20;

interface FioDirection {
  io_bytes: number;
  total_ios: number;
  short_ios: number;
  drop_ios: number;
}

interface FioJob {
  jobname: string;
  error: number;
  read: FioDirection;
  write: FioDirection;
}

/** Runs fio against an NBD URI with JSON output; fio's "connected" lines come before the JSON. */
async function fio(uri: string, args: string[]): Promise<{ jobs: FioJob[]; connections: number }> {
  // verify_state_save=0: fio would otherwise leave *-verify.state files in the working directory.
  const result = await run('fio', ['--ioengine=nbd', `--uri=${uri}`, '--output-format=json', '--verify_state_save=0', ...args], {
    timeoutMs: 90_000,
  });
  expect(result.code, `fio failed:\n${result.stdout}\n${result.stderr}`).to.equal(0);
  const start = result.stdout.indexOf('{');
  expect(start, `no JSON in fio output:\n${result.stdout}`).to.be.at.least(0);
  const connections = (result.stdout + result.stderr).split('connected to NBD server').length - 1;
  return { jobs: (JSON.parse(result.stdout.slice(start)) as { jobs: FioJob[] }).jobs, connections };
}

function attachCount(node: FtvmNode): number {
  return node.log().split('\n').filter((line) => line.includes('client attached')).length;
}

describe('native: fio verify over the nbd ioengine', function () {
  let node: FtvmNode | undefined;

  before(async function () {
    requireTools(this, 'fio');
    node = await startNode([VOLUME]);
  });

  after(async function () {
    await shutDown(node);
  });

  it('4 jobs of 4 KiB random writes at depth 32, each on its own connection and region, verify with zero errors', async function () {
    const jobs = 4;
    const regionBytes = 8 * MiB;
    const attachedBefore = attachCount(node!);
    const result = await fio(node!.uri(VOLUME.name), [
      '--name=randwrite4k',
      '--rw=randwrite',
      '--bs=4k',
      '--iodepth=32',
      `--numjobs=${jobs}`,
      `--size=${regionBytes}`,
      `--offset_increment=${regionBytes}`,
      '--verify=crc32c',
      '--verify_fatal=1',
      '--do_verify=1',
    ]);
    expect(result.jobs).to.have.length(jobs);
    for (const job of result.jobs) {
      expect(job.error, `job ${job.jobname} error`).to.equal(0);
      expect(job.write.io_bytes, 'bytes written').to.equal(regionBytes);
      expect(job.write.total_ios, 'one write per 4 KiB block').to.equal(regionBytes / 4096);
      expect(job.read.io_bytes, 'bytes read back and verified').to.equal(regionBytes);
      expect([job.read.short_ios, job.read.drop_ios, job.write.short_ios, job.write.drop_ios]).to.deep.equal([0, 0, 0, 0]);
    }
    expect(result.connections, 'fio reported one NBD connection per job').to.equal(jobs);
    expect(attachCount(node!) - attachedBefore, 'connections the server attached').to.be.at.least(jobs);

    // fio's verify header starts every block: magic 0xacca, length, and the block's own offset. Reading
    // the volume off the RAID member files shows each block landed where it was meant to, each region
    // written by one job.
    const reader = await ArrayReader.fromConfig(node!.configFile);
    const stored = await reader.readVolume(VOLUME.name, 0, jobs * regionBytes);
    const writerOfRegion: number[] = [];
    for (let offset = 0; offset < stored.length; offset += 4096) {
      expect(stored.readUInt16LE(offset), `verify magic at ${offset}`).to.equal(0xacca);
      expect(stored.readUInt32LE(offset + 4), `block length at ${offset}`).to.equal(4096);
      expect(Number(stored.readBigUInt64LE(offset + 16)), `block offset at ${offset}`).to.equal(offset);
      const writer = stored.readUInt16LE(offset + 32);
      const region = Math.floor(offset / regionBytes);
      writerOfRegion[region] ??= writer;
      expect(writer, `block at ${offset} written by the job of its region`).to.equal(writerOfRegion[region]);
    }
    expect(new Set(writerOfRegion).size, 'a different job wrote each region').to.equal(jobs);
    const beyond = await reader.readVolume(VOLUME.name, jobs * regionBytes, 4 * MiB);
    expect(beyond.every((byte) => byte === 0), 'nothing written past the last region').to.equal(true);
  });

  it('mixed block sizes 512 B - 256 KiB verify with zero errors', async function () {
    const regionBytes = 12 * MiB;
    const result = await fio(node!.uri(VOLUME.name), [
      '--name=mixed',
      '--rw=randwrite',
      '--bsrange=512-256k',
      '--iodepth=16',
      '--numjobs=2',
      `--offset=${40 * MiB}`,
      `--size=${regionBytes}`,
      `--offset_increment=${regionBytes}`,
      '--verify=crc32c',
      '--verify_fatal=1',
      '--do_verify=1',
    ]);
    expect(result.jobs).to.have.length(2);
    for (const job of result.jobs) {
      expect(job.error, `job ${job.jobname} error`).to.equal(0);
      expect(job.write.io_bytes).to.equal(regionBytes);
      expect(job.read.io_bytes, 'everything written was read back and verified').to.equal(job.write.io_bytes);
      // Neither all 256 KiB nor all 512 B: the sizes really were mixed.
      expect(job.write.total_ios).to.be.greaterThan(regionBytes / (256 * 1024));
      expect(job.write.total_ios).to.be.lessThan(regionBytes / 512);
      expect([job.read.short_ios, job.read.drop_ios]).to.deep.equal([0, 0]);
    }
  });
});
