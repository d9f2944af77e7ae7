// Proves an accepted socket re-homed to read into the caller's buffer delivers every byte in order,
// in the buffers the caller hands out (switching between reads), writes as before, and still
// counts for its server: close() waits until it is gone.
import net from 'node:net';
import { expect } from 'chai';
import { readingInto } from '../../../src/nbd/socket-reader.js';

describe('readingInto', () => {
  it('reads every byte into the buffers it is given, switching buffers between reads, and keeps the server waiting for it', async () => {
    const small = Buffer.alloc(7);
    const large = Buffer.alloc(1 << 16);
    let current = small;
    const received: Buffer[] = [];
    const buffersUsed = new Set<ArrayBufferLike>();
    let serverSide: net.Socket | null = null;
    const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
      serverSide = readingInto(
        accepted,
        () => current,
        (bytes) => {
          buffersUsed.add(bytes.buffer);
          received.push(Buffer.from(bytes)); // the next read overwrites it
          if (received.length === 2) current = large;
        },
      );
      serverSide?.write('greeting');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const greeting = await new Promise<Buffer>((resolve) => client.once('data', resolve));
    expect(greeting.toString()).to.equal('greeting');
    const sent = Buffer.from(Array.from({ length: 300_000 }, (_, index) => (index * 31) & 0xff));
    for (let at = 0; at < sent.length; at += 50_000) {
      client.write(sent.subarray(at, at + 50_000));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const deadline = Date.now() + 5000;
    while (Buffer.concat(received).length < sent.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(Buffer.concat(received).equals(sent)).to.equal(true);
    expect([...buffersUsed]).to.have.members([small.buffer, large.buffer]);
    let closed = false;
    const closing = new Promise<void>((resolve) => server.close(() => resolve())).then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed, 'server.close() waits for the re-homed connection').to.equal(false);
    client.destroy();
    (serverSide as net.Socket | null)?.destroy();
    await closing;
  });
});
