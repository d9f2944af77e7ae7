// Placing volumes (allocations) in the array's address space. Pure: the record in, the record out.
//
// Allocations start after the node-state region and on stripe boundaries, so no two allocations
// share a stripe: nodes that own different allocations then never update the same parity.
//
// Free space reads as zeros: a fresh array is zero, and a deleted volume's extent is zeroed before
// the record lets it go (volume-catalog.ts). So a new volume, or the tail a volume grows into, never
// shows another volume's old bytes, and nothing has to be written when space is handed out.
import { StorageError } from '../core/index.js';
import { randomUUID } from 'node:crypto';
import { NODE_STATE_REGION_BYTES, type Allocation, type ClusterRecord } from './node-state.js';

export interface VolumeRequest {
  name: string;
  sizeBytes: number;
  pageBytes: number;
  owner: string;
}

/** An online create also records what the config would otherwise say of the volume. */
export interface OnlineVolumeRequest extends VolumeRequest {
  readOnly: boolean;
  description: string;
}

export class AllocationError extends StorageError {
  override name = 'AllocationError';
}

/** One run of free array space, stripe-aligned at both ends. */
export interface Extent {
  offset: number;
  bytes: number;
}

/** Names a volume may have: an NBD export name that a shell, a URL and a log line take as it is. */
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** Where allocations may lie: from the first stripe after the node-state region to the last whole stripe. */
function usable(arrayBytes: number, stripeBytes: number): Extent {
  const offset = roundUp(NODE_STATE_REGION_BYTES, stripeBytes);
  const end = Math.floor(arrayBytes / stripeBytes) * stripeBytes;
  return { offset, bytes: Math.max(0, end - offset) };
}

/** The array's free space, in address order. An allocation takes whole stripes, its last one included. */
export function freeExtents(record: ClusterRecord, arrayBytes: number, stripeBytes: number): Extent[] {
  const { offset: start, bytes } = usable(arrayBytes, stripeBytes);
  const end = start + bytes;
  const taken = [...record.allocations].sort((a, b) => a.arrayOffset - b.arrayOffset);
  const free: Extent[] = [];
  let at = start;
  for (const allocation of taken) {
    if (allocation.arrayOffset > at) free.push({ offset: at, bytes: Math.min(allocation.arrayOffset, end) - at });
    at = Math.max(at, roundUp(allocation.arrayOffset + allocation.sizeBytes, stripeBytes));
  }
  if (end > at) free.push({ offset: at, bytes: end - at });
  return free.filter((extent) => extent.bytes > 0);
}

/** The lowest free extent that holds `sizeBytes`, or an error that says how much room there is. */
function firstFit(record: ClusterRecord, name: string, sizeBytes: number, arrayBytes: number, stripeBytes: number): number {
  const free = freeExtents(record, arrayBytes, stripeBytes);
  const fit = free.find((extent) => extent.bytes >= sizeBytes);
  if (fit) return fit.offset;
  const total = free.reduce((sum, extent) => sum + extent.bytes, 0);
  const largest = free.reduce((most, extent) => Math.max(most, extent.bytes), 0);
  throw new AllocationError(`volume ${name} (${sizeBytes} bytes) does not fit: ${total} bytes free in the array, at most ${largest} in one piece`);
}

/** The checks every new volume passes, whether the config or `ftvm volume create` asks for it. */
export function checkVolumeRequest(record: ClusterRecord, request: VolumeRequest): void {
  const { name, sizeBytes, pageBytes } = request;
  if (!VOLUME_NAME.test(name)) throw new AllocationError(`'${name}' is not a volume name: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit`);
  if (record.allocations.some((allocation) => allocation.name === name)) throw new AllocationError(`volume ${name} exists`);
  if (!Number.isSafeInteger(pageBytes) || pageBytes <= 0) throw new AllocationError(`volume ${name}: page size ${pageBytes} is not a positive number of bytes`);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % pageBytes !== 0) {
    throw new AllocationError(`volume ${name}: size ${sizeBytes} is not a positive whole number of ${pageBytes}-byte pages`);
  }
}

/**
 * Returns the record with an allocation for every requested volume: existing ones are checked
 * against the request (a config smaller than the array's volume was grown online and is fine; a
 * larger one is an error: nothing is resized silently), new ones are placed in the lowest free
 * extent that holds them. A volume deleted online (`record.deleted`) is not made again from the
 * config: it is returned in `deleted` for the caller to warn about. `newGuid` is injectable for tests.
 */
export function placeAllocations(
  record: ClusterRecord,
  requests: readonly VolumeRequest[],
  arrayBytes: number,
  stripeBytes: number,
  newGuid: () => string = randomUUID,
): { record: ClusterRecord; created: Allocation[]; deleted: string[] } {
  let current = record;
  const created: Allocation[] = [];
  const deleted: string[] = [];
  for (const request of requests) {
    const existing = current.allocations.find((allocation) => allocation.name === request.name);
    if (existing) {
      if (existing.sizeBytes < request.sizeBytes) {
        throw new AllocationError(`volume ${request.name} is ${existing.sizeBytes} bytes in the array but ${request.sizeBytes} in the config; grow it with 'ftvm volume resize', nothing is resized at start`);
      }
      continue;
    }
    if (current.deleted?.includes(request.name)) {
      deleted.push(request.name);
      continue;
    }
    const placed = placeAllocation(current, request, arrayBytes, stripeBytes, newGuid);
    current = placed.record;
    created.push(placed.allocation);
  }
  return { record: current, created, deleted };
}

/** One new volume in the lowest free extent that holds it; a name deleted before may be used again. */
export function placeAllocation(
  record: ClusterRecord,
  request: VolumeRequest & Partial<Pick<OnlineVolumeRequest, 'readOnly' | 'description'>> & { home?: string },
  arrayBytes: number,
  stripeBytes: number,
  newGuid: () => string = randomUUID,
): { record: ClusterRecord; allocation: Allocation } {
  checkVolumeRequest(record, request);
  const arrayOffset = firstFit(record, request.name, request.sizeBytes, arrayBytes, stripeBytes);
  const allocation: Allocation = { guid: newGuid(), name: request.name, arrayOffset, sizeBytes: request.sizeBytes, pageBytes: request.pageBytes, owner: request.owner };
  if (request.home !== undefined) allocation.home = request.home;
  if (request.readOnly) allocation.readOnly = true;
  if (request.description) allocation.description = request.description;
  const deleted = (record.deleted ?? []).filter((name) => name !== request.name);
  const next: ClusterRecord = { ...record, allocations: [...record.allocations, allocation] };
  if (deleted.length > 0) next.deleted = deleted;
  else delete next.deleted;
  return { record: next, allocation };
}

/** The volume grown in place to `sizeBytes`: the stripes after it must be free (they read zeros). */
export function growAllocation(record: ClusterRecord, name: string, sizeBytes: number, arrayBytes: number, stripeBytes: number): { record: ClusterRecord; allocation: Allocation } {
  const existing = liveAllocation(record, name);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes % existing.pageBytes !== 0) {
    throw new AllocationError(`volume ${name}: size ${sizeBytes} is not a whole number of ${existing.pageBytes}-byte pages`);
  }
  if (sizeBytes < existing.sizeBytes) throw new AllocationError(`volume ${name} is ${existing.sizeBytes} bytes: volumes only grow (shrinking would cut off what a filesystem may use)`);
  if (sizeBytes === existing.sizeBytes) return { record, allocation: existing };
  const others = { ...record, allocations: record.allocations.filter((allocation) => allocation.guid !== existing.guid) };
  const room = freeExtents(others, arrayBytes, stripeBytes).find((extent) => extent.offset <= existing.arrayOffset && existing.arrayOffset < extent.offset + extent.bytes);
  const roomBytes = room ? room.offset + room.bytes - existing.arrayOffset : 0;
  if (sizeBytes > roomBytes) {
    const next = others.allocations.filter((allocation) => allocation.arrayOffset > existing.arrayOffset).sort((a, b) => a.arrayOffset - b.arrayOffset)[0];
    const why = next ? `volume ${next.name} lies right after it` : 'the array ends there';
    throw new AllocationError(`volume ${name} can grow in place to at most ${roomBytes} bytes: ${why} (a volume is one extent; create a new volume and copy instead)`);
  }
  const allocation = { ...existing, sizeBytes };
  return { record: { ...record, allocations: record.allocations.map((candidate) => (candidate.guid === existing.guid ? allocation : candidate)) }, allocation };
}

/** The volume named, unless a delete of it is under way. */
export function liveAllocation(record: ClusterRecord, name: string): Allocation {
  const found = record.allocations.find((allocation) => allocation.name === name);
  if (!found) throw new AllocationError(`no volume ${name} (volumes: ${record.allocations.map((allocation) => allocation.name).join(', ') || 'none'})`);
  if (found.deleting) throw new AllocationError(`volume ${name} is being deleted; run 'ftvm volume delete ${name}' again to finish`);
  return found;
}

/** The first step of a delete: the volume is no longer served anywhere, its space not yet free. */
export function markDeleting(record: ClusterRecord, guid: string): ClusterRecord {
  return { ...record, allocations: record.allocations.map((allocation) => (allocation.guid === guid ? { ...allocation, deleting: true } : allocation)) };
}

/**
 * The last step of a delete, once its extent reads zeros: the space is free. A name the config
 * lists (`configured`) is remembered as deleted, so a restart does not make it again from there.
 */
export function dropAllocation(record: ClusterRecord, guid: string, configured: (name: string) => boolean): ClusterRecord {
  const gone = record.allocations.find((allocation) => allocation.guid === guid);
  const next: ClusterRecord = { ...record, allocations: record.allocations.filter((allocation) => allocation.guid !== guid) };
  if (gone && configured(gone.name)) next.deleted = [...new Set([...(record.deleted ?? []), gone.name])];
  return next;
}
