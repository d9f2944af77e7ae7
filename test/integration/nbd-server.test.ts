// Proves the server's transmission rules over a real loopback socket: out-of-order replies, DISC
// draining in-flight work, every refusal's errno, and that a bad client only ever closes itself.
import { expect } from 'chai';
import { Exports, NbdServer } from '../../src/nbd/index.js';
import { silentLogger } from '../../src/observe/index.js';
import { VolumeError, type PinnedRange } from '../../src/volume/index.js';
import { freePort } from '../support/ftvm-process.js';
import { RamVolume } from '../support/ram-volume.js';
import { RawClient } from '../support/raw-client.js';

const READ = 0, WRITE = 1, DISC = 2, FLUSH = 3, TRIM = 4, CACHE = 5, ZERO = 6, STATUS = 7;
const EPERM = 1, EIO = 5, EINVAL = 22, ENOSPC = 28, ENOTSUP = 95;
const SIZE = 1 << 20;

describe('NBD server over loopback', () => {
  let server: NbdServer;
  let volume: RamVolume;
  let port: number;
  let exports: Exports;
  const clients: RawClient[] = [];

  async function client(): Promise<RawClient> {
    const created = await RawClient.connect({ port });
    clients.push(created);
    return created;
  }

  beforeEach(async () => {
    volume = new RamVolume(SIZE);
    exports = new Exports();
    exports.add({ name: 'vol0', description: '', volume, readOnly: false });
    exports.add({ name: 'ro', description: '', volume: new RamVolume(8192), readOnly: true });
    server = new NbdServer(exports, silentLogger());
    port = await freePort();
    await server.listen({ host: '127.0.0.1', port });
  });

  afterEach(async () => {
    volume.release();
    for (const created of clients.splice(0)) created.close();
    await server.close();
  });

  it('writes and reads back through simple replies, passing FUA down', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    const data = Buffer.alloc(4096, 0x5a);
    nbd.request(WRITE, { handle: 1n, offset: 8192, payload: data, flags: 1 });
    expect(await nbd.readReply()).to.include({ handle: 1n, error: 0 });
    nbd.request(READ, { handle: 2n, offset: 8192, length: 4096 });
    const reply = await nbd.readReply(4096);
    expect(reply.data.equals(data)).to.equal(true);
    expect(volume.calls.find((call) => call.operation === 'write')).to.include({ offset: 8192, length: 4096, fua: true });
  });

  it('answers in completion order, not request order', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    volume.hold('read');
    nbd.request(READ, { handle: 10n, length: 512 });
    nbd.request(FLUSH, { handle: 11n });
    expect((await nbd.readReply()).handle).to.equal(11n);
    volume.release();
    expect((await nbd.readReply(512)).handle).to.equal(10n);
  });

  it('keeps the connection open after DISC until in-flight requests are answered', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    volume.hold('write');
    nbd.request(WRITE, { handle: 7n, payload: Buffer.alloc(512, 1) });
    nbd.request(DISC, { handle: 8n });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(volume.waitingCount).to.equal(1);
    volume.release();
    expect(await nbd.readReply()).to.include({ handle: 7n, error: 0 });
    expect((await nbd.waitClosed()).length).to.equal(0);
    expect(volume.bytes[0]).to.equal(1);
  });

  it('refuses bad requests with the spec errno and keeps the connection', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    const cases: Array<[string, () => void, number]> = [
      ['read past the end', () => nbd.request(READ, { offset: SIZE - 1, length: 2 }), EINVAL],
      ['write past the end', () => nbd.request(WRITE, { offset: SIZE, payload: Buffer.alloc(1) }), ENOSPC],
      ['zero past the end', () => nbd.request(ZERO, { offset: SIZE - 1, length: 2 }), ENOSPC],
      ['trim past the end', () => nbd.request(TRIM, { offset: SIZE, length: 1 }), EINVAL],
      ['cache past the end', () => nbd.request(CACHE, { offset: 2 ** 60, length: 1 }), EINVAL],
      ['zero-length read', () => nbd.request(READ, { length: 0 }), EINVAL],
      ['zero-length write', () => nbd.request(WRITE, { length: 0 }), EINVAL],
      ['unknown command', () => nbd.request(42, { length: 1 }), EINVAL],
      ['unknown flag', () => nbd.request(FLUSH, { flags: 0x40 }), EINVAL],
      ['NO_HOLE on a write', () => nbd.request(WRITE, { flags: 2, payload: Buffer.alloc(1) }), EINVAL],
      ['fast zero', () => nbd.request(ZERO, { flags: 16, length: 4096 }), ENOTSUP],
      ['block status without a context', () => nbd.request(STATUS, { length: 4096 }), EINVAL],
      ['read over 32 MiB', () => nbd.request(READ, { length: 33 << 20 }), EINVAL],
    ];
    for (const [what, send, errno] of cases) {
      send();
      expect((await nbd.readReply()).error, what).to.equal(errno);
    }
    nbd.request(READ, { handle: 99n, offset: SIZE - 1, length: 1 });
    expect(await nbd.readReply(1)).to.include({ handle: 99n, error: 0 });
    expect(volume.calls.filter((call) => call.operation !== 'read')).to.deep.equal([]);
  });

  it('answers an oversized write with EINVAL after discarding its payload, and goes on', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    nbd.request(WRITE, { handle: 1n, payload: Buffer.alloc((32 << 20) + 1, 3) });
    expect(await nbd.readReply()).to.include({ handle: 1n, error: EINVAL });
    nbd.request(WRITE, { handle: 2n, payload: Buffer.alloc(16, 4) });
    expect(await nbd.readReply()).to.include({ handle: 2n, error: 0 });
    expect(volume.bytes.subarray(0, 17)).to.deep.equal(Buffer.concat([Buffer.alloc(16, 4), Buffer.alloc(1)]));
  });

  it('gives every pooled payload and reply buffer back: written, refused, failed, and large writes split across many reads', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    const big = Buffer.from(Array.from({ length: 600_000 }, (_, index) => (index * 7) & 0xff));
    for (let handle = 1n; handle <= 8n; handle++) nbd.request(WRITE, { handle, offset: Number(handle) * 4096, payload: big.subarray(0, 4096 * Number(handle) + 3) });
    nbd.request(WRITE, { handle: 9n, offset: 0, payload: big });
    nbd.request(WRITE, { handle: 10n, offset: SIZE, payload: Buffer.alloc(10) }); // refused: past the end
    for (let i = 0; i < 10; i++) await nbd.readReply();
    expect(volume.bytes.subarray(0, big.length).equals(big)).to.equal(true);
    volume.failWith = new VolumeError('EIO', 'member gone');
    nbd.request(WRITE, { handle: 11n, payload: Buffer.alloc(4096, 1) });
    nbd.request(READ, { handle: 12n, length: 4096 });
    expect((await nbd.readReply()).error).to.equal(EIO);
    expect((await nbd.readReply()).error).to.equal(EIO);
    volume.failWith = null;
    nbd.request(READ, { handle: 13n, length: big.length });
    expect((await nbd.readReply(big.length)).data.equals(big)).to.equal(true);
    // The failed write's buffer is forgotten, not reused: it counts as back.
    await until(() => server.buffersOut === 0 && server.bytesInFlight === 0);
  });

  it('answers 2000 pipelined writes, flushes and refusals with reply headers used again, not a buffer per reply', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    const original = Buffer.allocUnsafe;
    let headerAllocations = 0;
    Buffer.allocUnsafe = ((size: number) => {
      if (size === 16) headerAllocations++;
      return original(size);
    }) as typeof Buffer.allocUnsafe;
    try {
      const payload = Buffer.alloc(4096, 3);
      const expected = new Map<bigint, number>();
      for (let handle = 1n; handle <= 2000n; handle++) {
        const kind = Number(handle % 10n);
        if (kind === 0) nbd.request(FLUSH, { handle });
        else if (kind === 1) nbd.request(WRITE, { handle, offset: SIZE, payload: Buffer.alloc(10) });
        else nbd.request(WRITE, { handle, offset: Number(handle % 200n) * 4096, payload });
        expected.set(handle, kind === 1 ? ENOSPC : 0);
      }
      for (let i = 0; i < 2000; i++) {
        const reply = await nbd.readReply();
        expect(reply.error, `reply to ${reply.handle}`).to.equal(expected.get(reply.handle));
        expected.delete(reply.handle);
      }
      expect(expected.size, 'every handle answered once').to.equal(0);
    } finally {
      Buffer.allocUnsafe = original;
    }
    expect(headerAllocations, 'simple reply headers come from the connection\'s ring').to.equal(0);
  });

  it('gives back the share and buffer of a WRITE whose client left in the middle of its payload', async () => {
    const nbd = await client();
    await nbd.attach('vol0');
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(WRITE, 6);
    header.writeUInt32BE(65536, 24);
    nbd.socket.write(Buffer.concat([header, Buffer.alloc(1000)]));
    await until(() => server.bytesInFlight === 65536 && server.buffersOut === 1);
    nbd.close();
    await until(() => server.connectionCount === 0);
    expect(server.bytesInFlight).to.equal(0);
    expect(server.buffersOut).to.equal(0);
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM', async () => {
    const nbd = await client();
    await nbd.attach('ro');
    nbd.request(WRITE, { payload: Buffer.alloc(1) });
    nbd.request(TRIM, { length: 1 });
    nbd.request(ZERO, { length: 1 });
    for (let i = 0; i < 3; i++) expect((await nbd.readReply()).error).to.equal(EPERM);
  });

  it('maps a volume failure to EIO, as a structured error chunk for reads', async () => {
    const nbd = await client();
    await nbd.attach('vol0', { structured: true });
    volume.failWith = new VolumeError('EIO', 'member gone');
    nbd.request(READ, { handle: 5n, length: 512 });
    const reply = await nbd.readReply();
    expect(reply).to.include({ handle: 5n, structured: true, chunkType: 0x8001, flags: 1, error: EIO });
    expect(reply.data.subarray(6).toString()).to.equal('member gone');
    nbd.request(FLUSH, { handle: 6n });
    expect(await nbd.readReply()).to.include({ handle: 6n, error: EIO, structured: false });
  });

  it('sends reads as one OFFSET_DATA chunk with DONE when structured replies are on', async () => {
    const nbd = await client();
    await nbd.attach('vol0', { structured: true });
    volume.bytes.fill(9, 100, 200);
    nbd.request(READ, { handle: 3n, offset: 100, length: 100, flags: 4 });
    const reply = await nbd.readReply();
    expect(reply).to.include({ chunkType: 1, flags: 1, error: 0 });
    expect(reply.data.readBigUInt64BE(0)).to.equal(100n);
    expect(reply.data.subarray(8).equals(Buffer.alloc(100, 9))).to.equal(true);
  });

  it('answers a long read from lent memory, simple and structured, ends every loan once written, and copies short reads', async () => {
    const lending = new LendingVolume(SIZE);
    exports.add({ name: 'lend', description: '', volume: lending, readOnly: false });
    const data = Buffer.from(Array.from({ length: 200_000 }, (_, index) => (index * 13) & 0xff));
    data.copy(lending.bytes, 4096);
    const plain = await client();
    await plain.attach('lend');
    plain.request(READ, { handle: 1n, offset: 4096, length: data.length });
    expect((await plain.readReply(data.length)).data.equals(data)).to.equal(true);
    plain.request(READ, { handle: 2n, offset: 4096, length: 4096 });
    expect((await plain.readReply(4096)).data.equals(data.subarray(0, 4096))).to.equal(true);
    const structured = await client();
    await structured.attach('lend', { structured: true });
    structured.request(READ, { handle: 3n, offset: 4096, length: data.length });
    const reply = await structured.readReply();
    expect(reply).to.include({ chunkType: 1, flags: 1, error: 0 });
    expect(reply.data.readBigUInt64BE(0)).to.equal(4096n);
    expect(reply.data.subarray(8).equals(data)).to.equal(true);
    expect(lending.lent, 'the two long reads were lent, the 4 KiB one copied').to.equal(2);
    await until(() => lending.loansOut === 0);
    // A volume that cannot lend now: the same read is copied.
    lending.refuse = true;
    plain.request(READ, { handle: 4n, offset: 4096, length: data.length });
    expect((await plain.readReply(data.length)).data.equals(data)).to.equal(true);
    expect(lending.lent).to.equal(2);
  });

  it('ends the loans of replies a client never read when its connection closes', async () => {
    const lending = new LendingVolume(SIZE);
    exports.add({ name: 'lend', description: '', volume: lending, readOnly: false });
    const nbd = await client();
    await nbd.attach('lend');
    // More replies than loopback's socket buffers hold, none of them read.
    for (let handle = 1n; handle <= 64n; handle++) nbd.request(READ, { handle, offset: 0, length: 512 * 1024 });
    await until(() => lending.lent > 8 && lending.loansOut > 0);
    nbd.close();
    await until(() => lending.loansOut === 0 && server.bytesInFlight === 0);
  });

  it('answers BLOCK_STATUS for base:allocation, one extent with REQ_ONE', async () => {
    const nbd = await client();
    await nbd.attach('vol0', { structured: true, baseAllocation: true });
    nbd.request(STATUS, { handle: 4n, offset: 0, length: 8192 });
    const all = await nbd.readReply();
    expect(all).to.include({ chunkType: 5, flags: 1 });
    expect(all.data.toString('hex')).to.equal('00000001' + '00001000' + '00000000' + '00001000' + '00000003');
    nbd.request(STATUS, { handle: 5n, offset: 0, length: 8192, flags: 8 });
    expect((await nbd.readReply()).data.toString('hex')).to.equal('00000001' + '00001000' + '00000000');
  });

  it('closes a connection that sends bad request magic; other connections go on', async () => {
    const good = await client();
    await good.attach('vol0');
    const bad = await client();
    await bad.attach('vol0');
    bad.request(READ, { magic: 0x12345678, length: 1 });
    await bad.waitClosed();
    good.request(READ, { handle: 1n, length: 16 });
    expect(await good.readReply(16)).to.include({ handle: 1n, error: 0 });
  });

  for (const [what, bytes] of [
    ['garbage instead of client flags and options', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['unknown client flags', Buffer.from([0, 0, 0, 0x80])],
    ['an option longer than the limit', Buffer.from('0000000349484156454f5054000000070fffffff', 'hex')],
  ] as const) {
    it(`closes the handshake on ${what}`, async () => {
      const nbd = await client();
      await nbd.read(18);
      nbd.socket.write(bytes);
      await nbd.waitClosed();
      const other = await client();
      await other.attach('vol0');
    });
  }

  it('serves a request sent in the same packet as GO, before the GO reply arrived', async () => {
    const nbd = await client();
    await nbd.greet();
    const { infoRequest } = await import('../support/raw-client.js');
    volume.bytes.fill(6, 0, 8);
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(0x49484156454f5054n, 0);
    header.writeUInt32BE(7, 8);
    const data = infoRequest('vol0', []);
    header.writeUInt32BE(data.length, 12);
    const read = Buffer.alloc(28);
    read.writeUInt32BE(0x25609513, 0);
    read.writeBigUInt64BE(77n, 8);
    read.writeUInt32BE(8, 24);
    nbd.socket.write(Buffer.concat([header, data, read]));
    for (let reply = await nbd.readOptionReply(); reply.type !== 1; reply = await nbd.readOptionReply()) expect(reply.type).to.equal(3);
    const answer = await nbd.readReply(8);
    expect(answer).to.include({ handle: 77n, error: 0 });
    expect(answer.data.equals(Buffer.alloc(8, 6))).to.equal(true);
  });

  it('answers an unknown export on GO with ERR_UNKNOWN and lets the client try again', async () => {
    const nbd = await client();
    await nbd.greet();
    const { infoRequest } = await import('../support/raw-client.js');
    const refused = await nbd.option(7, infoRequest('missing', []));
    expect(refused.map((reply) => reply.type)).to.deep.equal([0x80000006]);
    const accepted = await nbd.option(7, infoRequest('vol0', []));
    expect(accepted[accepted.length - 1]?.type).to.equal(1);
  });
});

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Lends its bytes for reads (in three pieces, as pages of a memory volume in scattered frames), counting the loans. */
class LendingVolume extends RamVolume {
  lent = 0;
  loansOut = 0;
  refuse = false;

  pinRead(offset: number, lengthBytes: number): PinnedRange | null {
    if (this.refuse) return null;
    this.lent++;
    this.loansOut++;
    const third = Math.floor(lengthBytes / 3);
    const pieces = [this.bytes.subarray(offset, offset + third), this.bytes.subarray(offset + third, offset + 2 * third), this.bytes.subarray(offset + 2 * third, offset + lengthBytes)];
    let released = false;
    return {
      pieces,
      release: () => {
        if (released) throw new Error('a loan was released twice');
        released = true;
        this.loansOut--;
      },
    };
  }
}
