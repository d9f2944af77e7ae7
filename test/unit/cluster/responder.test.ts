// Proves the responder's routing of a warm handover (Fig. 10 extended): resync begin, clean write
// pages and resync end go to the resync stage, a mirrored (dirty) write page to the mirror store,
// where it also drops the staged copies of exactly the pages it covers; a handover message that
// arrives without a link to say who sent it is refused.
import { expect } from 'chai';
import { Responder, type ResponderTargets } from '../../../src/cluster/responder.js';
import { FramePool, MirrorStore, ResyncStage } from '../../../src/memory/index.js';
import { silentLogger } from '../../../src/observe/logger.js';
import { MessageType, Status, type Message, type WritePage } from '../../../src/partner/index.js';

const GUID = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const PAGE = 4096;
const GIVER = { peer: { nodeId: 1 } };

function setup(): { responder: Responder; stage: ResyncStage; mirror: MirrorStore } {
  const pool = new FramePool(1024 * 1024);
  const mirror = new MirrorStore(pool);
  const stage = new ResyncStage(pool, (guid) => mirror.shapeOf(guid));
  const targets: ResponderTargets = { mirror, stage, stack: null, owned: new Map(), epoch: null, takeover: null, holding: false, ready: true };
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
