// Proves libnbd's nbdinfo sees what ftvm advertises: sizes, read-only, every can_* flag, the export list, TCP and unix sockets.
import { expect } from 'chai';
import { startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { shutDown } from './lib/node.js';
import { run, runOk } from './lib/run.js';

const PRIMARY = { name: 'primary', sizeBytes: 48 << 20, description: 'primary disk for nbdinfo' };
const ARCHIVE = { name: 'archive', sizeBytes: 12 << 20, readOnly: true };

interface NbdinfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_cache: boolean;
  can_multi_conn: boolean;
  can_df: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
  contexts: string[];
}

interface NbdinfoJson {
  protocol: string;
  structured: boolean;
  exports: NbdinfoExport[];
}

async function nbdinfoJson(...args: string[]): Promise<NbdinfoJson> {
  const { stdout } = await runOk('nbdinfo', ['--json', ...args]);
  return JSON.parse(stdout) as NbdinfoJson;
}

describe('native: nbdinfo', function () {
  let node: FtvmNode | undefined;

  before(async function () {
    requireTools(this, 'nbdinfo');
    node = await startNode([PRIMARY, ARCHIVE]);
  });

  after(async function () {
    await shutDown(node);
  });

  it('reports size and all write features of the writable export', async function () {
    const info = await nbdinfoJson(node!.uri(PRIMARY.name));
    expect(info.protocol).to.equal('newstyle-fixed');
    expect(info.structured).to.equal(true);
    expect(info.exports).to.have.length(1);
    const entry = info.exports[0];
    expect(entry['export-name']).to.equal(PRIMARY.name);
    expect(entry.description).to.equal(PRIMARY.description);
    expect(entry['export-size']).to.equal(PRIMARY.sizeBytes);
    expect(entry.is_read_only).to.equal(false);
    expect({
      flush: entry.can_flush,
      fua: entry.can_fua,
      trim: entry.can_trim,
      zero: entry.can_zero,
      fastZero: entry.can_fast_zero,
      cache: entry.can_cache,
      multiConn: entry.can_multi_conn,
      df: entry.can_df,
    }).to.deep.equal({ flush: true, fua: true, trim: true, zero: true, fastZero: true, cache: true, multiConn: true, df: true });
    expect([entry.block_size_minimum, entry.block_size_preferred, entry.block_size_maximum]).to.deep.equal([1, 4096, 32 << 20]);
    expect(entry.contexts).to.include('base:allocation');
  });

  it('reports the read-only export as read-only, without trim or zero', async function () {
    const info = await nbdinfoJson(node!.uri(ARCHIVE.name));
    const entry = info.exports[0];
    expect(entry['export-name']).to.equal(ARCHIVE.name);
    expect(entry['export-size']).to.equal(ARCHIVE.sizeBytes);
    expect(entry.is_read_only).to.equal(true);
    expect(entry).to.not.have.property('description');
    // Write-side features make no sense on a read-only export and are not advertised; the rest are.
    expect([entry.can_trim, entry.can_zero, entry.can_fast_zero]).to.deep.equal([false, false, false]);
    expect([entry.can_flush, entry.can_fua, entry.can_cache, entry.can_multi_conn, entry.can_df]).to.deep.equal([true, true, true, true, true]);
  });

  it('lists both exports with names and descriptions', async function () {
    const info = await nbdinfoJson('--list', node!.uri(''));
    const byName = new Map(info.exports.map((entry) => [entry['export-name'], entry]));
    expect([...byName.keys()]).to.have.members([PRIMARY.name, ARCHIVE.name]);
    expect(info.exports).to.have.length(2);
    expect(byName.get(PRIMARY.name)?.description).to.equal(PRIMARY.description);
    expect(byName.get(PRIMARY.name)?.['export-size']).to.equal(PRIMARY.sizeBytes);
    expect(byName.get(ARCHIVE.name)?.description).to.equal(undefined);
    expect(byName.get(ARCHIVE.name)?.['export-size']).to.equal(ARCHIVE.sizeBytes);
    expect(byName.get(ARCHIVE.name)?.is_read_only).to.equal(true);
  });

  it('answers --can with exit 0 for every feature of the writable export', async function () {
    for (const feature of ['flush', 'fua', 'trim', 'zero', 'fast-zero', 'multi-conn', 'cache', 'df', 'write']) {
      const result = await run('nbdinfo', ['--can', feature, node!.uri(PRIMARY.name)]);
      expect(result.code, `--can ${feature}: ${result.stderr}`).to.equal(0);
    }
  });

  it('answers --can write/trim/zero with "no" (exit 2) and --is readonly with "yes" for the read-only export', async function () {
    for (const feature of ['write', 'trim', 'zero']) {
      const result = await run('nbdinfo', ['--can', feature, node!.uri(ARCHIVE.name)]);
      expect(result.code, `--can ${feature}: ${result.stderr}`).to.equal(2);
    }
    for (const feature of ['flush', 'cache', 'multi-conn']) {
      const result = await run('nbdinfo', ['--can', feature, node!.uri(ARCHIVE.name)]);
      expect(result.code, `--can ${feature}: ${result.stderr}`).to.equal(0);
    }
    expect((await run('nbdinfo', ['--is', 'readonly', node!.uri(ARCHIVE.name)])).code).to.equal(0);
    expect((await run('nbdinfo', ['--is', 'readonly', node!.uri(PRIMARY.name)])).code).to.equal(2);
  });

  it('maps the whole export through BLOCK_STATUS (nbdinfo --map)', async function () {
    const { stdout } = await runOk('nbdinfo', ['--map', '--json', node!.uri(PRIMARY.name)]);
    const extents = JSON.parse(stdout) as { offset: number; length: number; type: number }[];
    expect(extents.length).to.be.greaterThan(0);
    let next = 0;
    for (const extent of extents) {
      expect(extent.offset, 'extents are contiguous').to.equal(next);
      expect(extent.type & ~3, 'only HOLE and ZERO bits').to.equal(0);
      next += extent.length;
    }
    expect(next, 'the map covers the export exactly').to.equal(PRIMARY.sizeBytes);
  });

  it('works over the unix socket too', async function () {
    const info = await nbdinfoJson(node!.unixUri(ARCHIVE.name));
    expect(info.exports[0]['export-name']).to.equal(ARCHIVE.name);
    expect(info.exports[0]['export-size']).to.equal(ARCHIVE.sizeBytes);
    expect(info.exports[0].is_read_only).to.equal(true);
    const { stdout } = await runOk('nbdinfo', ['--size', node!.unixUri(PRIMARY.name)]);
    expect(Number(stdout.trim())).to.equal(PRIMARY.sizeBytes);
  });

  it('works over IPv6 loopback', async function () {
    const node6 = await startNode([PRIMARY], { host: '::1' });
    try {
      const info = await nbdinfoJson(node6.uri(PRIMARY.name));
      expect(node6.uri(PRIMARY.name)).to.match(/^nbd:\/\/\[::1\]:\d+\//);
      expect(info.exports[0]['export-size']).to.equal(PRIMARY.sizeBytes);
    } finally {
      await shutDown(node6);
    }
  });

  it('serves the first export for the empty export name', async function () {
    const { stdout } = await runOk('nbdinfo', ['--size', node!.uri('')]);
    expect(Number(stdout.trim())).to.equal(PRIMARY.sizeBytes);
  });

  it('fails with a non-zero exit for an unknown export name, and keeps serving', async function () {
    const result = await run('nbdinfo', ['--size', node!.uri('no-such-export')]);
    expect(result.code).to.not.equal(0);
    expect(result.stderr).to.match(/no export named 'no-such-export'|server replied with error/);
    expect(result.stdout).to.not.match(/^\d+$/m);
    const { stdout } = await runOk('nbdinfo', ['--size', node!.uri(ARCHIVE.name)]);
    expect(Number(stdout.trim())).to.equal(ARCHIVE.sizeBytes);
  });
});
