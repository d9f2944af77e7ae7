// Proves the transmission framer yields the same requests however TCP splits the stream, refuses
// bad magic, never buffers an oversized payload, and starts no request its sink has not admitted:
// however many requests one chunk holds, it stops at the first refused one and goes on in order.
import { expect } from 'chai';
import { FramingError, RequestFramer } from '../../../src/nbd/request-framer.js';
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

  it('hands out the payload as views into the chunks it arrived in, without copying', () => {
    const { framer, requests } = collect();
    const first = Buffer.concat([header(1, payload.length, 9), payload.subarray(0, 12)]);
    const second = Buffer.from(payload.subarray(12));
    framer.push(first);
    framer.push(second);
    const pieces = requests[0]?.payload ?? [];
    expect(pieces.map((piece) => piece.length)).to.deep.equal([12, payload.length - 12]);
    expect(pieces[0]?.buffer).to.equal(first.buffer);
    expect(pieces[1]?.buffer).to.equal(second.buffer);
    expect(Buffer.concat(pieces).equals(payload)).to.equal(true);
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
});
