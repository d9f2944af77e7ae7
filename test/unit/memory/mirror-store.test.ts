// Proves the partner side of Figs. 5, 8, 9 and 10: a page travels only into an allocation created by
// allocate memory, a range only into a page held whole, page clean frees only versions up to the
// destaged one, release memory gives every frame back, and space status reports the pool; a write
// page whose range runs over several pages updates each of them, also when one of them cannot take it.
import { expect } from 'chai';
import { FramePool, MirrorStore } from '../../../src/memory/index.js';
import { MessageType, Status, type Message } from '../../../src/partner/index.js';

const GUID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const PAGE = 16 * 1024;
const POOL = 1024 * 1024;

function writePage(virtualPage: number, version: number, offset: number, data: Buffer): Message {
  return { type: MessageType.WritePage, requestId: 7, allocation: GUID, virtualPage, version, pageBytes: PAGE, offset, length: data.length, dirty: true, zeroFill: false, data };
}

function status(reply: Message | null): Status | undefined {
  return reply?.type === MessageType.CommandComplete ? reply.status : undefined;
}

describe('MirrorStore', () => {
  it('refuses pages of an allocation that allocate memory never created', () => {
    const mirror = new MirrorStore(new FramePool(POOL));
    expect(status(mirror.handle(writePage(0, 1, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.UnknownAllocation);
    expect(mirror.mirroredPages).to.equal(0);
  });

  it('creates an allocation once, accepts it again unchanged, refuses another shape under the same id', () => {
    const mirror = new MirrorStore(new FramePool(POOL));
    const allocate = (pageBytes: number): Message => ({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes, ownerNodeId: 0 });
    expect(status(mirror.handle(allocate(PAGE)))).to.equal(Status.Ok);
    expect(status(mirror.handle(allocate(PAGE)))).to.equal(Status.Ok);
    expect(status(mirror.handle(allocate(2 * PAGE)))).to.equal(Status.Invalid);
  });

  it('lets an allocation grow (a volume resized online): pages past the old end are taken; never shrink or change its pages', () => {
    const mirror = new MirrorStore(new FramePool(POOL));
    const allocate = (sizeBytes: number, pageBytes = PAGE): Message => ({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes, pageBytes, ownerNodeId: 0 });
    expect(status(mirror.handle(allocate(4 * PAGE)))).to.equal(Status.Ok);
    expect(status(mirror.handle(writePage(5, 1, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.Invalid);
    expect(status(mirror.handle(allocate(8 * PAGE)))).to.equal(Status.Ok);
    expect(mirror.shapeOf(GUID)?.sizeBytes).to.equal(8 * PAGE);
    expect(status(mirror.handle(writePage(5, 1, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.Ok);
    expect(status(mirror.handle(allocate(6 * PAGE)))).to.equal(Status.Invalid);
    expect(status(mirror.handle(allocate(16 * PAGE, 2 * PAGE)))).to.equal(Status.Invalid);
    expect(mirror.shapeOf(GUID)?.sizeBytes).to.equal(8 * PAGE);
  });

  it('takes a whole page, then ranges into it; refuses a range of a page it does not hold and a page past the end', () => {
    const pool = new FramePool(POOL);
    const mirror = new MirrorStore(pool);
    mirror.handle({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes: PAGE, ownerNodeId: 0 });
    expect(status(mirror.handle(writePage(3, 1, 100, Buffer.alloc(10, 9))))).to.equal(Status.NotResident);
    expect(status(mirror.handle(writePage(64, 1, 0, Buffer.alloc(PAGE, 9))))).to.equal(Status.Invalid);
    expect(status(mirror.handle(writePage(3, 1, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.Ok);
    expect(status(mirror.handle(writePage(3, 2, 100, Buffer.alloc(10, 9))))).to.equal(Status.Ok);
    const held = mirror.pagesOf(GUID).get(3);
    expect(held?.version).to.equal(2);
    expect([held?.data[99], held?.data[100], held?.data[109], held?.data[110]]).to.deep.equal([1, 9, 9, 1]);
    // A page clean for an older version leaves the newer bytes; the destaged version frees the frame.
    mirror.handle({ type: MessageType.PageClean, requestId: 0, allocation: GUID, virtualPage: 3, version: 1, pageCount: 1 });
    expect(mirror.mirroredPages).to.equal(1);
    mirror.handle({ type: MessageType.PageClean, requestId: 0, allocation: GUID, virtualPage: 3, version: 2, pageCount: 1 });
    expect(mirror.mirroredPages).to.equal(0);
    expect(pool.freeBytes).to.equal(POOL);
  });

  it('takes a run of pages in one write page: whole pages it lacks, ranges into pages it holds', () => {
    const pool = new FramePool(POOL);
    const mirror = new MirrorStore(pool);
    mirror.handle({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes: PAGE, ownerNodeId: 0 });
    expect(status(mirror.handle(writePage(2, 1, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.Ok);
    // From byte 100 of page 2 (held) through all of page 3 (new) to byte 10 of page 4 (not held: refused).
    const run = [Buffer.alloc(PAGE - 100, 5), Buffer.alloc(PAGE, 6), Buffer.alloc(10, 7)];
    const message = { ...writePage(2, 4, 100, Buffer.alloc(0)), length: 2 * PAGE - 90, data: run } as Message;
    expect(status(mirror.handle(message))).to.equal(Status.NotResident);
    const pages = mirror.pagesOf(GUID);
    expect([pages.get(2)?.version, pages.get(2)?.data[99], pages.get(2)?.data[100]], 'the held page took the change').to.deep.equal([4, 1, 5]);
    expect([pages.get(3)?.version, pages.get(3)?.data[0], pages.get(3)?.data[PAGE - 1]], 'the whole page was taken').to.deep.equal([4, 6, 6]);
    expect(pages.has(4), 'a range of a page not held makes no image').to.equal(false);
    // The same run with page 4 held: all three take it.
    mirror.handle(writePage(4, 3, 0, Buffer.alloc(PAGE, 2)));
    expect(status(mirror.handle(message))).to.equal(Status.Ok);
    const after = mirror.pagesOf(GUID).get(4);
    expect([after?.version, after?.data[9], after?.data[10]]).to.deep.equal([4, 7, 2]);
    expect(status(mirror.handle({ ...writePage(63, 5, 0, Buffer.alloc(0)), length: 2 * PAGE, data: [Buffer.alloc(PAGE), Buffer.alloc(PAGE)] } as Message)), 'past the end').to.equal(Status.Invalid);
  });

  it('release memory frees every frame and forgets the allocation; space status reports the pool', () => {
    const pool = new FramePool(POOL);
    const mirror = new MirrorStore(pool, () => null, () => 12345);
    mirror.handle({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes: PAGE, ownerNodeId: 0 });
    for (let page = 0; page < 4; page++) mirror.handle(writePage(page, 1, 0, Buffer.alloc(PAGE, page)));
    const space = mirror.handle({ type: MessageType.SpaceRequest, requestId: 2, bytesWanted: PAGE });
    expect(space).to.deep.include({ type: MessageType.SpaceStatus, requestId: 2, freeBytes: POOL - 4 * PAGE, reclaimableBytes: 12345 });
    expect(status(mirror.handle({ type: MessageType.ReleaseMemory, requestId: 3, allocation: GUID }))).to.equal(Status.Ok);
    expect(pool.freeBytes).to.equal(POOL);
    expect(status(mirror.handle(writePage(0, 2, 0, Buffer.alloc(PAGE, 1))))).to.equal(Status.UnknownAllocation);
  });

  it('hands an allocation over at a takeover: its frames lent in page order, back to the pool only when returned', () => {
    const pool = new FramePool(POOL);
    const mirror = new MirrorStore(pool);
    mirror.handle({ type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes: PAGE, ownerNodeId: 0 });
    for (const page of [9, 2, 3, 40]) mirror.handle(writePage(page, page, 0, Buffer.alloc(PAGE, page)));
    const freeBefore = pool.freeBytes;
    const taken = mirror.takeAllocation(GUID);
    expect(taken.map((page) => page.virtualPage)).to.deep.equal([2, 3, 9, 40]);
    expect(taken.map((page) => page.version)).to.deep.equal([2, 3, 9, 40]);
    expect(taken.every((page) => page.data.length === PAGE && page.data.every((byte) => byte === page.virtualPage))).to.equal(true);
    expect(taken.every((page) => pool.view(page.frame).buffer === page.data.buffer && pool.view(page.frame).byteOffset === page.data.byteOffset), 'views of the frames, not copies').to.equal(true);
    expect(mirror.mirroredPages).to.equal(0);
    expect(pool.freeBytes, 'lent, not freed').to.equal(freeBefore);
    mirror.returnFrames(taken.map((page) => page.frame));
    expect(pool.freeBytes - freeBefore).to.equal(4 * PAGE);
  });
});
