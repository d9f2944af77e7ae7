// Proves the giving side of a warm handover reports how far its copy is while it runs (what
// `ftvm status` shows beside a volume moving to another node), and nothing once it is over.
import { expect } from 'chai';
import { WarmHandover } from '../../../src/cluster/warm-handover.js';
import { FramePool, MemoryManager, type Replicator } from '../../../src/memory/index.js';
import { MessageType, Status, type Message, type PartnerLink } from '../../../src/partner/index.js';
import type { BlockStore } from '../../../src/storage/index.js';
import type { Logger } from '../../../src/observe/index.js';

const PAGE = 4096;
const PAGES = 40;
const GUID = '11111111-2222-4333-8444-555555555555';

const zeroStore: BlockStore = {
  readBlocks: async (_offset, into) => {
    into.fill(0);
  },
  enqueueBlocks: () => undefined,
  flush: async () => undefined,
};
const noPartners: Replicator = { livePartners: () => 0, writePage: async () => true, pageClean: () => undefined };
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined, log: () => undefined } as unknown as Logger;

/** A link whose write pages wait until `release` is called; everything else is answered Ok at once. */
function heldLink(): { link: PartnerLink; release: () => void; writePages: () => number } {
  let open: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (open = resolve));
  let writePages = 0;
  const link = {
    peer: { nodeId: 1 },
    isOpen: true,
    request: async (message: Message): Promise<Message> => {
      if (message.type === MessageType.WritePage) {
        writePages++;
        await held;
      }
      return { type: MessageType.CommandComplete, requestId: 0, requestType: message.type, status: Status.Ok } as Message;
    },
  } as unknown as PartnerLink;
  return { link, release: open, writePages: () => writePages };
}

describe('WarmHandover', () => {
  it('says how many resident pages a pass has sent of how many while it runs, and nothing after', async () => {
    const manager = new MemoryManager(new FramePool(1024 * 1024), zeroStore, noPartners, { highWatermarkPages: 1000, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: PAGES * PAGE, pageBytes: PAGE });
    // Every other page resident: 20 runs of one page each.
    for (let page = 0; page < PAGES; page += 2) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    const { link, release, writePages } = heldLink();
    const handover = new WarmHandover(manager, () => link, () => 1, true, String, quiet);
    expect(handover.progressOf(GUID)).to.equal(null);
    const entry = { allocation: { guid: GUID, name: 'vol0' }, pageBytes: PAGE, memory: {} };
    const pass = handover.copyResident(entry, 1, 'live');
    while (writePages() === 0) await new Promise((resolve) => setImmediate(resolve));
    const during = handover.progressOf(GUID);
    expect(during?.total).to.equal(PAGES / 2);
    // Eight runs in flight at once, each one page here.
    expect(during?.sent).to.equal(8);
    release();
    expect(await pass).to.equal(PAGES / 2);
    expect(handover.progressOf(GUID)).to.equal(null);
  });
});
