// Proves the receiving side of a warm handover: pages staged between resync begin and a matching
// resync end are handed over at a takeover of the same epoch, and thrown away (frames back in the
// pool) by everything that could have made them stale: a mirrored write of the allocation, the
// giver's link closing, a takeover at another epoch, a count that does not add up, the time limit.
// Malformed clean pages are refused and change nothing.
import { expect } from 'chai';
import type { Clock } from '../../../src/core/index.js';
import { FramePool, ResyncStage, STAGE_TTL_MS } from '../../../src/memory/index.js';
import { MessageType, Status, type Message, type ResyncBegin, type ResyncEnd, type WritePage } from '../../../src/partner/index.js';

const GUID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const OTHER = '1b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const PAGE = 16 * 1024;
const POOL = 1024 * 1024;
const PAGES = 64;
const GIVER = 1;

class ManualTimers implements Clock {
  private time = 0;
  private timers: Array<{ at: number; fire: () => void; live: boolean }> = [];

  setTimer(ms: number, fire: () => void): () => void {
    const timer = { at: this.time + ms, fire, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }

  now(): number {
    return this.time;
  }

  wallNow(): number {
    return this.time;
  }

  defer(work: () => void): void {
    setImmediate(work);
  }

  advance(ms: number): void {
    this.time += ms;
    for (const timer of this.timers.splice(0)) {
      if (timer.live && timer.at <= this.time) timer.fire();
      else if (timer.live) this.timers.push(timer);
    }
  }
}

function setup(): { pool: FramePool; stage: ResyncStage; timers: ManualTimers } {
  const pool = new FramePool(POOL);
  const timers = new ManualTimers();
  const shapes = new Map([[GUID, { sizeBytes: PAGES * PAGE, pageBytes: PAGE }]]);
  return { pool, stage: new ResyncStage(pool, (guid) => shapes.get(guid), timers), timers };
}

const begin = (epoch: number, pageCount: number): ResyncBegin => ({ type: MessageType.ResyncBegin, requestId: 1, epoch, allocationCount: 1, pageCount });
const end = (epoch: number, pageCount: number): ResyncEnd => ({ type: MessageType.ResyncEnd, requestId: 2, epoch, allocationCount: 1, pageCount });

/** Pages `first` … as one clean write page, page i filled with byte first+i. */
function clean(first: number, count: number, overrides: Partial<WritePage> = {}): WritePage {
  const data = Buffer.alloc(count * PAGE);
  for (let i = 0; i < count; i++) data.fill(first + i, i * PAGE, (i + 1) * PAGE);
  return { type: MessageType.WritePage, requestId: 3, allocation: GUID, virtualPage: first, version: 0, pageBytes: PAGE, offset: 0, length: data.length, dirty: false, zeroFill: false, data, ...overrides };
}

function status(reply: Message): Status | undefined {
  return reply.type === MessageType.CommandComplete ? reply.status : undefined;
}

/** Stages pages 2–4 and 9 at epoch 5, completed. */
function staged(stage: ResyncStage): void {
  expect(status(stage.handle(begin(5, 4), GIVER))).to.equal(Status.Ok);
  expect(status(stage.handle(clean(2, 3), GIVER))).to.equal(Status.Ok);
  expect(status(stage.handle(clean(9, 1), GIVER))).to.equal(Status.Ok);
  expect(status(stage.handle(end(5, 4), GIVER))).to.equal(Status.Ok);
}

/** What take hands over: page → first byte of its frame. */
function takeAll(stage: ResyncStage, pool: FramePool, epoch: number): Map<number, number> {
  const got = new Map<number, number>();
  const installed = stage.take(GUID, epoch, (virtualPage, frame) => {
    got.set(virtualPage, pool.view(frame)[PAGE - 1] as number);
    pool.free(frame);
    return true;
  });
  expect(installed).to.equal(got.size);
  return got;
}

describe('ResyncStage', () => {
  it('hands over the pages of a complete resync at the takeover of its epoch, copied out of the message', () => {
    const { pool, stage } = setup();
    expect(stage.empty).to.equal(true);
    const message = clean(2, 3);
    stage.handle(begin(5, 3), GIVER);
    stage.handle(message, GIVER);
    (message.data as Buffer).fill(0xee);
    stage.handle(end(5, 3), GIVER);
    expect(stage.stagedPages).to.equal(3);
    expect(pool.freeBytes).to.equal(POOL - 3 * PAGE);
    expect([...takeAll(stage, pool, 5)]).to.deep.equal([
      [2, 2],
      [3, 3],
      [4, 4],
    ]);
    expect(stage.stagedPages).to.equal(0);
    expect(pool.freeBytes).to.equal(POOL);
  });

  it('frees the pages the installer refuses', () => {
    const { pool, stage } = setup();
    staged(stage);
    const installed = stage.take(GUID, 5, (virtualPage) => virtualPage === 9);
    expect(installed).to.equal(1);
    // The one kept by the "installer" is its frame now; the three refused are back.
    expect(pool.freeBytes).to.equal(POOL - PAGE);
  });

  const staleCases: Array<[string, (stage: ResyncStage) => void, number]> = [
    ['a mirrored write of the allocation', (stage) => stage.invalidate(GUID), 5],
    ["the giver's link closing", (stage) => stage.peerLost(GIVER), 5],
    ['a takeover at another epoch', () => undefined, 6],
  ];
  for (const [what, event, epoch] of staleCases) {
    it(`throws the pages away after ${what}`, () => {
      const { pool, stage } = setup();
      staged(stage);
      event(stage);
      expect(takeAll(stage, pool, epoch).size).to.equal(0);
      expect(pool.freeBytes).to.equal(POOL);
    });
  }

  it('keeps pages of another allocation and another giver through an invalidation that is not theirs', () => {
    const { pool, stage } = setup();
    staged(stage);
    stage.invalidate(OTHER);
    stage.peerLost(GIVER + 1);
    expect(takeAll(stage, pool, 5).size).to.equal(4);
  });

  it('installs nothing from a resync without its end, or whose end counts other pages, or at another epoch', () => {
    const { pool, stage } = setup();
    stage.handle(begin(5, 3), GIVER);
    stage.handle(clean(2, 3), GIVER);
    expect(takeAll(stage, pool, 5).size).to.equal(0);
    stage.handle(begin(5, 3), GIVER);
    stage.handle(clean(2, 3), GIVER);
    expect(status(stage.handle(end(5, 2), GIVER))).to.equal(Status.Invalid);
    expect(pool.freeBytes).to.equal(POOL);
    stage.handle(begin(5, 3), GIVER);
    stage.handle(clean(2, 3), GIVER);
    expect(status(stage.handle(end(6, 3), GIVER))).to.equal(Status.Invalid);
    expect(status(stage.handle(end(5, 3), GIVER))).to.equal(Status.Invalid);
    expect(pool.freeBytes).to.equal(POOL);
  });

  it('a new resync from the same giver replaces the earlier one', () => {
    const { pool, stage } = setup();
    staged(stage);
    stage.handle(begin(5, 1), GIVER);
    stage.handle(clean(7, 1), GIVER);
    stage.handle(end(5, 1), GIVER);
    expect([...takeAll(stage, pool, 5).keys()]).to.deep.equal([7]);
    expect(pool.freeBytes).to.equal(POOL);
  });

  it('gives the frames back when no takeover comes within the time limit, and when a resync never ends', () => {
    const { pool, stage, timers } = setup();
    staged(stage);
    timers.advance(STAGE_TTL_MS - 1);
    expect(stage.stagedPages).to.equal(4);
    timers.advance(1);
    expect(stage.stagedPages).to.equal(0);
    stage.handle(begin(5, 3), GIVER);
    stage.handle(clean(2, 3), GIVER);
    timers.advance(STAGE_TTL_MS);
    expect(stage.empty).to.equal(true);
    expect(pool.freeBytes).to.equal(POOL);
  });

  it('refuses clean pages outside a resync, of an unknown allocation, partial, zero-filled, of another page size or past the end; nothing is kept', () => {
    const { pool, stage } = setup();
    expect(status(stage.handle(clean(2, 1), GIVER))).to.equal(Status.Invalid);
    stage.handle(begin(5, 9), GIVER);
    expect(status(stage.handle(clean(2, 1, { allocation: OTHER }), GIVER))).to.equal(Status.UnknownAllocation);
    expect(status(stage.handle(clean(2, 1, { offset: 100, length: PAGE - 100 }), GIVER))).to.equal(Status.Invalid);
    expect(status(stage.handle(clean(2, 1, { length: PAGE / 2 }), GIVER))).to.equal(Status.Invalid);
    expect(status(stage.handle(clean(2, 1, { zeroFill: true }), GIVER))).to.equal(Status.Invalid);
    expect(status(stage.handle(clean(2, 1, { pageBytes: PAGE * 2 }), GIVER))).to.equal(Status.Invalid);
    expect(status(stage.handle(clean(PAGES - 1, 2), GIVER))).to.equal(Status.Invalid);
    expect(stage.stagedPages).to.equal(0);
    expect(pool.freeBytes).to.equal(POOL);
    // The refused pages do not count: an end for none of them completes an empty resync.
    expect(status(stage.handle(end(5, 0), GIVER))).to.equal(Status.Ok);
  });

  it('takes only free frames: answers no space when the pool is full, and keeps what fitted', () => {
    const { pool, stage } = setup();
    const hog: number[] = [];
    for (let frame = pool.allocate(PAGE); frame !== null; frame = pool.allocate(PAGE)) hog.push(frame);
    for (const frame of hog.splice(0, 2)) pool.free(frame);
    stage.handle(begin(5, 3), GIVER);
    expect(status(stage.handle(clean(2, 3), GIVER))).to.equal(Status.NoSpace);
    expect(status(stage.handle(end(5, 3), GIVER))).to.equal(Status.Ok);
    expect([...takeAll(stage, pool, 5).keys()]).to.deep.equal([2, 3]);
  });
});
