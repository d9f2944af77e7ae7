// Proves the holder's checks before a volume is made (the live cases are in native-test/volumes.test.ts):
// a node without room in memory for one page refuses it (Fig. 5's space request), a node that is
// not the holder refuses it, and neither writes the record.
import { expect } from 'chai';
import { VolumeCatalog, type CatalogHost } from '../../../src/cluster/volume-catalog.js';
import type { ClusterConfig } from '../../../src/config/index.js';
import { MessageType, type Message, type PartnerLink } from '../../../src/partner/index.js';
import type { ClusterRecord, StorageStack } from '../../../src/storage/index.js';

const RECORD: ClusterRecord = { cluster: 'c', allocations: [], nodes: ['a', 'b'] };

function host(options: { holder?: boolean; partnerRoom: number; ownRoom: number }): { host: CatalogHost; writes: () => number; spaceRequests: () => number } {
  let writes = 0;
  let spaceRequests = 0;
  const link = {
    peer: { nodeId: 1 },
    isOpen: true,
    request: async (message: Message): Promise<Message> => {
      if (message.type !== MessageType.SpaceRequest) throw new Error(`unexpected message ${message.type}`);
      spaceRequests++;
      return { type: MessageType.SpaceStatus, requestId: 0, freeBytes: options.partnerRoom, reclaimableBytes: 0 };
    },
  } as unknown as PartnerLink;
  const config = { nodes: [{ name: 'a' }, { name: 'b' }], volumes: [{ name: 'vol0', pageSize: 4096 }] } as unknown as ClusterConfig;
  const fake = {
    nodeId: 0,
    config,
    pool: { freeBytes: options.ownRoom },
    manager: { reclaimableBytes: 0 },
    name: (id: number) => ['a', 'b'][id] ?? String(id),
    holderId: () => (options.holder === false ? 1 : 0),
    stack: () => (options.holder === false ? null : ({} as StorageStack)),
    record: () => RECORD,
    withRecord: async () => {
      writes++;
      throw new Error('the record must not be written');
    },
    link: (id: number) => (id === 1 ? link : null),
  } as unknown as CatalogHost;
  return { host: fake, writes: () => writes, spaceRequests: () => spaceRequests };
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('VolumeCatalog (the holder\'s checks)', () => {
  it('refuses a volume a partner has no room in memory for a page of, before it writes anything', async () => {
    const { host: node, writes, spaceRequests } = host({ partnerRoom: 4095, ownRoom: 1 << 20 });
    const message = await refusal(new VolumeCatalog(node).create({ name: 'new', sizeBytes: 1 << 20 }));
    expect(message).to.equal('node b has no room in memory for a 4096-byte page (4095 bytes free or reclaimable)');
    expect(spaceRequests()).to.equal(1);
    expect(writes()).to.equal(0);
  });

  it('refuses one this node has no room for, without asking its partners', async () => {
    const { host: node, writes, spaceRequests } = host({ partnerRoom: 1 << 20, ownRoom: 0 });
    expect(await refusal(new VolumeCatalog(node).create({ name: 'new', sizeBytes: 1 << 20 }))).to.match(/^node a has no room in memory for a 4096-byte page/);
    expect(spaceRequests()).to.equal(0);
    expect(writes()).to.equal(0);
  });

  it('leaves changes to the holder: a node that does not hold the array names the one that does', async () => {
    const { host: node, writes } = host({ holder: false, partnerRoom: 1 << 20, ownRoom: 1 << 20 });
    expect(await refusal(new VolumeCatalog(node).create({ name: 'new', sizeBytes: 1 << 20 }))).to.equal('node a does not hold the shared array; node b does: volumes change there');
    expect(writes()).to.equal(0);
  });
});
