import { expect } from 'chai';
import {
  AllocationError,
  dropAllocation,
  freeExtents,
  growAllocation,
  markDeleting,
  placeAllocation,
  placeAllocations,
  type ClusterRecord,
} from '../../../src/storage/index.js';

const MiB = 1024 * 1024;
const STRIPE = 128 * 1024;
/** 1 MiB node-state region, then 15 MiB for volumes. */
const ARRAY = 16 * MiB;

let guids = 0;
const newGuid = (): string => `00000000-0000-4000-8000-${String(++guids).padStart(12, '0')}`;

const empty = (): ClusterRecord => ({ cluster: 'c', allocations: [], nodes: ['a', 'b'] });
const request = (name: string, sizeBytes: number, owner = 'a') => ({ name, sizeBytes, pageBytes: 4096, owner });

describe('allocations', () => {
  beforeEach(() => {
    guids = 0;
  });

  it('places volumes one after another on stripe boundaries after the node-state region', () => {
    const { record, created } = placeAllocations(empty(), [request('v0', 3 * MiB), request('v1', 100 * 1024)], ARRAY, STRIPE, newGuid);
    expect(created.map((allocation) => [allocation.name, allocation.arrayOffset])).to.deep.equal([
      ['v0', 1 * MiB],
      ['v1', 4 * MiB],
    ]);
    // v1 takes its whole last stripe: the next free byte is the next stripe.
    expect(freeExtents(record, ARRAY, STRIPE)).to.deep.equal([{ offset: 4 * MiB + STRIPE, bytes: ARRAY - 4 * MiB - STRIPE }]);
  });

  it('puts a new volume in the lowest free extent that holds it, and says how much room there is when none does', () => {
    let { record } = placeAllocations(empty(), [request('v0', 2 * MiB), request('v1', 2 * MiB), request('v2', 2 * MiB)], ARRAY, STRIPE, newGuid);
    const v1 = record.allocations.find((allocation) => allocation.name === 'v1')!;
    record = dropAllocation(markDeleting(record, v1.guid), v1.guid, () => false);
    expect(freeExtents(record, ARRAY, STRIPE)).to.deep.equal([
      { offset: 3 * MiB, bytes: 2 * MiB },
      { offset: 7 * MiB, bytes: 9 * MiB },
    ]);
    const small = placeAllocation(record, request('small', 1 * MiB), ARRAY, STRIPE, newGuid);
    expect(small.allocation.arrayOffset).to.equal(3 * MiB);
    const large = placeAllocation(record, request('large', 3 * MiB), ARRAY, STRIPE, newGuid);
    expect(large.allocation.arrayOffset).to.equal(7 * MiB);
    expect(() => placeAllocation(record, request('huge', 10 * MiB), ARRAY, STRIPE, newGuid)).to.throw(AllocationError, /11534336 bytes free in the array, at most 9437184 in one piece/);
  });

  it('refuses a taken name, a bad name, and a size that is not whole pages, changing nothing', () => {
    const { record } = placeAllocations(empty(), [request('v0', 1 * MiB)], ARRAY, STRIPE, newGuid);
    const before = JSON.stringify(record);
    expect(() => placeAllocation(record, request('v0', 1 * MiB), ARRAY, STRIPE, newGuid)).to.throw(AllocationError, /volume v0 exists/);
    expect(() => placeAllocation(record, request('../x', 1 * MiB), ARRAY, STRIPE, newGuid)).to.throw(AllocationError, /not a volume name/);
    expect(() => placeAllocation(record, { ...request('v1', 1 * MiB), pageBytes: 3 * 4096 }, ARRAY, STRIPE, newGuid)).to.throw(AllocationError, /whole number of 12288-byte pages/);
    expect(JSON.stringify(record)).to.equal(before);
  });

  it('grows a volume in place into the free stripes after it, never into its neighbour, never smaller', () => {
    const { record } = placeAllocations(empty(), [request('v0', 1 * MiB), request('v1', 1 * MiB)], ARRAY, STRIPE, newGuid);
    expect(() => growAllocation(record, 'v0', 2 * MiB, ARRAY, STRIPE)).to.throw(AllocationError, /at most 1048576 bytes: volume v1 lies right after it/);
    expect(() => growAllocation(record, 'v1', 512 * 1024, ARRAY, STRIPE)).to.throw(AllocationError, /only grow/);
    expect(() => growAllocation(record, 'v1', 15 * MiB, ARRAY, STRIPE)).to.throw(AllocationError, /at most 14680064 bytes: the array ends there/);
    const grown = growAllocation(record, 'v1', 14 * MiB, ARRAY, STRIPE);
    expect(grown.allocation).to.include({ name: 'v1', arrayOffset: 2 * MiB, sizeBytes: 14 * MiB });
    expect(grown.record.allocations.find((allocation) => allocation.name === 'v0')?.sizeBytes).to.equal(1 * MiB);
    expect(freeExtents(grown.record, ARRAY, STRIPE)).to.deep.equal([]);
  });

  it('keeps a volume being deleted out of reach but its space taken until it is dropped', () => {
    const { record } = placeAllocations(empty(), [request('v0', 1 * MiB)], ARRAY, STRIPE, newGuid);
    const guid = record.allocations[0]!.guid;
    const deleting = markDeleting(record, guid);
    expect(() => growAllocation(deleting, 'v0', 2 * MiB, ARRAY, STRIPE)).to.throw(AllocationError, /being deleted/);
    expect(placeAllocation(deleting, request('next', 1 * MiB), ARRAY, STRIPE, newGuid).allocation.arrayOffset).to.equal(2 * MiB);
    expect(dropAllocation(deleting, guid, () => false).allocations).to.deep.equal([]);
  });

  it('remembers a config volume deleted online so a start does not make it again, until a volume of that name is made', () => {
    const { record } = placeAllocations(empty(), [request('v0', 1 * MiB), request('v1', 1 * MiB)], ARRAY, STRIPE, newGuid);
    const v0 = record.allocations[0]!;
    const dropped = dropAllocation(record, v0.guid, (name) => name === 'v0');
    expect(dropped.deleted).to.deep.equal(['v0']);
    const restart = placeAllocations(dropped, [request('v0', 1 * MiB), request('v1', 1 * MiB)], ARRAY, STRIPE, newGuid);
    expect(restart.created).to.deep.equal([]);
    expect(restart.deleted).to.deep.equal(['v0']);
    const remade = placeAllocation(dropped, request('v0', 1 * MiB), ARRAY, STRIPE, newGuid);
    expect(remade.record.deleted).to.equal(undefined);
    // Not in the config: forgotten at once.
    expect(dropAllocation(record, v0.guid, () => false).deleted).to.equal(undefined);
  });

  it('accepts a config smaller than a volume grown online, refuses a larger one', () => {
    const { record } = placeAllocations(empty(), [request('v0', 1 * MiB)], ARRAY, STRIPE, newGuid);
    const grown = growAllocation(record, 'v0', 4 * MiB, ARRAY, STRIPE).record;
    expect(placeAllocations(grown, [request('v0', 1 * MiB)], ARRAY, STRIPE, newGuid).created).to.deep.equal([]);
    expect(() => placeAllocations(grown, [request('v0', 8 * MiB)], ARRAY, STRIPE, newGuid)).to.throw(AllocationError, /ftvm volume resize/);
  });
});
