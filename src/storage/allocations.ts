// Placing volumes (allocations) in the array's address space. Pure: the record in, the record out.
//
// Allocations start after the node-state region and on stripe boundaries, so no two allocations
// share a stripe: nodes that own different allocations then never update the same parity.
import { StorageError } from '../core/index.js';
import { randomUUID } from 'node:crypto';
import { NODE_STATE_REGION_BYTES, type Allocation, type ClusterRecord } from './node-state.js';

export interface VolumeRequest {
  name: string;
  sizeBytes: number;
  pageBytes: number;
  owner: string;
}

export class AllocationError extends StorageError {
  override name = 'AllocationError';
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/**
 * Returns the record with an allocation for every requested volume: existing ones are checked
 * against the request (a different size is an error: nothing is resized silently), new ones are
 * placed after the last allocation. `newGuid` is injectable for tests.
 */
export function placeAllocations(
  record: ClusterRecord,
  requests: readonly VolumeRequest[],
  arrayBytes: number,
  stripeBytes: number,
  newGuid: () => string = randomUUID,
): { record: ClusterRecord; created: Allocation[] } {
  const allocations = [...record.allocations];
  const created: Allocation[] = [];
  let next = roundUp(
    allocations.reduce((end, allocation) => Math.max(end, allocation.arrayOffset + allocation.sizeBytes), NODE_STATE_REGION_BYTES),
    stripeBytes,
  );
  for (const request of requests) {
    const existing = allocations.find((allocation) => allocation.name === request.name);
    if (existing) {
      if (existing.sizeBytes !== request.sizeBytes) {
        throw new AllocationError(`volume ${request.name} is ${existing.sizeBytes} bytes in the array but ${request.sizeBytes} in the config; resizing is not supported`);
      }
      continue;
    }
    if (next + request.sizeBytes > arrayBytes) {
      throw new AllocationError(`volume ${request.name} (${request.sizeBytes} bytes) does not fit: ${Math.max(0, arrayBytes - next)} bytes free in the array`);
    }
    const allocation: Allocation = { guid: newGuid(), name: request.name, arrayOffset: next, sizeBytes: request.sizeBytes, pageBytes: request.pageBytes, owner: request.owner };
    allocations.push(allocation);
    created.push(allocation);
    next = roundUp(next + request.sizeBytes, stripeBytes);
  }
  return { record: { ...record, allocations }, created };
}
