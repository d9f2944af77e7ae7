// The shared array as one node holds it: whether this node has it open (the array holder), which
// node does otherwise, and the cluster record on it (who owns each volume, where it lies).
//
// Exactly one running node has the member files open; the others page in and destage through it
// (remote-array.ts, behind array-access.ts). The holder alone writes the cluster record, and its
// member writes and syncs are refused once this node's lease has run out (fencedMember): a node
// that may have been taken over writes nothing to the disks.
import { ClusterError, sleep, type Clock } from '../core/index.js';
import type { ClusterConfig } from '../config/index.js';
import type { Logger } from '../observe/index.js';
import {
  assembleArray,
  WriteRefusedError,
  NodeStateStore,
  placeAllocations,
  StorageStack,
  stripeDataBytes,
  DEFAULT_STACK_OPTIONS,
  type BlockStore,
  type ClusterRecord,
  type MemberDevice,
} from '../storage/index.js';
import type { LeaseKeeper } from './lease.js';

/** How long a joining node waits for a holder that is still assembling the array (a resync may run). */
const HOLDER_READY_WAIT_MS = 120_000;
const RECORD_RETRY_MS = 100;

/** Assembles the array; member writes and syncs are refused once this node's lease has run out. */
export async function openArray(
  config: ClusterConfig,
  leases: LeaseKeeper,
  openMember: (path: string) => Promise<MemberDevice>,
  /** Record this node as the holder beside the members, for offline commands (holder-claims). */
  claimMembers: boolean,
  clock: Clock,
  logger: Logger,
): Promise<StorageStack> {
  const open = async (path: string): Promise<MemberDevice> => fencedMember(await openMember(path), leases);
  const holder = config.nodes[leases.slot]?.name ?? String(leases.slot);
  const array = await assembleArray(config.storage.members, { logger, now: () => clock.wallNow() }, open, claimMembers ? { holder } : {});
  if (array.geometry.level !== config.storage.level) {
    await array.stop();
    throw new Error(`the member files hold a ${array.geometry.level} array, the config says ${config.storage.level}`);
  }
  return new StorageStack(array, { ...DEFAULT_STACK_OPTIONS, capacityBytes: config.storage.cache, readAheadBytes: config.storage.readAhead });
}

/** The node taken for the holder while starting no longer holds the array: look for it again. */
export class HolderMovedError extends ClusterError {
  override name = 'HolderMovedError';
}

/**
 * The cluster record; the holder places allocations for configured volumes the array lacks. A
 * member reads it through the holder, which answers array reads only once it is ready (it may be
 * assembling the array, a resync included): it waits for that, unless `stillHolder` says the node
 * it asks holds the array no more (it died and another took it over meanwhile).
 */
export async function readClusterRecord(
  config: ClusterConfig,
  device: BlockStore,
  stack: StorageStack | null,
  clock: Clock,
  logger: Logger,
  stillHolder: () => Promise<boolean> = async () => true,
): Promise<ClusterRecord> {
  const store = new NodeStateStore(device);
  let found: ClusterRecord | null;
  for (const deadline = clock.now() + HOLDER_READY_WAIT_MS; ; ) {
    try {
      found = await store.readClusterRecord();
      break;
    } catch (error) {
      if (stack || clock.now() > deadline) throw error;
      if (!(await stillHolder())) throw new HolderMovedError(`the node taken for the array holder holds it no more (${(error as Error).message})`);
      await sleep(clock, RECORD_RETRY_MS);
    }
  }
  if (found && found.cluster !== config.cluster) {
    throw new Error(`the array belongs to cluster '${found.cluster}', the config names '${config.cluster}'`);
  }
  if (!stack) {
    if (!found) throw new Error('the array holder has not written the cluster record yet');
    return found;
  }
  const current = found ?? { cluster: config.cluster, allocations: [], nodes: config.nodes.map((node) => node.name) };
  const requests = config.volumes.map((volume) => ({ name: volume.name, sizeBytes: volume.size, pageBytes: volume.pageSize, owner: volume.owner }));
  const { record, created } = placeAllocations(current, requests, stack.sizeBytes, stripeDataBytes(stack.array.geometry));
  if (created.length > 0 || !found) {
    await store.writeClusterRecord(record);
    for (const allocation of created) logger.info(`allocated volume ${allocation.name}: ${allocation.sizeBytes} bytes at array offset ${allocation.arrayOffset}`);
  }
  return record;
}

/**
 * The holder's record of owners: re-read before each write (the record may have been written by a
 * previous holder since this node read it), with the owners this node decided put in.
 */
export async function writeOwners(stack: StorageStack, fallback: ClusterRecord, ownerOf: (guid: string) => string | undefined): Promise<ClusterRecord> {
  const store = new NodeStateStore(stack);
  const current = (await store.readClusterRecord()) ?? fallback;
  const allocations = current.allocations.map((allocation) => {
    const owner = ownerOf(allocation.guid);
    return owner !== undefined ? { ...allocation, owner } : allocation;
  });
  const record = { ...current, allocations };
  await store.writeClusterRecord(record);
  return record;
}

/** A member whose writes and syncs are refused once this node's lease has run out (it may be taken over). */
function fencedMember(member: MemberDevice, leases: LeaseKeeper): MemberDevice {
  const refuse = (): Promise<never> => Promise.reject(new WriteRefusedError(`${member.path}: not written: this node's lease has run out`));
  return {
    path: member.path,
    read: (offset, into) => member.read(offset, into),
    write: (offset, data) => (leases.holds() ? member.write(offset, data) : refuse()),
    ...(member.writev ? { writev: (offset: number, pieces: readonly Buffer[]) => (leases.holds() ? (member.writev as NonNullable<MemberDevice['writev']>).call(member, offset, pieces) : refuse()) } : {}),
    sync: () => (leases.holds() ? member.sync() : refuse()),
    sizeBytes: () => member.sizeBytes(),
    close: () => member.close(),
  };
}
