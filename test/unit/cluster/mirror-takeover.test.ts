// Proves the order of a volume takeover from mirrored pages: the pages reach the storage stack and the
// volume is served before the disks have them (clients do not wait for a deep dirty set to destage),
// they are installed resident only into an allocation that starts here, and the takeover resolves
// (so the caller records and announces it, and partners drop their copies) only once they are
// synced. When the disks refuse them the volume is handed back, for the next pass to take over again.
import { expect } from 'chai';
import { MirrorTakeover, type BlockSink } from '../../../src/cluster/mirror-takeover.js';
import type { MemoryManager, MirrorStore } from '../../../src/memory/index.js';
import type { Allocation } from '../../../src/storage/index.js';

const PAGE = 4096;
const allocation: Allocation = { guid: 'g', name: 'vol0', arrayOffset: 1 << 20, sizeBytes: 16 * PAGE, pageBytes: PAGE, owner: 'a' };

function setup(flush: () => Promise<void>): { takeover: MirrorTakeover; steps: string[]; installed: number[]; returned: number[] } {
  const steps: string[] = [];
  const installed: number[] = [];
  const returned: number[] = [];
  const mirror = {
    takeAllocation: (guid: string) => (guid === 'g' ? [3, 7].map((virtualPage) => ({ virtualPage, version: virtualPage, data: Buffer.alloc(PAGE, virtualPage), frame: 100 + virtualPage })) : []),
    returnFrames: (frames: number[]) => {
      steps.push('frames back');
      returned.push(...frames);
    },
  } as unknown as MirrorStore;
  const manager = {
    installCleanPage: (_guid: string, virtualPage: number) => {
      installed.push(virtualPage);
      return true;
    },
    framesReturned: () => undefined,
  } as unknown as MemoryManager;
  const stack: BlockSink = {
    enqueueBlocks: (offset, data) => steps.push(`enqueue ${(offset - allocation.arrayOffset) / PAGE}=${data[0]}`),
    flush: async () => {
      steps.push('flush');
      await flush();
      steps.push('synced');
    },
  };
  return { takeover: new MirrorTakeover(mirror, manager, () => stack, stack), steps, installed, returned };
}

describe('MirrorTakeover', () => {
  it('serves the volume before its mirrored pages are synced, and resolves only once they are', async () => {
    let sync: () => void = () => undefined;
    const { takeover, steps, installed, returned } = setup(() => new Promise<void>((resolve) => (sync = resolve)));
    let done = false;
    const taking = takeover
      .serveFromMirrors(allocation, true, () => steps.push('own'), () => steps.push('disown'))
      .then((pages) => {
        done = true;
        return pages;
      });
    await new Promise((resolve) => setImmediate(resolve));
    expect(steps).to.deep.equal(['enqueue 3=3', 'enqueue 7=7', 'own', 'flush']);
    expect(installed, 'resident in the fresh allocation at once, the newest first').to.deep.equal([7, 3]);
    expect(done, 'not announced before the disks have them').to.equal(false);
    expect(returned, 'the frames stay lent while the stack may read them').to.deep.equal([]);
    sync();
    expect(await taking).to.equal(2);
    expect(steps.slice(-2)).to.deep.equal(['synced', 'frames back']);
    expect(returned).to.deep.equal([103, 107]);
  });

  it('installs nothing into an allocation that was served here already', async () => {
    const { takeover, installed } = setup(async () => undefined);
    await takeover.serveFromMirrors(allocation, false, () => undefined, () => undefined);
    expect(installed).to.deep.equal([]);
  });

  it('hands the volume back when the disks refuse the pages, and keeps their frames lent until a flush succeeds', async () => {
    let fail = true;
    const { takeover, steps, returned } = setup(async () => {
      if (fail) throw new Error('array failed');
    });
    const error = await takeover.serveFromMirrors(allocation, true, () => steps.push('own'), () => steps.push('disown')).catch((caught: Error) => caught);
    expect(error).to.be.instanceOf(Error);
    expect((error as Error).message).to.equal('array failed');
    expect(steps.slice(-2)).to.deep.equal(['flush', 'disown']);
    expect(returned, 'the stack still holds the blocks for a retry').to.deep.equal([]);
    fail = false;
    await takeover.destageMirrorsToArray([allocation]);
    expect(returned.sort()).to.deep.equal([103, 103, 107, 107]);
  });

  it('destageMirrors says when the pages are on the disks, and gives their frames back then', async () => {
    let sync: () => void = () => undefined;
    const { takeover, steps, returned } = setup(() => new Promise<void>((resolve) => (sync = resolve)));
    const { pages, onDisks } = takeover.destageMirrors([allocation]);
    expect(pages).to.equal(2);
    let done = false;
    void onDisks.then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(done).to.equal(false);
    expect(returned).to.deep.equal([]);
    sync();
    await onDisks;
    expect(steps.slice(-2)).to.deep.equal(['synced', 'frames back']);
    expect(returned).to.deep.equal([103, 107]);
  });
});
