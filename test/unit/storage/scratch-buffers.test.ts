// Proves stripe-write scratch buffers are handed out again once given back, by exact size, and
// that no more than the bound are kept.
import { expect } from 'chai';
import { ScratchBuffers } from '../../../src/storage/scratch-buffers.js';

describe('ScratchBuffers', () => {
  it('hands a given-back buffer out again for the same size only', () => {
    const scratch = new ScratchBuffers(4);
    const a = scratch.take(65536);
    expect(a.length).to.equal(65536);
    scratch.give(a);
    expect(scratch.take(4096)).to.not.equal(a);
    expect(scratch.take(65536)).to.equal(a);
    expect(scratch.kept).to.equal(0);
  });

  it('keeps at most its bound of free buffers', () => {
    const scratch = new ScratchBuffers(2);
    for (const buffer of [scratch.take(10), scratch.take(10), scratch.take(10)]) scratch.give(buffer);
    expect(scratch.kept).to.equal(2);
  });
});
