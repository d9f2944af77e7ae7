// The shared array as one node holds it: whether this node has it open (the array holder), which
// node does otherwise, and the cluster record on it (who owns each volume, where it lies).
//
// Exactly one running node has the member files open; the others page in and destage through it
// (remote-array.ts, behind array-access.ts). The holder alone writes the cluster record, and its
// member writes and syncs are refused once this node's lease has run out (fencedMember): a node
// that may have been taken over writes nothing to the disks.
import { ClusterError, sleep, type Clock } from '../core/index.js';
import type { ClusterConfig } from '../config/index.js';
import type { ClusterEvents, Logger } from '../observe/index.js';
import type { RunningOperation } from './control.js';
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
  /** The resync of an array that was not stopped cleanly moved on (see ArrayResync). */
  onResyncProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<StorageStack> {
  const open = async (path: string): Promise<MemberDevice> => fencedMember(await openMember(path), leases);
  const holder = config.nodes[leases.slot]?.name ?? String(leases.slot);
  // The resync of an unclean stop runs behind I/O: a node taking the array over serves at once.
  const options = { ...(claimMembers ? { holder } : {}), ...(onResyncProgress ? { onResyncProgress } : {}), resyncBehindIo: true };
  const array = await assembleArray(config.storage.members, { logger, now: () => clock.wallNow() }, open, options);
  if (array.geometry.level !== config.storage.level) {
    await array.stop();
    throw new Error(`the member files hold a ${array.geometry.level} array, the config says ${config.storage.level}`);
  }
  return new StorageStack(array, { ...DEFAULT_STACK_OPTIONS, capacityBytes: config.storage.cache, readAheadBytes: config.storage.readAhead });
}

/** Events at most this often while an array resyncs (and at its end). */
const RESYNC_EVENT_INTERVAL_MS = 200;

/**
 * The resync an array needs after an unclean stop, as the node opening it reports it: `ftvm status`
 * (running: array-resync, %, rate, ETA), the progress metric, and progress events.
 */
export class ArrayResync {
  private running: { doneBytes: number; totalBytes: number; startedMs: number } | null = null;
  private lastEventMs = -Infinity;

  constructor(
    private readonly clock: Clock,
    private readonly events: ClusterEvents,
    private readonly logger: Logger,
  ) {}

  readonly onProgress = (doneBytes: number, totalBytes: number): void => {
    // Unclean, but no region was dirty: nothing to resync, nothing to say.
    if (totalBytes === 0) return;
    const now = this.clock.now();
    if (!this.running) this.running = { doneBytes, totalBytes, startedMs: now };
    this.running.doneBytes = doneBytes;
    this.running.totalBytes = totalBytes;
    const finished = doneBytes >= totalBytes;
    if (now - this.lastEventMs >= RESYNC_EVENT_INTERVAL_MS || finished) {
      this.lastEventMs = now;
      this.events.emit({ kind: 'progress', operation: 'array-resync', doneBytes, totalBytes });
    }
    if (finished) {
      this.logger.info(`array resync after an unclean stop done: ${(totalBytes / 1048576).toFixed(1)} MiB in ${((now - this.running.startedMs) / 1000).toFixed(1)} s`);
      this.running = null;
    }
  };

  /** The resync running now, as far as it got; null when none runs. */
  get operation(): RunningOperation | null {
    const running = this.running;
    if (!running) return null;
    return { operation: 'array-resync', doneBytes: running.doneBytes, totalBytes: running.totalBytes, elapsedMs: Math.round(this.clock.now() - running.startedMs) };
  }
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
