// Proves QEMU's NBD client works against ftvm: qemu-io patterns, discard, write zeroes, qemu-img info/convert/compare.
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { makeTempDirectory, startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { ArrayReader } from '../test/support/array-reader.js';
import { requireTools } from '../test/support/tools.js';
import { shutDown } from './lib/node.js';
import { run, runOk, type RunResult } from './lib/run.js';

const PATTERNS = { name: 'patterns', sizeBytes: 32 << 20 };
const MIRROR = { name: 'mirror', sizeBytes: 32 << 20 };
const KiB = 1024;
const MiB = 1024 * KiB;

interface Region {
  pattern: number;
  offset: number;
  length: number;
}

/** Aligned, unaligned, odd-sized and end-of-export writes; none overlap. */
const REGIONS: Region[] = [
  { pattern: 0xa1, offset: 0, length: 4 * KiB },
  { pattern: 0xb2, offset: 3 * 4 * KiB, length: 1 * MiB },
  { pattern: 0xc3, offset: 2 * MiB + 12345, length: 1000 },
  { pattern: 0xd4, offset: 3 * MiB + 1, length: 65535 },
  { pattern: 0xe5, offset: PATTERNS.sizeBytes - 512, length: 512 },
];

function qemuIo(uri: string, commands: string[]): Promise<RunResult> {
  return run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri]);
}

/** Asserts every byte of a volume range, as stored on the RAID member files, holds `value`. */
async function expectStoredRange(node: FtvmNode, volume: string, offset: number, length: number, value: number): Promise<void> {
  const reader = await ArrayReader.fromConfig(node.configFile);
  const data = await reader.readVolume(volume, offset, length);
  expect(data.length, `bytes read at ${offset}`).to.equal(length);
  const wrong = data.findIndex((byte) => byte !== value);
  expect(wrong, `stored byte ${offset + wrong} of ${volume} should be 0x${value.toString(16)}`).to.equal(-1);
}

describe('native: qemu-io and qemu-img', function () {
  let node: FtvmNode | undefined;
  let scratch = '';

  before(async function () {
    requireTools(this, 'qemu-io', 'qemu-img');
    node = await startNode([PATTERNS, MIRROR]);
    scratch = await makeTempDirectory('ftvm-qemu-');
  });

  after(async function () {
    await shutDown(node);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('writes patterns at aligned, unaligned and end offsets and reads them back', async function () {
    const writes = REGIONS.map((r) => `write -P 0x${r.pattern.toString(16)} ${r.offset} ${r.length}`);
    const reads = REGIONS.map((r) => `read -P 0x${r.pattern.toString(16)} ${r.offset} ${r.length}`);
    const result = await qemuIo(node!.uri(PATTERNS.name), [...writes, ...reads]);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    expect(result.stdout).to.not.include('Pattern verification failed');
    for (const r of REGIONS) {
      expect(result.stdout).to.include(`wrote ${r.length}/${r.length} bytes at offset ${r.offset}`);
      expect(result.stdout).to.include(`read ${r.length}/${r.length} bytes at offset ${r.offset}`);
      await expectStoredRange(node!, PATTERNS.name, r.offset, r.length, r.pattern);
    }
    // The byte just before an unaligned write is untouched.
    await expectStoredRange(node!, PATTERNS.name, REGIONS[2].offset - 1, 1, 0);
  });

  it('fails the pattern check when the data differs (the check is live)', async function () {
    const first = REGIONS[0];
    const result = await qemuIo(node!.uri(PATTERNS.name), [`read -P 0x5a ${first.offset} ${first.length}`]);
    expect(result.code).to.equal(1);
    expect(result.stdout).to.include(`Pattern verification failed at offset ${first.offset}`);
  });

  it('discards without disturbing neighbours, and write -z reads back as zeroes', async function () {
    const base = 8 * MiB;
    const result = await qemuIo(node!.uri(PATTERNS.name), [
      `write -P 0x77 ${base} ${256 * KiB}`,
      `discard ${base + 64 * KiB} ${64 * KiB}`,
      `write -z ${base + 128 * KiB} ${64 * KiB}`,
      `read -P 0x77 ${base} ${64 * KiB}`,
      `read -P 0 ${base + 128 * KiB} ${64 * KiB}`,
      `read -P 0x77 ${base + 192 * KiB} ${64 * KiB}`,
      `write -z ${base + 300 * KiB + 7} 333`,
      `read -P 0 ${base + 300 * KiB + 7} 333`,
    ]);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    expect(result.stdout).to.not.include('Pattern verification failed');
    expect(result.stdout).to.include(`discard ${64 * KiB}/${64 * KiB} bytes at offset ${base + 64 * KiB}`);
    expect(result.stdout).to.include(`wrote ${64 * KiB}/${64 * KiB} bytes at offset ${base + 128 * KiB}`);
    await expectStoredRange(node!, PATTERNS.name, base, 64 * KiB, 0x77);
    await expectStoredRange(node!, PATTERNS.name, base + 128 * KiB, 64 * KiB, 0);
    await expectStoredRange(node!, PATTERNS.name, base + 192 * KiB, 64 * KiB, 0x77);
  });

  it('qemu-img info reports the raw size', async function () {
    const { stdout } = await runOk('qemu-img', ['info', '--output=json', node!.uri(PATTERNS.name)]);
    const info = JSON.parse(stdout) as { 'virtual-size': number; format: string };
    expect(info['virtual-size']).to.equal(PATTERNS.sizeBytes);
    expect(info.format).to.equal('raw');
  });

  it('qemu-img convert fills the export from a local image; compare finds them identical, then finds a changed byte', async function () {
    const uri = node!.uri(MIRROR.name);
    // Non-zero everywhere first, so the zero regions of the image must really be written.
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P 0x99 0 ${MIRROR.sizeBytes}`, uri]);
    const local = path.join(scratch, 'local.img');
    const handle = await fs.open(local, 'w');
    await handle.truncate(MIRROR.sizeBytes);
    for (const [offset, length] of [[0, 1 * MiB], [5 * MiB + 123, 777 * KiB], [MIRROR.sizeBytes - 4 * KiB, 4 * KiB]]) {
      const chunk = Buffer.alloc(length);
      for (let i = 0; i < length; i++) chunk[i] = (i * 31 + offset) & 0xff || 1;
      await handle.write(chunk, 0, length, offset);
    }
    await handle.close();

    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', local, uri], { timeoutMs: 60_000 });
    const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', local, uri]);
    expect(same.code, same.stdout + same.stderr).to.equal(0);
    expect(same.stdout).to.include('Images are identical');
    await expectStoredRange(node!, MIRROR.name, 2 * MiB, 1 * MiB, 0);

    const changedOffset = 20 * MiB + 4321;
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P 0x01 ${changedOffset} 1`, uri]);
    const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', local, uri]);
    expect(differs.code, differs.stdout + differs.stderr).to.equal(1);
    // qemu-img compare names the 512-byte sector that holds the first difference.
    expect(differs.stdout).to.include(`Content mismatch at offset ${changedOffset - (changedOffset % 512)}!`);
  });
});
