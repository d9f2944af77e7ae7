// Proves that what the responder serves to partners' forwarded I/O follows where a volume is served:
// owned here, it is there; forwarded to another node (after a release, or after a takeover whose
// destage the disks refused), it is gone, so a partner's request is never answered from here then.
import { expect } from 'chai';
import { ServedVolumes, type Served } from '../../../src/cluster/served-volumes.js';
import { VolumeSwitch } from '../../../src/cluster/volume-switch.js';
import type { OwnedVolume } from '../../../src/cluster/responder.js';
import { FramePool, MemoryManager, ResyncStage, type Replicator } from '../../../src/memory/index.js';
import { silentLogger } from '../../../src/observe/index.js';
import type { BlockStore } from '../../../src/storage/index.js';
import { ManualClock } from '../../support/manual-clock.js';

const store: BlockStore = { readBlocks: async (_offset, into) => void into.fill(0), enqueueBlocks: () => undefined, flush: async () => undefined };
const partners: Replicator = { livePartners: () => 0, writePage: async () => false, pageClean: () => undefined };

describe('ServedVolumes', () => {
  it("serves partners' forwarded I/O for a volume only while it is owned here", () => {
    const owned = new Map<string, OwnedVolume>();
    const pool = new FramePool(4 * 1024 * 1024);
    const manager = new MemoryManager(pool, store, partners, { highWatermarkPages: 100, lowWatermarkPages: 0 });
    const volumes = new ServedVolumes(0, manager, new ResyncStage(pool, () => undefined, new ManualClock()), owned, () => null, (id) => `n${id}`, silentLogger());
    const allocation = { guid: 'g', name: 'vol0', arrayOffset: 1 << 20, sizeBytes: 1 << 20, pageBytes: 4096, owner: 'b' };
    const entry: Served = { allocation, pageBytes: 4096, switch: null as unknown as VolumeSwitch, memory: null, ownerId: 1, homeId: 1, moving: '', readOnly: false };
    entry.switch = new VolumeSwitch('vol0', allocation.sizeBytes, volumes.forwarder(entry, 1), () => true, 1000, new ManualClock());
    volumes.own(entry);
    expect(owned.has('g')).to.equal(true);
    volumes.forward(entry, 1);
    expect(owned.has('g'), 'forwarded: no longer served here').to.equal(false);
    expect(entry.ownerId).to.equal(1);
  });
});
