// Proves the responder's routing of a warm handover (Fig. 10 extended): resync begin, clean write
// pages and resync end go to the resync stage, a mirrored (dirty) write page to the mirror store,
// where it also drops the staged copies of exactly the pages it covers; a handover message that
// arrives without a link to say who sent it is refused. And forwarded I/O (what a partner asks the
// owner or the array holder to do) cannot write a read-only volume, nor any part of the array that
// is not a volume (the node-state region).
import { expect } from 'chai';
import { Responder, type ResponderTargets } from '../../../src/cluster/responder.js';
import { FramePool, MirrorStore, ResyncStage } from '../../../src/memory/index.js';
import { silentLogger } from '../../../src/observe/logger.js';
import { IoOp, MessageType, NIL_ALLOCATION, Status, type Message, type WritePage } from '../../../src/partner/index.js';
import type { StorageStack } from '../../../src/storage/index.js';
import { RamVolume } from '../../support/ram-volume.js';

const GUID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const PAGE = 4096;
const GIVER = { peer: { nodeId: 1 } };

function setup(more: Partial<ResponderTargets> = {}): { responder: Responder; stage: ResyncStage; mirror: MirrorStore } {
  const pool = new FramePool(1024 * 1024);
  const mirror = new MirrorStore(pool);
  const stage = new ResyncStage(pool, (guid) => mirror.shapeOf(guid));
  const targets: ResponderTargets = { mirror, stage, stack: null, owned: new Map(), epoch: null, ownership: null, catalog: null, holding: false, ready: true, extents: () => [], ...more };
  const responder = new Responder(targets, silentLogger());
  return { responder, stage, mirror };
}

function page(virtualPage: number, count: number, dirty: boolean, offset = 0, length = count * PAGE): WritePage {
  return { type: MessageType.WritePage, requestId: 3, allocation: GUID, virtualPage, version: dirty ? 9 : 0, pageBytes: PAGE, offset, length, dirty, zeroFill: false, data: Buffer.alloc(length, 7) };
}

async function send(responder: Responder, message: Message, link: typeof GIVER | null = GIVER): Promise<Status | undefined> {
  const reply = await responder.handle(message, link ?? undefined);
  return reply?.type === MessageType.CommandComplete ? reply.status : undefined;
}

describe('Responder: warm handover routing', () => {
  it('stages clean pages, mirrors dirty ones, and a dirty page drops the staged copies of the pages it covers only', async () => {
    const { responder, stage, mirror } = setup();
    expect(await send(responder, { type: MessageType.AllocateMemory, requestId: 1, allocation: GUID, sizeBytes: 64 * PAGE, pageBytes: PAGE, ownerNodeId: 1 })).to.equal(Status.Ok);
    expect(await send(responder, { type: MessageType.ResyncBegin, requestId: 2, epoch: 4, allocationCount: 1, pageCount: 8 })).to.equal(Status.Ok);
    expect(await send(responder, page(0, 8, false))).to.equal(Status.Ok);
    expect([stage.stagedPages, mirror.mirroredPages]).to.deep.equal([8, 0]);
    // A run from byte 100 of page 2 into page 3: pages 2 and 3 were written again.
    expect(await send(responder, page(2, 2, true, 100, PAGE))).to.equal(Status.NotResident);
    expect(await send(responder, page(5, 1, true))).to.equal(Status.Ok);
    expect([stage.stagedPages, mirror.mirroredPages]).to.deep.equal([5, 1]);
    expect(await send(responder, { type: MessageType.ResyncEnd, requestId: 4, epoch: 4, allocationCount: 1, pageCount: 8 })).to.equal(Status.Ok);
    const installed: number[] = [];
    stage.take(GUID, 4, (virtualPage) => installed.push(virtualPage) > 0);
    expect(installed.sort((a, b) => a - b)).to.deep.equal([0, 1, 4, 6, 7]);
  });

  it('refuses resync messages and clean pages that come without a link', async () => {
    const { responder, stage } = setup();
    expect(await send(responder, { type: MessageType.ResyncBegin, requestId: 2, epoch: 4, allocationCount: 1, pageCount: 1 }, null)).to.equal(Status.Invalid);
    expect(await send(responder, page(0, 1, false), null)).to.equal(Status.Invalid);
    expect(stage.empty).to.equal(true);
  });
});

describe('Responder: forwarded I/O stays inside what the export and the array allow', () => {
  const forwarded = (op: IoOp, allocation: string, offset: number, data: Buffer): Message => ({ type: MessageType.ForwardedIo, requestId: 7, op, fua: false, allocation, offset, length: data.length, data });

  it('refuses a forwarded write, zero or trim to a read-only volume and leaves its bytes alone', async () => {
    const volume = new RamVolume(64 * PAGE);
    const { responder } = setup({ owned: new Map([[GUID, { volume, readOnly: true }]]) });
    const before = Buffer.from(volume.bytes);
    for (const op of [IoOp.Write, IoOp.Zero, IoOp.Trim]) {
      const data = op === IoOp.Write ? Buffer.alloc(PAGE, 0xee) : Buffer.alloc(0);
      const message = { ...forwarded(op, GUID, 0, data), length: PAGE } as Message;
      expect(await send(responder, message), `op ${op}`).to.equal(Status.Invalid);
    }
    expect(volume.bytes.equals(before)).to.equal(true);
    const read = await responder.handle({ type: MessageType.ForwardedIo, requestId: 8, op: IoOp.Read, fua: false, allocation: GUID, offset: 0, length: PAGE, data: Buffer.alloc(0) });
    expect(read?.type, 'reads are still served').to.equal(MessageType.IoData);
  });

  it('refuses an array write (nil allocation) outside every volume, and takes one inside a volume', async () => {
    const written: number[] = [];
    const stack = { sizeBytes: 1 << 30, enqueueBlocks: (offset: number) => written.push(offset), flush: async () => undefined, readBlocks: async () => undefined } as unknown as StorageStack;
    const { responder } = setup({ stack, holding: true, extents: () => [{ arrayOffset: 16 * 1024 * 1024, sizeBytes: 64 * PAGE }] });
    expect(await send(responder, forwarded(IoOp.Write, NIL_ALLOCATION, 0, Buffer.alloc(PAGE, 1))), 'the node-state region').to.equal(Status.Invalid);
    expect(await send(responder, forwarded(IoOp.Write, NIL_ALLOCATION, 16 * 1024 * 1024 + 63 * PAGE, Buffer.alloc(2 * PAGE, 1))), 'straddling the end of a volume').to.equal(Status.Invalid);
    expect(await send(responder, forwarded(IoOp.Write, NIL_ALLOCATION, 16 * 1024 * 1024 + PAGE, Buffer.alloc(PAGE, 1))), 'inside a volume').to.equal(Status.Ok);
    expect(written).to.deep.equal([16 * 1024 * 1024 + PAGE]);
  });
});

describe('Responder: forwarded reads of resident pages', () => {
  const ALLOCATION = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
  const read = (offset: number, length: number): Message => ({ type: MessageType.ForwardedIo, requestId: 5, op: IoOp.Read, fua: false, allocation: ALLOCATION, offset, length, data: Buffer.alloc(0) });

  it('answers in the same step when the volume can copy at once, else through the async read', async () => {
    const ram = new RamVolume(1 << 20);
    ram.bytes.fill(0x5a, 0, 8192);
    let resident = true;
    const volume = Object.assign(ram, { readResident: (offset: number, into: Buffer): boolean => resident && ram.bytes.copy(into, 0, offset, offset + into.length) === into.length });
    const { responder } = setup({ owned: new Map([[ALLOCATION, { volume, readOnly: false }]]) });
    const now = responder.handle(read(4096, 4096), GIVER);
    expect(now, 'answered without a promise').to.not.be.instanceOf(Promise);
    expect(now).to.deep.include({ type: MessageType.IoData, requestId: 5 });
    expect(((now as { data: Buffer }).data).equals(Buffer.alloc(4096, 0x5a))).to.equal(true);
    expect(volume.calls.filter((call) => call.operation === 'read'), 'the async read was not used').to.have.length(0);
    resident = false;
    const later = responder.handle(read(0, 4096), GIVER);
    expect(later).to.be.instanceOf(Promise);
    expect(((await later) as { data: Buffer }).data.equals(Buffer.alloc(4096, 0x5a))).to.equal(true);
    expect(volume.calls.filter((call) => call.operation === 'read')).to.have.length(1);
  });

  it('leaves out-of-range reads, 64 KiB and longer reads and a stopping node to the async path', async () => {
    let asked = 0;
    const volume = Object.assign(new RamVolume(1 << 20), { readResident: (): boolean => ++asked > 0 });
    const { responder } = setup({ owned: new Map([[ALLOCATION, { volume, readOnly: false }]]) });
    expect(await responder.handle(read((1 << 20) - 4096, 8192), GIVER)).to.deep.include({ type: MessageType.CommandComplete, status: Status.Invalid });
    expect(responder.handle(read(0, 64 * 1024), GIVER)).to.be.instanceOf(Promise);
    await responder.stopVolumeRequests();
    expect(await responder.handle(read(0, 4096), GIVER)).to.deep.include({ type: MessageType.CommandComplete, status: Status.ShuttingDown });
    expect(asked).to.equal(0);
  });
});
