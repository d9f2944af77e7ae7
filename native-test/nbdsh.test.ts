// Proves ftvm answers exact requests correctly (edges, bad requests, errnos) via nbdsh, and survives garbage on a raw socket.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { expect } from 'chai';
import { arrayDataBytes } from '../src/storage/layout.js';
import { ArrayReader } from '../test/support/array-reader.js';
import { startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { memberSizes } from './lib/array.js';
import { shutDown, waitForLog } from './lib/node.js';
import { NBDSH_ENV, run } from './lib/run.js';

const VOLUME = { name: 'vol0', sizeBytes: 64 << 20 };
const READ_ONLY = { name: 'archive', sizeBytes: 16 << 20, readOnly: true };
const MiB = 1 << 20;

/**
 * Python run before every script: attempt() turns an nbd.Error into a value, emit() prints the result
 * on one line that the test parses. A server-side refusal reads "command failed"; libnbd's own
 * client-side checks say something else, so tests can tell who refused.
 */
const PRELUDE = `
import json, sys
def attempt(f):
    try:
        f()
        return None
    except nbd.Error as e:
        return {"errno": e.errno, "message": e.string}
def emit(**fields):
    print("RESULT " + json.dumps(fields), flush=True)
`;

function parseResult(stdout: string): Record<string, unknown> {
  const line = stdout.split('\n').find((candidate) => candidate.startsWith('RESULT '));
  if (!line) throw new Error(`nbdsh printed no RESULT line:\n${stdout}`);
  return JSON.parse(line.slice('RESULT '.length)) as Record<string, unknown>;
}

/** Runs a Python script in nbdsh connected to `uri`; returns what the script emit()ted. */
async function nbdsh(uri: string, script: string, options: { baseAllocation?: boolean } = {}): Promise<Record<string, unknown>> {
  const args = [...(options.baseAllocation ? ['--base-allocation'] : []), '-u', uri, '-c', PRELUDE, '-c', script];
  const result = await run('nbdsh', args, { env: NBDSH_ENV, timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`nbdsh exited with ${result.code ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  return parseResult(result.stdout);
}

function expectServerRefusal(outcome: unknown, errno: string, what: string): void {
  expect(outcome, `${what} should fail`).to.not.equal(null);
  const { errno: got, message } = outcome as { errno: string; message: string };
  expect(got, `${what}: ${message}`).to.equal(errno);
  expect(message, `${what} should be refused by the server, not by libnbd`).to.include('command failed');
}

describe('native: nbdsh exact requests', function () {
  let node: FtvmNode | undefined;

  before(async function () {
    requireTools(this, 'nbdsh');
    node = await startNode([VOLUME, READ_ONLY], { logLevel: 'debug' });
    const probe = await run('nbdsh', ['-c', 'import nbd'], { env: NBDSH_ENV });
    if (probe.code !== 0) throw new Error(`nbdsh cannot import the python3-libnbd module:\n${probe.stderr}`);
  });

  after(async function () {
    await shutDown(node);
  });

  /** Bytes of a volume as they are on the RAID member files, read without the server. */
  const stored = async (volume: string, offset: number, length: number): Promise<Buffer> =>
    (await ArrayReader.fromConfig(node!.configFile)).readVolume(volume, offset, length);
  const uri = (): string => node!.uri(VOLUME.name);

  it('reads and writes the last byte of the export', async function () {
    const result = await nbdsh(
      uri(),
      `
size = h.get_size()
h.pwrite(b"\\x5a", size - 1)
emit(size=size, last=h.pread(1, size - 1).hex(), tail=h.pread(4096, size - 4096)[-2:].hex())
`,
    );
    expect(result.size).to.equal(VOLUME.sizeBytes);
    expect(result.last).to.equal('5a');
    expect((result.tail as string).slice(2)).to.equal('5a');
    expect((await stored(VOLUME.name, VOLUME.sizeBytes - 1, 1)).toString('hex')).to.equal('5a');
  });

  it('refuses reads past the end with EINVAL and writes past the end with ENOSPC, changing nothing', async function () {
    // What a write past the end would hit now: the array bytes right after the volume's allocation (the
    // next volume, or the end of the array), not a backing file that could grow.
    const reader = await ArrayReader.fromConfig(node!.configFile);
    const allocation = await reader.allocation(VOLUME.name);
    const allocationEnd = allocation.arrayOffset + allocation.sizeBytes;
    const followingBytes = Math.min(2 * MiB, arrayDataBytes(reader.geometry) - allocationEnd);
    const followingBefore = await reader.readArray(allocationEnd, followingBytes);
    const sizesBefore = await memberSizes(node!.configFile);
    const result = await nbdsh(
      uri(),
      `
h.set_strict_mode(0)
size = h.get_size()
h.pwrite(b"\\x11", size - 1)
emit(readPast=attempt(lambda: h.pread(2, size - 1)),
     readAtEnd=attempt(lambda: h.pread(1, size)),
     readHugeOffset=attempt(lambda: h.pread(1, (1 << 64) - 1)),
     writePast=attempt(lambda: h.pwrite(b"ab", size - 1)),
     writeBeyond=attempt(lambda: h.pwrite(b"x" * 4096, size + (1 << 20))),
     writeWrapping=attempt(lambda: h.pwrite(b"x" * 4096, (1 << 64) - 2048)),
     zeroPast=attempt(lambda: h.zero(8192, size - 4096)),
     trimPast=attempt(lambda: h.trim(8192, size - 4096)),
     cachePast=attempt(lambda: h.cache(8192, size - 4096)),
     last=h.pread(1, size - 1).hex())
`,
    );
    expectServerRefusal(result.readPast, 'EINVAL', 'read across the end');
    expectServerRefusal(result.readAtEnd, 'EINVAL', 'read at the end');
    expectServerRefusal(result.readHugeOffset, 'EINVAL', 'read at offset 2^64-1');
    expectServerRefusal(result.writePast, 'ENOSPC', 'write across the end');
    expectServerRefusal(result.writeBeyond, 'ENOSPC', 'write beyond the end');
    expectServerRefusal(result.writeWrapping, 'ENOSPC', 'write whose range wraps 2^64');
    expectServerRefusal(result.zeroPast, 'ENOSPC', 'write zeroes across the end');
    expectServerRefusal(result.trimPast, 'EINVAL', 'trim across the end');
    expectServerRefusal(result.cachePast, 'EINVAL', 'cache across the end');
    expect(result.last, 'a refused write leaves the last byte alone').to.equal('11');
    expect(await memberSizes(node!.configFile), 'the member files did not grow').to.deep.equal(sizesBefore);
    expect((await reader.allocation(VOLUME.name)).sizeBytes, 'the allocation did not grow').to.equal(VOLUME.sizeBytes);
    const followingAfter = await reader.readArray(allocationEnd, followingBytes);
    expect(followingAfter.equals(followingBefore), 'nothing written after the end of the allocation').to.equal(true);
  });

  it('refuses zero-length requests with EINVAL when libnbd is told to send them', async function () {
    const result = await nbdsh(
      uri(),
      `
strict = attempt(lambda: h.pread(0, 0))
h.set_strict_mode(0)
emit(clientSide=strict,
     read=attempt(lambda: h.pread(0, 0)),
     write=attempt(lambda: h.pwrite(b"", 0)),
     trim=attempt(lambda: h.trim(0, 0)),
     zero=attempt(lambda: h.zero(0, 0)),
     cache=attempt(lambda: h.cache(0, 0)),
     after=attempt(lambda: h.pread(4, 0)))
`,
    );
    const clientSide = result.clientSide as { errno: string; message: string };
    expect(clientSide.errno, 'libnbd refuses it itself in strict mode').to.equal('EINVAL');
    expect(clientSide.message).to.not.include('command failed');
    for (const command of ['read', 'write', 'trim', 'zero', 'cache']) expectServerRefusal(result[command], 'EINVAL', `zero-length ${command}`);
    expect(result.after, 'the connection still works').to.equal(null);
  });

  it('round-trips unaligned offsets and lengths', async function () {
    const result = await nbdsh(
      uri(),
      `
h.pwrite(bytes(20000), 0)
h.pwrite(b"\\x01", 4097)
h.pwrite(b"\\x02\\x03\\x04", 8191)
data = bytes(i % 251 for i in range(5000))
h.pwrite(data, 12345)
emit(around4097=h.pread(3, 4096).hex(), across8192=h.pread(5, 8190).hex(), odd=h.pread(5000, 12345) == data,
     before=h.pread(1, 12344).hex(), after=h.pread(1, 12345 + 5000).hex())
`,
    );
    expect(result.around4097).to.equal('000100');
    expect(result.across8192).to.equal('0002030400');
    expect(result.odd).to.equal(true);
    expect([result.before, result.after]).to.deep.equal(['00', '00']);
    expect((await stored(VOLUME.name, 4096, 3)).toString('hex')).to.equal('000100');
    expect((await stored(VOLUME.name, 8190, 5)).toString('hex')).to.equal('0002030400');
    const odd = await stored(VOLUME.name, 12345, 5000);
    expect(odd.every((byte, i) => byte === i % 251)).to.equal(true);
  });

  it('accepts FUA on write, zero and trim, and flush and cache', async function () {
    const result = await nbdsh(
      uri(),
      `
base = 2 << 20
emit(canFua=h.can_fua(),
     write=attempt(lambda: h.pwrite(b"F" * 8192, base, nbd.CMD_FLAG_FUA)),
     zero=attempt(lambda: h.zero(4096, base + 4096, nbd.CMD_FLAG_FUA)),
     trim=attempt(lambda: h.trim(4096, base + 8192, nbd.CMD_FLAG_FUA)),
     flush=attempt(lambda: h.flush()),
     cache=attempt(lambda: h.cache(1 << 20, base)),
     written=h.pread(4096, base) == b"F" * 4096,
     zeroed=h.pread(4096, base + 4096) == bytes(4096))
`,
    );
    expect(result).to.deep.equal({ canFua: true, write: null, zero: null, trim: null, flush: null, cache: null, written: true, zeroed: true });
    expect((await stored(VOLUME.name, 2 * MiB, 4)).toString()).to.equal('FFFF');
  });

  it('refuses WRITE_ZEROES with FAST_ZERO as ENOTSUP without touching data; plain and NO_HOLE zero work', async function () {
    const result = await nbdsh(
      uri(),
      `
base = 3 << 20
h.pwrite(b"\\xee" * 16384, base)
fast = attempt(lambda: h.zero(8192, base, nbd.CMD_FLAG_FAST_ZERO))
kept = h.pread(8192, base) == b"\\xee" * 8192
emit(canFastZero=h.can_fast_zero(), fast=fast, kept=kept,
     plain=attempt(lambda: h.zero(8192, base)),
     noHole=attempt(lambda: h.zero(8192, base + 8192, nbd.CMD_FLAG_NO_HOLE)),
     zeroed=h.pread(16384, base) == bytes(16384))
`,
    );
    expect(result.canFastZero).to.equal(true);
    expectServerRefusal(result.fast, 'ENOTSUP', 'fast zero');
    expect(result.kept, 'a refused fast zero changed nothing').to.equal(true);
    expect([result.plain, result.noHole, result.zeroed]).to.deep.equal([null, null, true]);
  });

  it('answers BLOCK_STATUS for base:allocation with extents covering the range', async function () {
    const result = await nbdsh(
      uri(),
      `
h.set_strict_mode(0)
full, one = [], []
def collect(into):
    def callback(meta, offset, entries, error):
        into.append({"meta": meta, "offset": offset, "entries": list(entries)})
        return 0
    return callback
h.block_status(1 << 20, 4096, collect(full))
h.block_status(1 << 20, 4096, collect(one), nbd.CMD_FLAG_REQ_ONE)
emit(canMeta=h.can_meta_context("base:allocation"), full=full, one=one,
     past=attempt(lambda: h.block_status(8192, h.get_size() - 4096, collect([]))))
`,
      { baseAllocation: true },
    );
    expect(result.canMeta).to.equal(true);
    type Reply = { meta: string; offset: number; entries: number[] };
    const full = result.full as Reply[];
    expect(full).to.have.length(1);
    expect(full[0].meta).to.equal('base:allocation');
    expect(full[0].offset).to.equal(4096);
    const pairs = full[0].entries;
    expect(pairs.length % 2).to.equal(0);
    expect(pairs.length).to.be.greaterThan(0);
    let covered = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      expect(pairs[i], 'extent length').to.be.greaterThan(0);
      expect(pairs[i + 1] & ~3, 'only HOLE and ZERO flags').to.equal(0);
      covered += pairs[i];
    }
    expect(covered).to.be.at.least(1 << 20);
    const one = result.one as Reply[];
    expect(one).to.have.length(1);
    expect(one[0].entries).to.have.length(2);
    expect(one[0].entries[0]).to.be.within(1, 1 << 20);
    expectServerRefusal(result.past, 'EINVAL', 'block status across the end');
  });

  it('refuses BLOCK_STATUS when no meta context was negotiated', async function () {
    const result = await nbdsh(
      uri(),
      `
h.set_strict_mode(0)
emit(canMeta=h.can_meta_context("base:allocation"), status=attempt(lambda: h.block_status(4096, 0, lambda *args: 0)), after=attempt(lambda: h.pread(1, 0)))
`,
    );
    expect(result.canMeta).to.equal(false);
    expectServerRefusal(result.status, 'EINVAL', 'block status without a context');
    expect(result.after).to.equal(null);
  });

  it('finishes pending writes on disconnect, fails requests after it client-side, and serves the next connection', async function () {
    const first = await nbdsh(
      uri(),
      `
buffers = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * (1 << 20)) for i in range(8)]
for i, buffer in enumerate(buffers):
    h.aio_pwrite(buffer, (4 + i) << 20)
pending = h.aio_in_flight()
h.shutdown()
emit(pending=pending, after=attempt(lambda: h.pread(1, 0)))
`,
    );
    expect(first.pending as number, 'writes were still queued at disconnect').to.be.greaterThan(0);
    const after = first.after as { errno: string; message: string };
    expect(after.message).to.not.include('command failed');
    expect(after.message).to.match(/invalid state|not connected|CLOSED/i);
    const second = await nbdsh(uri(), `emit(blocks=[h.pread(1 << 20, (4 + i) << 20) == bytearray([i + 1]) * (1 << 20) for i in range(8)])`);
    expect(second.blocks).to.deep.equal([true, true, true, true, true, true, true, true]);
  });

  it('survives a client that dies with 32 MiB reads in flight', async function () {
    const dying = await nbdsh(
      uri(),
      `
import os
buffers = [nbd.Buffer(32 << 20) for i in range(8)]
for i, buffer in enumerate(buffers):
    h.aio_pread(buffer, (i % 2) * (32 << 20))
for _ in range(3):
    h.poll(-1)
emit(inFlight=h.aio_in_flight())
os._exit(0)
`,
    );
    expect(dying.inFlight as number, 'reads still in flight when the client died').to.be.greaterThan(0);
    const next = await nbdsh(uri(), `emit(read=attempt(lambda: h.pread(4096, 0)))`);
    expect(next.read).to.equal(null);
    expect(node!.child.exitCode, 'the server is still running').to.equal(null);
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM; reads, flush and cache work', async function () {
    const result = await nbdsh(
      node!.uri(READ_ONLY.name),
      `
h.set_strict_mode(0)
emit(readOnly=h.is_read_only(),
     write=attempt(lambda: h.pwrite(b"x" * 4096, 0)),
     trim=attempt(lambda: h.trim(4096, 0)),
     zero=attempt(lambda: h.zero(4096, 0)),
     read=attempt(lambda: h.pread(4096, 0)),
     flush=attempt(lambda: h.flush()),
     cache=attempt(lambda: h.cache(4096, 0)),
     first=h.pread(4096, 0) == bytes(4096))
`,
    );
    expect(result.readOnly).to.equal(true);
    for (const command of ['write', 'trim', 'zero']) expectServerRefusal(result[command], 'EPERM', `${command} on a read-only export`);
    expect([result.read, result.flush, result.cache, result.first]).to.deep.equal([null, null, null, true]);
    const first = await stored(READ_ONLY.name, 0, 4096);
    expect(first.every((byte) => byte === 0), 'the read-only volume is unchanged on the member files').to.equal(true);
  });

  it('refuses unknown and misplaced command flags with EINVAL; DF on a read is honoured', async function () {
    const result = await nbdsh(
      uri(),
      `
h.set_strict_mode(0)
h.pwrite(b"\\x21" * 4096, 5 << 20)
chunks = []
def chunk(data, offset, status, error):
    chunks.append({"offset": offset, "length": len(data), "status": status})
    return 0
emit(unknownFlag=attempt(lambda: h.pread(1, 5 << 20, 0x100)),
     dfOnWrite=attempt(lambda: h.pwrite(b"\\x99", 5 << 20, nbd.CMD_FLAG_DF)),
     reqOneOnWrite=attempt(lambda: h.pwrite(b"\\x99", 5 << 20, nbd.CMD_FLAG_REQ_ONE)),
     df=attempt(lambda: h.pread_structured(4096, 5 << 20, chunk, nbd.CMD_FLAG_DF)),
     chunks=chunks,
     unchanged=h.pread(4096, 5 << 20) == b"\\x21" * 4096)
`,
    );
    expectServerRefusal(result.unknownFlag, 'EINVAL', 'read with flag 0x100');
    expectServerRefusal(result.dfOnWrite, 'EINVAL', 'write with DF');
    expectServerRefusal(result.reqOneOnWrite, 'EINVAL', 'write with REQ_ONE');
    expect(result.df).to.equal(null);
    expect(result.chunks, 'DF: the data comes in one chunk').to.deep.equal([{ offset: 5 * MiB, length: 4096, status: 1 }]);
    expect(result.unchanged, 'refused writes wrote nothing').to.equal(true);
  });

  it('completes ten pipelined 32 MiB writes and reads on one connection, more than the in-flight byte cap', async function () {
    const result = await nbdsh(
      uri(),
      `
pattern = nbd.Buffer.from_bytearray(bytearray(b"\\x6b") * (32 << 20))
writes = [h.aio_pwrite(pattern, (i % 2) * (32 << 20)) for i in range(10)]
peak = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
writeErrors = [attempt(lambda: h.aio_command_completed(cookie)) for cookie in writes]
buffers = [nbd.Buffer(32 << 20) for i in range(10)]
reads = [h.aio_pread(buffers[i], (i % 2) * (32 << 20)) for i in range(10)]
while h.aio_in_flight() > 0:
    h.poll(-1)
readErrors = [attempt(lambda: h.aio_command_completed(cookie)) for cookie in reads]
emit(peak=peak, writeErrors=writeErrors, readErrors=readErrors,
     readsMatch=[buffer.to_bytearray() == pattern.to_bytearray() for buffer in buffers])
`,
    );
    expect(result.peak as number, 'requests queued at once').to.be.greaterThan(8);
    expect(result.writeErrors).to.deep.equal(Array(10).fill(null));
    expect(result.readErrors).to.deep.equal(Array(10).fill(null));
    expect(result.readsMatch).to.deep.equal(Array(10).fill(true));
  });

  it('refuses a 33 MiB write with EINVAL, discards its payload, and the same connection keeps working', async function () {
    const result = await nbdsh(
      uri(),
      `
h.set_strict_mode(0)
exact = attempt(lambda: h.pwrite(b"\\x77" * (32 << 20), 32 << 20))
exactRead = attempt(lambda: h.pread(32 << 20, 32 << 20))
h.pwrite(b"\\x44" * 4096, 1 << 20)
big = attempt(lambda: h.pwrite(b"\\x55" * (33 << 20), 0))
bigRead = attempt(lambda: h.pread(33 << 20, 0))
h.pwrite(b"\\x66" * 4096, 8 << 20)
emit(exact=exact, exactRead=exactRead, big=big, bigRead=bigRead,
     untouched=h.pread(4096, 1 << 20) == b"\\x44" * 4096,
     after=h.pread(4096, 8 << 20) == b"\\x66" * 4096,
     exactStored=h.pread(4096, (64 << 20) - 4096) == b"\\x77" * 4096)
`,
    );
    expect([result.exact, result.exactRead], 'exactly 32 MiB is allowed').to.deep.equal([null, null]);
    expectServerRefusal(result.big, 'EINVAL', '33 MiB write');
    expectServerRefusal(result.bigRead, 'EINVAL', '33 MiB read');
    expect(result.untouched, 'no part of the refused payload was written').to.equal(true);
    expect(result.after, 'a write after the refused one works on the same connection').to.equal(true);
    expect(result.exactStored).to.equal(true);
    expect(node!.log()).to.include(`${33 * MiB} bytes exceeds the ${32 * MiB}-byte limit`);
  });
});

describe('native: raw sockets with garbage, next to a live nbdsh connection', function () {
  let node: FtvmNode | undefined;

  before(async function () {
    requireTools(this, 'nbdsh');
    node = await startNode([VOLUME]);
  });

  after(async function () {
    await shutDown(node);
  });

  it('closes a connection that sends garbage instead of the handshake', async function () {
    await withSurvivor(node!.uri(VOLUME.name), async () => {
      // An HTTP request is read as client flags "GET " plus an option header "/ HTTP/1": either is reason enough.
      for (const [garbage, reason] of [
        [Buffer.from('GET / HTTP/1.1\r\nHost: ftvm\r\n\r\n'), /closing connection: (unknown client flags 0x47455420|bad option magic 0x2f20485454502f31)/],
        [u32(0xffffffff), /closing connection: unknown client flags 0xffffffff/],
        [Buffer.concat([u32(1), Buffer.from('SSH-2.0-OpenSSH_9.2 not nbd at all\r\n')]), /closing connection: bad option magic 0x5353482d322e302d/],
      ] as const) {
        const client = await RawClient.connect(node!.port);
        const greeting = await client.read(18);
        expect(greeting.subarray(0, 16).toString('latin1')).to.equal('NBDMAGICIHAVEOPT');
        client.write(garbage);
        expect(await client.closedWithin(5000), `closed after ${JSON.stringify(garbage.toString('latin1'))}`).to.equal(true);
        expect(await waitForLog(node!, reason, 5000), node!.log()).to.equal(true);
      }
    });
  });

  it('closes a connection on a bad request magic after a valid handshake, after answering its good requests', async function () {
    const reader = await ArrayReader.fromConfig(node!.configFile);
    await withSurvivor(node!.uri(VOLUME.name), async () => {
      const client = await RawClient.connect(node!.port);
      await client.read(18);
      // Client flags FIXED_NEWSTYLE | NO_ZEROES, then the old-style EXPORT_NAME option: simple replies only.
      client.write(Buffer.concat([u32(3), Buffer.from('IHAVEOPT'), u32(1), u32(VOLUME.name.length), Buffer.from(VOLUME.name)]));
      const exportInfo = await client.read(10);
      expect(Number(exportInfo.readBigUInt64BE(0))).to.equal(VOLUME.sizeBytes);

      client.write(requestHeader(REQUEST_MAGIC, 0, 0x0102, 40 * MiB, 16));
      const readReply = await client.read(16 + 16);
      expect(readReply.readUInt32BE(0)).to.equal(SIMPLE_REPLY_MAGIC);
      expect(readReply.readUInt32BE(4), 'READ error field').to.equal(0);
      expect(readReply.readBigUInt64BE(8)).to.equal(0x0102n);
      expect(readReply.subarray(16).equals(await reader.readVolume(VOLUME.name, 40 * MiB, 16)), 'READ returns the stored bytes').to.equal(true);

      client.write(requestHeader(REQUEST_MAGIC, 42, 0x0103, 0, 512));
      const unknownReply = await client.read(16);
      expect(unknownReply.readUInt32BE(4), 'unknown command answers EINVAL').to.equal(22);
      expect(unknownReply.readBigUInt64BE(8)).to.equal(0x0103n);

      client.write(requestHeader(0xdeadbeef, 0, 0x0104, 0, 512));
      expect(await client.closedWithin(5000), 'closed after a bad request magic').to.equal(true);
      // Greeting, export info, the READ reply with its data, the EINVAL reply; nothing for the bad request.
      expect(client.received(), 'bytes received in all').to.equal(18 + 10 + 16 + 16 + 16);
      expect(await waitForLog(node!, 'closing connection: bad request magic 0xdeadbeef', 5000), node!.log()).to.equal(true);
    });
  });
});

const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

function requestHeader(magic: number, type: number, handle: number, offset: number, length: number): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(magic, 0);
  header.writeUInt16BE(0, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(BigInt(handle), 8);
  header.writeBigUInt64BE(BigInt(offset), 16);
  header.writeUInt32BE(length, 24);
  return header;
}

/** A bare TCP client that buffers everything it receives and notices when the server hangs up. */
class RawClient {
  private buffered = Buffer.alloc(0);
  private total = 0;
  private closed = false;
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.total += chunk.length;
      this.wake?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Bytes received so far in total. */
  received(): number {
    return this.total;
  }

  async read(length: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered.length < length) {
      if (this.closed) throw new Error(`connection closed with ${this.buffered.length} of ${length} bytes`);
      if (!(await this.waitForEvent(deadline))) throw new Error(`timed out waiting for ${length} bytes`);
    }
    const data = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return data;
  }

  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) if (!(await this.waitForEvent(deadline))) break;
    if (!this.closed) this.socket.destroy();
    return this.closed;
  }

  private waitForEvent(deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve(true);
      };
    });
  }
}

/**
 * Opens an nbdsh connection that writes a block, runs `attack` while that connection stays open, then
 * has the same connection read the block back, and a new connection too: both must still be served.
 */
async function withSurvivor(uri: string, attack: () => Promise<void>): Promise<void> {
  const script = `
h.pwrite(b"\\x3c" * 4096, 48 << 20)
print("READY", flush=True)
sys.stdin.readline()
emit(stillServed=h.pread(4096, 48 << 20) == b"\\x3c" * 4096)
`;
  const child = spawn('nbdsh', ['-u', uri, '-c', PRELUDE, '-c', script], { env: NBDSH_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nbdsh never became ready:\n${stdout}\n${stderr}`)), 20_000);
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes('READY')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`nbdsh exited before it was ready:\n${stdout}\n${stderr}`));
      });
    });
    await attack();
    child.stdin.end('\n');
    const code = await exited;
    expect(code, stderr).to.equal(0);
    expect(parseResult(stdout).stillServed, 'the open nbdsh connection was still served').to.equal(true);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  const fresh = await nbdsh(uri, 'emit(block=h.pread(4096, 48 << 20) == b"\\x3c" * 4096)');
  expect(fresh.block, 'a new connection is served too').to.equal(true);
}
