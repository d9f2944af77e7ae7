// Proves the transmission framer yields the same requests however TCP splits the stream, refuses
// bad magic, never buffers an oversized payload, and starts no request its sink has not admitted:
// however many requests one chunk holds, it stops at the first refused one and goes on in order.
import { expect } from 'chai';
import { BufferPool } from '../../../src/nbd/reply-pool.js';
import { FramingError, PAYLOAD_SEGMENT_BYTES, RequestFramer } from '../../../src/nbd/request-framer.js';
import type { Request } from '../../../src/nbd/wire.js';

function header(type: number, length: number, handle: number, offset = 0, flags = 0): Buffer {
  const out = Buffer.alloc(28);
  out.writeUInt32BE(0x25609513, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(handle, 12);
  out.writeUInt32BE(offset, 20);
  out.writeUInt32BE(length, 24);
  return out;
}

function collect(maxPayloadBytes?: number): { framer: RequestFramer; requests: Request[] } {
  const requests: Request[] = [];
  return { framer: new RequestFramer({ admits: () => true, onRequest: (request) => requests.push(request) }, maxPayloadBytes), requests };
}

/** A sink that admits `room` requests, then refuses until given more room. */
function gated(room: number): { framer: RequestFramer; requests: Request[]; asked: Request[]; give(more: number): void } {
  const requests: Request[] = [];
  const asked: Request[] = [];
  let left = room;
  const framer = new RequestFramer({
    admits: (request) => {
      asked.push(request);
      if (left === 0) return false;
      left--;
      return true;
    },
    onRequest: (request) => requests.push(request),
  });
  return { framer, requests, asked, give: (more) => (left += more) };
}

const payload = Buffer.from('0123456789abcdef'.repeat(4));
const joined = (request: Request | undefined): Buffer => Buffer.concat(request?.payload ?? []);
const stream = Buffer.concat([header(0, 4096, 1, 8192), header(1, payload.length, 2, 512), payload, header(3, 0, 3), header(2, 0, 4)]);

describe('RequestFramer', () => {
  it('frames read, write with payload, flush and disc from one chunk', () => {
    const { framer, requests } = collect();
    framer.push(stream);
    expect(requests.map((request) => [request.type, request.handleLow])).to.deep.equal([[0, 1], [1, 2], [3, 3], [2, 4]]);
    expect(joined(requests[1]).equals(payload)).to.equal(true);
    expect(requests[0]?.offset).to.equal(8192);
    expect(framer.idle).to.equal(true);
  });

  it('yields identical requests at every split point', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const { framer, requests } = collect();
      framer.push(stream.subarray(0, cut));
      framer.push(stream.subarray(cut));
      expect(requests.length, `cut at ${cut}`).to.equal(4);
      expect(joined(requests[1]).equals(payload), `cut at ${cut}`).to.equal(true);
    }
  });

  it('yields identical requests when fed one byte at a time', () => {
    const { framer, requests } = collect();
    for (let i = 0; i < stream.length; i++) framer.push(stream.subarray(i, i + 1));
    expect(requests.map((request) => request.handleLow)).to.deep.equal([1, 2, 3, 4]);
    expect(joined(requests[1]).equals(payload)).to.equal(true);
  });

  it('keeps nothing of its input: the caller may overwrite a chunk once push returns', () => {
    const { framer, requests } = collect();
    const first = Buffer.concat([header(1, payload.length, 9), payload.subarray(0, 12)]);
    const second = Buffer.from(payload.subarray(12));
    framer.push(first);
    first.fill(0xee);
    framer.push(second);
    second.fill(0xee);
    expect(joined(requests[0]).equals(payload)).to.equal(true);
  });

  it('throws FramingError on bad magic and ignores input afterwards', () => {
    const { framer, requests } = collect();
    const bad = header(0, 512, 1);
    bad.writeUInt32BE(0xdeadbeef, 0);
    expect(() => framer.push(bad)).to.throw(FramingError, /bad request magic 0xdeadbeef/);
    framer.push(header(0, 512, 2));
    expect(requests).to.have.length(0);
  });

  it('discards an oversized write payload without buffering it and stays in sync', () => {
    const { framer, requests } = collect(64);
    const big = Buffer.alloc(1000, 7);
    framer.push(Buffer.concat([header(1, big.length, 1), big.subarray(0, 500)]));
    expect(requests).to.have.length(0);
    framer.push(Buffer.concat([big.subarray(500), header(0, 16, 2)]));
    expect(requests.map((request) => [request.handleLow, request.oversized, request.payload])).to.deep.equal([
      [1, true, null],
      [2, false, null],
    ]);
  });

  it('passes a zero-length write through with no payload', () => {
    const { framer, requests } = collect();
    framer.push(Buffer.concat([header(1, 0, 5), header(0, 1, 6)]));
    expect(requests.map((request) => request.handleLow)).to.deep.equal([5, 6]);
    expect(requests[0]?.payload).to.equal(null);
  });

  it('starts at most what the sink admits from one chunk of 600 pipelined reads, and goes on in order', () => {
    const { framer, requests, asked, give } = gated(8);
    framer.push(Buffer.concat(Array.from({ length: 600 }, (_, index) => header(0, 1024 * 1024, index + 1))));
    expect(requests).to.have.length(8);
    expect(asked, 'asked once more, then held').to.have.length(9);
    expect(framer.holding).to.equal(true);
    framer.push(header(3, 0, 601)); // more input while held waits behind
    for (let round = 0; round < 100 && requests.length < 601; round++) {
      give(8);
      framer.resume();
    }
    expect(requests.map((request) => request.handleLow)).to.deep.equal(Array.from({ length: 601 }, (_, index) => index + 1));
    expect(framer.idle).to.equal(true);
  });

  it('keeps a held write\'s payload unread: nothing of it is buffered before admission', () => {
    const { framer, requests, give } = gated(0);
    const data = Buffer.alloc(4096, 0x61);
    framer.push(Buffer.concat([header(1, data.length, 1), data.subarray(0, 100)]));
    expect(requests).to.have.length(0);
    framer.push(data.subarray(100));
    give(1);
    framer.resume();
    expect(requests).to.have.length(1);
    expect(joined(requests[0]).equals(data)).to.equal(true);
  });

  it('holds a header that arrived split across chunks, and resumes with the bytes behind it', () => {
    const { framer, requests, give } = gated(0);
    const two = Buffer.concat([header(0, 512, 1), header(0, 512, 2)]);
    framer.push(two.subarray(0, 10));
    framer.push(two.subarray(10, 40));
    expect(framer.holding).to.equal(true);
    framer.push(two.subarray(40));
    give(2);
    framer.resume();
    expect(requests.map((request) => request.handleLow)).to.deep.equal([1, 2]);
  });

  describe('fed through one reused read buffer, as a socket reading into its own buffer feeds it', () => {
    // A stream of every kind of request, payloads of odd sizes that straddle any read.
    const mixed = Buffer.concat([
      header(0, 4096, 1, 8192),
      header(1, 100, 2, 512),
      Buffer.alloc(100, 0x11),
      header(1, 5000, 3, 4096),
      Buffer.from(Array.from({ length: 5000 }, (_, index) => index & 0xff)),
      header(3, 0, 4),
      header(1, 1, 5),
      Buffer.from([0x7f]),
      header(4, 4096, 6, 0, 1),
      header(1, 28, 7),
      header(0, 28, 8), // the payload of 7, which looks like a header: not a request
      header(2, 0, 9),
    ]);
    interface Seen {
      type: number;
      handle: number;
      offset: number;
      length: number;
      flags: number;
      payload: string | null;
    }
    const seen = (request: Request): Seen => ({
      type: request.type,
      handle: request.handleLow,
      offset: request.offset,
      length: request.length,
      flags: request.flags,
      // Read at hand-out time, as the volume would copy it: a later push must not change it either (checked below).
      payload: request.payload ? Buffer.concat(request.payload).toString('hex') : null,
    });

    /** Feeds `bytes` cut at `cuts` through one buffer overwritten before every push; `room` admits that many at a time. */
    function feed(bytes: Buffer, cuts: readonly number[], room = Infinity): { out: Seen[]; requests: Request[]; pool: BufferPool } {
      const pool = new BufferPool(1 << 20);
      const out: Seen[] = [];
      const requests: Request[] = [];
      let left = room;
      const framer = new RequestFramer(
        {
          admits: () => left-- > 0,
          onRequest: (request) => {
            out.push(seen(request));
            requests.push(request);
          },
        },
        undefined,
        pool,
      );
      const readBuffer = Buffer.alloc(bytes.length);
      let from = 0;
      for (const to of [...cuts, bytes.length]) {
        readBuffer.fill(0xa5);
        bytes.copy(readBuffer, 0, from, to);
        framer.push(readBuffer.subarray(0, to - from));
        from = to;
        for (let round = 0; left <= 0 && round < 100; round++) {
          left = room;
          framer.resume();
        }
      }
      readBuffer.fill(0x5a);
      expect(framer.idle).to.equal(true);
      return { out, requests, pool };
    }

    const whole = feed(mixed, []).out;

    it('frames the unsplit stream', () => {
      expect(whole.map((request) => request.handle)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 9]);
      expect(whole[2]?.payload).to.equal(mixed.subarray(28 * 2 + 100 + 28, 28 * 2 + 100 + 28 + 5000).toString('hex'));
    });

    it('yields the unsplit result when cut at every byte boundary', () => {
      for (let cut = 1; cut < mixed.length; cut++) expect(feed(mixed, [cut]).out, `cut at ${cut}`).to.deep.equal(whole);
    });

    it('yields the unsplit result when cut at every pair of boundaries near the payload edges, and one request admitted at a time', () => {
      const edges = [28, 56, 156, 184, 5184, 5212, 5240, 5241];
      for (const a of edges) {
        for (let b = a + 1; b < Math.min(mixed.length, a + 40); b++) expect(feed(mixed, [a, b], 1).out, `cuts ${a}, ${b}`).to.deep.equal(whole);
      }
    });

    it('yields the unsplit result at random boundaries, with random admission', () => {
      let seed = 15;
      const random = (below: number): number => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed % below;
      };
      for (let run = 0; run < 300; run++) {
        const cuts = [...new Set(Array.from({ length: 1 + random(20) }, () => 1 + random(mixed.length - 1)))].sort((a, b) => a - b);
        const { out, requests } = feed(mixed, cuts, 1 + random(4));
        expect(out, `cuts ${cuts.join(',')}`).to.deep.equal(whole);
        // Payloads stay whole after the stream went on (nothing refers to the read buffer).
        expect(requests.map(seen)).to.deep.equal(whole);
      }
    });

    it('takes pooled buffers for payloads of a page or more only, each owned by its request', () => {
      const { requests, pool } = feed(mixed, [30, 200, 3000]);
      const pooled = requests.filter((request) => (request.payloadBuffers ?? []).length > 0);
      expect(pooled.map((request) => request.handleLow)).to.deep.equal([3]);
      expect(pool.outstanding).to.equal(1);
      for (const request of pooled) for (const buffer of request.payloadBuffers ?? []) pool.give(buffer);
      expect(pool.outstanding).to.equal(0);
    });

    it('takes a large payload\'s segments as its bytes arrive, not when its header claims them', () => {
      const pool = new BufferPool(0);
      const requests: Request[] = [];
      const framer = new RequestFramer({ admits: () => true, onRequest: (request) => requests.push(request) }, undefined, pool);
      const length = 3 * PAYLOAD_SEGMENT_BYTES + 5;
      framer.push(header(1, length, 1));
      expect(pool.outstanding).to.equal(0);
      framer.push(Buffer.alloc(1, 1));
      expect(pool.outstanding).to.equal(1);
      framer.push(Buffer.alloc(PAYLOAD_SEGMENT_BYTES, 2));
      expect(pool.outstanding).to.equal(2);
      framer.push(Buffer.alloc(length - PAYLOAD_SEGMENT_BYTES - 1, 3));
      expect(requests).to.have.length(1);
      expect(requests[0]?.payload?.map((piece) => piece.length)).to.deep.equal([PAYLOAD_SEGMENT_BYTES, PAYLOAD_SEGMENT_BYTES, PAYLOAD_SEGMENT_BYTES, 5]);
      expect(pool.outstanding, 'the 5-byte tail is not pooled').to.equal(3);
      const expected = Buffer.concat([Buffer.alloc(1, 1), Buffer.alloc(PAYLOAD_SEGMENT_BYTES, 2), Buffer.alloc(length - PAYLOAD_SEGMENT_BYTES - 1, 3)]);
      expect(joined(requests[0]).equals(expected)).to.equal(true);
    });

    it('gives back the buffer of a WRITE still arriving when disposed, and returns that request', () => {
      const pool = new BufferPool(1 << 20);
      const framer = new RequestFramer({ admits: () => true, onRequest: () => undefined }, undefined, pool);
      framer.push(Buffer.concat([header(1, 8192, 1), Buffer.alloc(100)]));
      expect(pool.outstanding).to.equal(1);
      framer.push(Buffer.alloc(4096));
      expect(framer.dispose()?.handleLow).to.equal(1);
      expect(pool.outstanding).to.equal(0);
      expect(pool.retained).to.equal(8192);
      framer.push(Buffer.alloc(4096));
      expect(framer.dispose()).to.equal(null);
    });
  });
});
