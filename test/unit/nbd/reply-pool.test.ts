// Proves read reply buffers are used again once given back, sized for any reply header plus a
// power-of-two payload, and that the pool keeps no more free memory than its bound.
import { expect } from 'chai';
import { BufferPool, payloadClassOf, ReplyPool, REPLY_HEADER_ROOM } from '../../../src/nbd/reply-pool.js';

describe('ReplyPool', () => {
  it('hands the same buffer out again once it is given back, with room for any reply header', () => {
    const pool = new ReplyPool(1 << 20);
    const first = pool.take(1000);
    expect(first.length).to.equal(REPLY_HEADER_ROOM + 4096);
    pool.give(first);
    expect(pool.take(4096)).to.equal(first);
    expect(payloadClassOf(1 << 20)).to.equal(1 << 20);
    expect(payloadClassOf((1 << 20) + 1)).to.equal(1 << 21);
  });

  it('keeps at most its retain bound of free buffers', () => {
    const pool = new ReplyPool(3 * (REPLY_HEADER_ROOM + 4096));
    const buffers = Array.from({ length: 5 }, () => pool.take(4096));
    for (const buffer of buffers) pool.give(buffer);
    expect(pool.retained).to.equal(3 * (REPLY_HEADER_ROOM + 4096));
  });

  it('counts buffers out until given back or forgotten, also those it does not keep', () => {
    const pool = new BufferPool(4096);
    const a = pool.take(4096);
    const b = pool.take(100);
    const c = pool.take(5000);
    expect(pool.outstanding).to.equal(3);
    expect(c.length).to.equal(8192);
    pool.give(a);
    pool.give(b); // over the retain bound: dropped, still back
    pool.forget();
    expect(pool.outstanding).to.equal(0);
    expect(pool.retained).to.equal(4096);
    expect(pool.take(1)).to.equal(a);
  });
});
