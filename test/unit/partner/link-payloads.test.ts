// Proves a plain TCP partner link reads into its own buffer and keeps received data in pooled
// segments with one release point each: forwarded writes and reads of 4 KiB and 1 MiB arrive intact
// and every segment comes back to its pool (a handler's request data once it is done, a reply's once
// its requester released it, a pooled reply's once it was written); a forwarded write still waiting
// in its handler while the link closes and more frames arrive behind it keeps its bytes.
import net from 'node:net';
import { expect } from 'chai';
import { silentLogger } from '../../../src/observe/index.js';
import {
  commandComplete,
  connectPartner,
  IoOp,
  MessageType,
  PartnerListener,
  Status,
  type Message,
  type PartnerLink,
  type RequestHandler,
} from '../../../src/partner/index.js';
import { ForwardedVolume } from '../../../src/cluster/forwarded-volume.js';
import { testContext } from '../../support/partner-security.js';

const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const A = { clusterId: CLUSTER, nodeId: 1, epoch: 5 };
const B = { clusterId: CLUSTER, nodeId: 2, epoch: 5 };
const VOLUME = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

function pattern(length: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  for (let index = 0; index < length; index++) data[index] = (index * 13 + seed * 101) & 0xff;
  return data;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('partner link payload segments', function () {
  this.timeout(20_000);
  const logger = silentLogger();
  let listener: PartnerListener;
  let served: PartnerLink | null;
  let client: PartnerLink | null;

  async function pair(handler: RequestHandler): Promise<{ client: PartnerLink; served: PartnerLink }> {
    listener = new PartnerListener(testContext(A, handler, logger));
    listener.onLink = (link) => (served = link);
    await listener.listen({ host: '127.0.0.1', port: 0 });
    client = await connectPartner({ host: '127.0.0.1', port: listener.port, nodeId: A.nodeId }, testContext(B, () => null, logger));
    await until(() => served !== null, 'the listener side of the link');
    return { client, served: served as PartnerLink };
  }

  beforeEach(() => {
    served = null;
    client = null;
  });

  afterEach(async () => {
    client?.close('test over');
    await listener.close();
  });

  it('moves forwarded writes and reads of 4 KiB and 1 MiB intact and gives every segment back', async () => {
    const store = new Map<number, Buffer>();
    const links = await pair((message, link) => {
      if (message.type !== MessageType.ForwardedIo) return null;
      if (message.op === IoOp.Write) {
        store.set(message.offset, Buffer.from(message.data as Buffer));
        return commandComplete(message, Status.Ok);
      }
      const data = link.payloads.take(message.length);
      (store.get(message.offset) as Buffer).copy(data);
      return { type: MessageType.IoData, requestId: message.requestId, data };
    });
    expect(links.client.pooled && links.served.pooled, 'both ends read into their own buffer').to.equal(true);
    const sizes = Array.from({ length: 48 }, (_, index) => (index % 3 === 0 ? 1 << 20 : 4096));
    const written = sizes.map((length, index) => pattern(length, index));
    const offsets = sizes.map((_length, index) => index * (1 << 20));
    const writes = await Promise.all(
      written.map((data, index) => links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Write, allocation: VOLUME, offset: offsets[index] as number, length: data.length, fua: false, data })),
    );
    for (const reply of writes) expect(reply).to.include({ type: MessageType.CommandComplete, status: Status.Ok });
    const reads = await Promise.all(
      sizes.map((length, index) => links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset: offsets[index] as number, length, fua: false, data: Buffer.alloc(0) })),
    );
    reads.forEach((reply, index) => {
      expect(reply.type).to.equal(MessageType.IoData);
      const data = (reply as Extract<Message, { type: MessageType.IoData }>).data;
      expect(data.equals(written[index] as Buffer), `read ${index}`).to.equal(true);
      expect(links.client.payloads.owns(data), 'a reply is read into a segment of the requester').to.equal(true);
      expect(store.get(offsets[index] as number)?.equals(written[index] as Buffer), `write ${index}`).to.equal(true);
      links.client.release(reply);
    });
    expect(links.client.payloads.outstanding, 'replies released').to.equal(0);
    await until(() => links.served.payloads.outstanding === 0, 'the served side to get back its request and reply segments');
    expect(links.served.payloads.retained).to.be.greaterThan(1 << 20);
  });

  it('sends a read reply from lent pages by reference, intact, and ends every loan once written, also when the link closes before', async () => {
    const volume = pattern(8 << 20, 3);
    let loans = 0;
    let lent = 0;
    let sendLent = true;
    const links = await pair((message) => {
      if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Read) return null;
      if (!sendLent) return null;
      // Pages in scattered frames: three pieces, as MemoryManager.pinResident gives them.
      const { offset, length } = message;
      const third = Math.floor(length / 3);
      const pieces = [volume.subarray(offset, offset + third), volume.subarray(offset + third, offset + 2 * third), volume.subarray(offset + 2 * third, offset + length)];
      loans++;
      lent++;
      let released = false;
      const release = (): void => {
        if (released) throw new Error('a loan was released twice');
        released = true;
        loans--;
      };
      return { type: MessageType.IoData, requestId: message.requestId, data: Buffer.alloc(0), lent: { pieces, release } };
    });
    const offsets = Array.from({ length: 24 }, (_, index) => (index % 7) * (1 << 20) + index * 4096);
    const reads = await Promise.all(offsets.map((offset) => links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset, length: 1 << 20, fua: false, data: Buffer.alloc(0) })));
    reads.forEach((reply, index) => {
      const data = (reply as Extract<Message, { type: MessageType.IoData }>).data;
      expect(data.equals(volume.subarray(offsets[index] as number, (offsets[index] as number) + (1 << 20))), `read ${index}`).to.equal(true);
      links.client.release(reply);
    });
    expect(lent).to.equal(24);
    await until(() => loans === 0, 'every loan to end once its reply was written');
    // Replies still queued when the link closes: their loans end too. Nothing answers them (no reply
    // is read, the requester closes at once), so nothing else could end them.
    const pending = offsets.map((offset) => links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset, length: 1 << 20, fua: false, data: Buffer.alloc(0) }).catch((error: Error) => error));
    await until(() => lent === 48, 'the second round to reach the handler');
    links.client.close('closing under lent replies');
    await Promise.all(pending);
    await until(() => loans === 0, 'the loans of replies never read to end');
    sendLent = false;
  });

  it('forwards a 3 MiB write given as 256 KiB pieces (a WRITE\'s payload segments) as 1 MiB forwarded writes, intact', async () => {
    const store = Buffer.alloc(4 << 20);
    const links = await pair((message) => {
      if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Write) return null;
      (message.data as Buffer).copy(store, message.offset);
      return commandComplete(message, Status.Ok);
    });
    const volume = new ForwardedVolume('vol0', VOLUME, store.length, 'a', () => links.client);
    const data = pattern(3 << 20, 5);
    const pieces = Array.from({ length: 12 }, (_, index) => data.subarray(index * (256 << 10), (index + 1) * (256 << 10)));
    await volume.write(4096, pieces, false);
    expect(store.subarray(4096, 4096 + data.length).equals(data)).to.equal(true);
    await until(() => links.served.payloads.outstanding === 0, 'the served side to give its segments back');
  });

  it('reads a forwarded read\'s reply straight into the requester\'s buffer (4 KiB, 1 MiB and a 3 MiB read in pieces), never into a segment', async () => {
    const store = pattern(4 << 20, 7);
    let shortReplies = 0;
    const links = await pair((message, link) => {
      if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Read) return null;
      // A reply shorter than asked (a broken owner) must not land in the requester's buffer.
      const length = message.offset === 0 && message.length === 8192 ? (shortReplies++, 4096) : message.length;
      const data = link.payloads.take(length);
      store.copy(data, 0, message.offset, message.offset + length);
      return { type: MessageType.IoData, requestId: message.requestId, data };
    });
    const volume = new ForwardedVolume('vol0', VOLUME, store.length, 'a', () => links.client);
    for (const [offset, length] of [[4096, 4096], [12_288, 1 << 20], [8192, 3 << 20], [5, 1000]] as const) {
      const into = Buffer.alloc(length, 0xee);
      await volume.read(offset, into);
      expect(into.equals(store.subarray(offset, offset + length)), `${length} bytes at ${offset}`).to.equal(true);
    }
    expect(links.client.payloads.retained, 'no reply went through a segment of the requester').to.equal(0);
    expect(links.client.payloads.outstanding).to.equal(0);
    // A buffer that is itself a segment of the link's pool is never read into (release would give it
    // back): the reply takes a segment of its own, copied out.
    const segment = links.client.payloads.take(4096).fill(0xee);
    await volume.read(40_000, segment);
    expect(segment.equals(store.subarray(40_000, 44_096)), 'copied out of a segment of its own').to.equal(true);
    expect(links.client.payloads.outstanding, 'only the caller\'s own segment is still out').to.equal(1);
    links.client.payloads.give(segment);
    const into = Buffer.alloc(8192, 0xee);
    let failure: Error | null = null;
    await volume.read(0, into).catch((error: Error) => (failure = error));
    expect(shortReplies).to.equal(1);
    expect(String(failure)).to.match(/read on node a failed/);
    expect(into.equals(Buffer.alloc(8192, 0xee)), 'a reply of another length went to a segment').to.equal(true);
    expect(links.client.payloads.outstanding, 'and that segment was given back').to.equal(0);
  });

  it('never reads into a requester\'s buffer after the link closed under a reply still arriving (the request failed; the buffer moved on)', async () => {
    const reply = pattern(1 << 20, 11);
    listener = new PartnerListener(
      testContext(A, (message, link) => {
        if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Read) return null;
        const data = link.payloads.take(message.length);
        reply.copy(data);
        return { type: MessageType.IoData, requestId: message.requestId, data };
      }, logger),
    );
    await listener.listen({ host: '127.0.0.1', port: 0 });
    // Between the two ends: passes the served side's bytes to the requester only up to `allowed`,
    // and keeps the requester's half-close to itself, so the served side goes on sending.
    let allowed = Number.POSITIVE_INFINITY;
    let passed = 0;
    const held: Buffer[] = [];
    let toClient: net.Socket | null = null;
    let toServer: net.Socket | null = null;
    const release = (): void => {
      while (held.length > 0 && passed < allowed) {
        const chunk = held.shift() as Buffer;
        const room = allowed - passed;
        if (chunk.length > room) held.unshift(chunk.subarray(room));
        const part = chunk.subarray(0, Math.min(chunk.length, room));
        passed += part.length;
        if (!(toClient as net.Socket).destroyed) (toClient as net.Socket).write(part);
      }
    };
    const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
      toClient = client;
      const server = net.connect({ host: '127.0.0.1', port: listener.port, allowHalfOpen: true });
      toServer = server;
      client.on('data', (chunk) => server.write(chunk));
      client.on('error', () => undefined);
      server.on('error', () => undefined);
      server.on('data', (chunk) => {
        held.push(Buffer.from(chunk));
        release();
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      client = await connectPartner({ host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port, nodeId: A.nodeId }, testContext(B, () => null, logger));
      expect(client.pooled).to.equal(true);
      // The reply's 16-byte header and 200 KiB of its data get through, then nothing until the link closed.
      allowed = passed + 16 + 200 * 1024;
      const into = Buffer.alloc(1 << 20, 0);
      const read = client.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset: 0, length: 1 << 20, fua: false, data: Buffer.alloc(0) }, into).catch((error: Error) => error);
      await until(() => passed === allowed && into[200 * 1024 - 1] === reply[200 * 1024 - 1], 'the first part of the reply to land in the buffer');
      client.close('closed under a reply');
      expect(String(await read)).to.match(/closed/);
      // The request failed: its buffer is the requester's again, and is used for something else.
      into.fill(0xaa);
      allowed = Number.POSITIVE_INFINITY;
      release();
      await until(() => held.length === 0, 'the rest of the reply to be passed on');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(into.equals(Buffer.alloc(1 << 20, 0xaa)), 'nothing written into the buffer after the request failed').to.equal(true);
    } finally {
      (toClient as net.Socket | null)?.destroy();
      (toServer as net.Socket | null)?.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('keeps the bytes of a forwarded write that waits in its handler while the link closes and more frames arrive behind it', async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const held: Array<{ offset: number; data: Buffer }> = [];
    const links = await pair(async (message) => {
      if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Write) return null;
      held.push({ offset: message.offset, data: message.data as Buffer });
      await gate;
      return commandComplete(message, Status.Ok);
    });
    // One 1 MiB write, then 4 KiB ones: several read buffers' worth behind it, each overwriting the last.
    const sizes = [1 << 20, ...Array.from({ length: 200 }, () => 4096)];
    const written = sizes.map((length, index) => pattern(length, index + 1));
    const pending = written.map((data, index) =>
      links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Write, allocation: VOLUME, offset: index, length: data.length, fua: false, data }).catch((error: Error) => error),
    );
    await until(() => held.length === sizes.length, 'every write to reach its handler');
    links.client.close('closing under queued writes');
    await until(() => !links.served.isOpen, 'the served side to see the link closed');
    for (const { offset, data } of held) expect(data.equals(written[offset] as Buffer), `write ${offset} unchanged while it waits`).to.equal(true);
    expect(links.served.payloads.outstanding, 'the waiting writes still own their segments').to.equal(sizes.length);
    open();
    for (const outcome of await Promise.all(pending)) expect(outcome).to.be.instanceOf(Error);
    await until(() => links.served.payloads.outstanding === 0, 'the segments to come back once the handlers are done');
  });

  it('leaves the segment of a write its handler failed to the collector instead of using it again', async () => {
    const links = await pair((message) => (message.type === MessageType.ForwardedIo ? commandComplete(message, Status.IoError) : null));
    const data = pattern(1 << 20, 9);
    const reply = await links.client.request({ type: MessageType.ForwardedIo, op: IoOp.Write, allocation: VOLUME, offset: 0, length: data.length, fua: false, data });
    expect(reply).to.include({ status: Status.IoError });
    await until(() => links.served.payloads.outstanding === 0, 'the segment to be accounted for');
    expect(links.served.payloads.retained, 'not kept for reuse').to.equal(0);
  });

  it('answers a forwarded read whether its handler answers at once or later, and closes the link when that handler throws', async () => {
    const stored = pattern(4096, 3);
    let mode: 'now' | 'later' | 'throw' = 'now';
    const links = await pair((message, link) => {
      if (message.type !== MessageType.ForwardedIo || message.op !== IoOp.Read) return null;
      if (mode === 'throw') throw new Error('planted read failure');
      const data = link.payloads.take(message.length);
      stored.copy(data, 0, message.offset, message.offset + message.length);
      const reply: Message = { type: MessageType.IoData, requestId: message.requestId, data };
      return mode === 'now' ? reply : new Promise<Message>((resolve) => setTimeout(() => resolve(reply), 5));
    });
    const read = (offset: number, length: number): Promise<Message> =>
      (links.client as PartnerLink).request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset, length, fua: false, data: Buffer.alloc(0) });
    for (const when of ['now', 'later'] as const) {
      mode = when;
      const replies = await Promise.all([read(0, 4096), read(100, 512), read(4000, 96)]);
      expect(replies.map((reply) => (reply as Extract<Message, { type: MessageType.IoData }>).data.toString('hex')), when).to.deep.equal([
        stored.toString('hex'),
        stored.subarray(100, 612).toString('hex'),
        stored.subarray(4000).toString('hex'),
      ]);
      for (const reply of replies) links.client.release(reply);
    }
    await until(() => links.served.payloads.outstanding === 0, 'the reply segments to come back once written');
    mode = 'throw';
    let failure: Error | null = null;
    await read(0, 4096).catch((error: Error) => (failure = error));
    expect(String(failure), 'the requester learns the link closed').to.match(/closed/);
    expect(links.served.isOpen, 'a handler that throws closes the link').to.equal(false);
  });
});
