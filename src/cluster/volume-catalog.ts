// The volumes a cluster exports, changed while it runs: `ftvm volume create|resize|delete|list`.
//
// The cluster record on the shared disks is the catalog; the array holder alone writes it, and
// always before it tells anyone (a crash then leaves a record that every start follows):
//
//   create   every node linked; a space request to each (Fig. 5: room for at least one page), the
//            allocation placed in the lowest free extent, the record written; then catalog change to
//            the owner, which creates the allocation and announces it to its partners (allocate
//            memory, Fig. 5) before it exports it; then to every other node, which forwards to it
//   resize   grow only, in place (the stripes after the volume must be free); the record, then catalog
//            change to the owner and the others; clients see the new size when they reconnect
//   delete   volume removal asked of every node (Locked if a client has it open, unless --force); the
//            record marks it deleting; removal committed on every node, the owner last (Fig. 9: its
//            pages on the disks, frames freed, partners' structures dismantled); its extent zeroed
//            (free space reads zeros); the record lets the space go
//
// Each node applies the same steps to its own exports (add, grow, remove), from its start (the
// record) or from the holder's messages.
import type { Clock } from '../core/index.js';
import { defaultPageSize, formatSize, isValidPageSize, MAX_PAGE_SIZE_BYTES, MIN_PAGE_SIZE_BYTES, VOLUME_SIZE_ALIGNMENT_BYTES, type ClusterConfig } from '../config/index.js';
import type { LinkReplicator, MemoryManager, FramePool, ResyncStage } from '../memory/index.js';
import type { Exports, NbdServer } from '../nbd/index.js';
import type { ClusterEvents, Logger } from '../observe/index.js';
import { commandComplete, MessageType, Status, type CatalogMessage, type Message, type PartnerLink } from '../partner/index.js';
import {
  AllocationError,
  dropAllocation,
  growAllocation,
  liveAllocation,
  markDeleting,
  NodeStateStore,
  placeAllocation,
  stripeDataBytes,
  type Allocation,
  type BlockStore,
  type ClusterRecord,
  type StorageStack,
} from '../storage/index.js';
import { describe } from './remote-array.js';
import type { Served, ServedVolumes } from './served-volumes.js';
import { DEFAULT_RETRY_MS, VolumeSwitch } from './volume-switch.js';

/** Zeros go to the disks in pieces of this, each synced, so a delete does not fill the destage queue. */
const ZERO_PIECE_BYTES = 8 * 1024 * 1024;

/** What `ftvm volume list` shows of one volume. */
export interface VolumeInfo {
  name: string;
  sizeBytes: number;
  pageBytes: number;
  /** Who serves it now, and where it goes back to. */
  owner: string;
  home: string;
  readOnly: boolean;
  description: string;
  /** From the config file, or made online. */
  origin: 'config' | 'online';
  /** 'deleting' when a delete was interrupted (run it again). */
  state: 'ok' | 'deleting';
  arrayOffset: number;
}

export interface CreateRequest {
  name: string;
  sizeBytes: number;
  pageBytes?: number;
  owner?: string;
  readOnly?: boolean;
  description?: string;
}

/** The node a catalog change is asked of does not hold the array: ask that one. */
export class NotHolderError extends AllocationError {
  override name = 'NotHolderError';
}

/** What the catalog sees of its node. */
export interface CatalogHost {
  nodeId: number;
  config: ClusterConfig;
  volumes: ServedVolumes;
  exports: Exports;
  server: NbdServer | null;
  manager: MemoryManager;
  replicator: LinkReplicator;
  pool: FramePool;
  stage: ResyncStage;
  clock: Clock;
  logger: Logger;
  events: ClusterEvents;
  /** This node's epoch now; a message from an older one is refused. */
  epoch(): number;
  /** This node may acknowledge (holds its lease). */
  holdsLease(): boolean;
  name(nodeId: number): string;
  holderId(): number;
  /** The array, when this node holds it. */
  stack(): StorageStack | null;
  /** Where the record is read from: the array itself on the holder, through the holder elsewhere. */
  arrayAccess(): BlockStore;
  record(): ClusterRecord;
  setRecord(record: ClusterRecord): void;
  /** Runs `change` with no other writer of the record (the ownership loop writes owners). */
  withRecord<T>(change: () => Promise<T>): Promise<T>;
  link(nodeId: number): PartnerLink | null;
}

export class VolumeCatalog {
  /** Catalog changes run one at a time on the holder. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly node: CatalogHost) {}

  // ---- every node: its own exports ----

  /** What the config says of a volume it lists, else what the record says (made online). */
  private settings(allocation: Allocation): { home: string; pageBytes: number; readOnly: boolean; description: string; tlsIdentities?: string[]; origin: 'config' | 'online' } {
    const configured = this.node.config.volumes.find((volume) => volume.name === allocation.name);
    if (configured) {
      return {
        home: configured.owner ?? allocation.owner,
        pageBytes: configured.pageSize ?? allocation.pageBytes,
        readOnly: configured.readOnly,
        description: configured.description,
        ...(configured.tlsIdentities ? { tlsIdentities: configured.tlsIdentities } : {}),
        origin: 'config',
      };
    }
    return { home: allocation.home ?? allocation.owner, pageBytes: allocation.pageBytes, readOnly: allocation.readOnly ?? false, description: allocation.description ?? '', origin: 'online' };
  }

  /**
   * Exports `allocation`, forwarding to `ownerId`; when that is this node (and `ownNow`: a start
   * owns later, once the holder has reclaimed), it serves it from its memory manager, announced to
   * every partner first (Fig. 5), so no forwarded request reaches it before it knows the allocation.
   */
  async add(allocation: Allocation, ownerId: number, ownNow = true): Promise<Served> {
    const { node } = this;
    const settings = this.settings(allocation);
    const homeId = node.config.nodes.findIndex((candidate) => candidate.name === settings.home);
    const first = node.volumes.forwarder({ allocation }, ownerId);
    const entry: Served = {
      allocation,
      pageBytes: settings.pageBytes,
      switch: new VolumeSwitch(allocation.name, allocation.sizeBytes, first, () => node.holdsLease(), DEFAULT_RETRY_MS, node.clock),
      memory: null,
      ownerId,
      homeId: homeId >= 0 ? homeId : ownerId,
      moving: '',
      readOnly: settings.readOnly,
    };
    node.volumes.entries.set(allocation.guid, entry);
    if (ownNow && ownerId === node.nodeId) {
      node.volumes.own(entry);
      await node.replicator.confirmAllocation(allocation.guid);
    }
    node.exports.add({ name: allocation.name, description: settings.description, volume: entry.switch, readOnly: settings.readOnly, ...(settings.tlsIdentities ? { tlsIdentities: settings.tlsIdentities } : {}) });
    return entry;
  }

  /** The volume grew in the record: the owner's allocation first (and its partners' shapes), then the export's size. */
  async grow(entry: Served, allocation: Allocation): Promise<void> {
    if (allocation.sizeBytes <= entry.allocation.sizeBytes) return;
    entry.allocation = allocation;
    if (entry.memory) {
      this.node.manager.growAllocation(allocation.guid, allocation.sizeBytes);
      entry.memory.sizeBytes = allocation.sizeBytes;
      await this.node.replicator.confirmAllocation(allocation.guid);
    }
    entry.switch.resize(allocation.sizeBytes);
    this.node.logger.info(`volume ${allocation.name} is ${formatSize(allocation.sizeBytes)} now: clients see it when they reconnect`);
  }

  /** The export goes, its clients cut off; on the owner, Fig. 9 once the requests running have drained. */
  async remove(entry: Served): Promise<void> {
    const { node } = this;
    const { name, guid } = entry.allocation;
    node.exports.remove(name);
    node.server?.dropExport(name, `volume ${name} was deleted`);
    entry.switch.pause();
    await entry.switch.drain();
    node.volumes.entries.delete(guid);
    node.stage.invalidate(guid);
    if (entry.memory) await node.volumes.release(entry);
    node.logger.info(`volume ${name} is no longer exported here`);
  }

  /** Clients of volume `name` on this node. */
  private clients(name: string): number {
    return this.node.server?.connectionsTo(name) ?? 0;
  }

  /** The holder's messages about volumes made, grown and deleted online. */
  async onMessage(message: CatalogMessage): Promise<Message> {
    const { node } = this;
    if (message.epoch < node.epoch()) return commandComplete(message, Status.StaleEpoch);
    try {
      if (message.type === MessageType.CatalogChange) return commandComplete(message, await this.apply(message.allocation));
      const entry = node.volumes.entries.get(message.allocation);
      if (!entry) return commandComplete(message, Status.Ok);
      if (this.clients(entry.allocation.name) > 0 && !message.force) return commandComplete(message, Status.Locked);
      if (message.commit) await this.remove(entry);
      return commandComplete(message, Status.Ok);
    } catch (error) {
      node.logger.error(`volume catalog: ${(error as Error).message}`);
      return commandComplete(message, Status.IoError);
    }
  }

  /** Reads the record again and exports what it says of `guid` (made: added; grown: grown). */
  private async apply(guid: string): Promise<Status> {
    const { node } = this;
    const record = node.stack() ? node.record() : await new NodeStateStore(node.arrayAccess()).readClusterRecord();
    if (!record) return Status.Invalid;
    node.setRecord(record);
    const allocation = record.allocations.find((candidate) => candidate.guid === guid);
    if (!allocation || allocation.deleting) return Status.UnknownAllocation;
    const entry = node.volumes.entries.get(guid);
    if (entry) {
      await this.grow(entry, allocation);
      return Status.Ok;
    }
    const ownerId = node.config.nodes.findIndex((candidate) => candidate.name === allocation.owner);
    if (ownerId < 0) return Status.Invalid;
    await this.add(allocation, ownerId);
    node.logger.info(`volume ${allocation.name} (${formatSize(allocation.sizeBytes)}) is exported here, served by node ${allocation.owner}`);
    return Status.Ok;
  }

  /**
   * A node that took the array over: what the record holds and this node does not export yet (a
   * holder died between writing the record and telling it) is added, forwarding to its owner; what
   * is being deleted is removed.
   */
  async reconcile(record: ClusterRecord): Promise<void> {
    const { node } = this;
    for (const allocation of record.allocations) {
      const entry = node.volumes.entries.get(allocation.guid);
      if (allocation.deleting) {
        if (entry) await this.remove(entry);
        continue;
      }
      if (entry) {
        await this.grow(entry, allocation);
        continue;
      }
      const ownerId = node.config.nodes.findIndex((candidate) => candidate.name === allocation.owner);
      await this.add(allocation, ownerId >= 0 && ownerId !== node.nodeId ? ownerId : node.nodeId);
    }
  }

  // ---- the holder: the catalog itself ----

  list(): VolumeInfo[] {
    const { node } = this;
    return node.record().allocations.map((allocation) => {
      const settings = this.settings(allocation);
      const entry = node.volumes.entries.get(allocation.guid);
      return {
        name: allocation.name,
        sizeBytes: allocation.sizeBytes,
        pageBytes: settings.pageBytes,
        owner: entry ? node.name(entry.ownerId) : allocation.owner,
        home: settings.home,
        readOnly: settings.readOnly,
        description: settings.description,
        origin: settings.origin,
        state: allocation.deleting ? 'deleting' : 'ok',
        arrayOffset: allocation.arrayOffset,
      };
    });
  }

  create(request: CreateRequest): Promise<VolumeInfo> {
    return this.serially(async () => {
      const { node } = this;
      const stack = this.holding();
      const pageBytes = request.pageBytes ?? defaultPageSize(request.sizeBytes);
      checkShape(request.name, request.sizeBytes, pageBytes);
      // The memory manager's dirty limit is counted in pages of the config's largest page size:
      // larger pages would let more dirty bytes wait for destage than a failover can afford.
      const largest = Math.max(...node.config.volumes.map((volume) => volume.pageSize));
      if (pageBytes > largest) throw new AllocationError(`volume ${request.name}: page size ${formatSize(pageBytes)} is larger than any config volume's (${formatSize(largest)}), for which this cluster's dirty limit is set; give --page-size ${formatSize(largest)} or less`);
      const owner = request.owner ?? node.name(node.nodeId);
      const ownerId = node.config.nodes.findIndex((candidate) => candidate.name === owner);
      if (ownerId < 0) throw new AllocationError(`'${owner}' is not a node (nodes: ${node.config.nodes.map((candidate) => candidate.name).join(', ')})`);
      const links = this.everyPartner('create a volume');
      await this.roomForAPage(links, pageBytes);
      const allocation = await node.withRecord(async () => {
        const placed = placeAllocation(
          node.record(),
          { name: request.name, sizeBytes: request.sizeBytes, pageBytes, owner, home: owner, readOnly: request.readOnly ?? false, description: request.description ?? '' },
          stack.sizeBytes,
          stripeDataBytes(stack.array.geometry),
        );
        await this.write(stack, placed.record);
        return placed.allocation;
      });
      node.logger.info(`volume ${allocation.name} created: ${formatSize(allocation.sizeBytes)} at array offset ${allocation.arrayOffset}, owner ${owner}`);
      await this.tellEveryNode(allocation, ownerId, links);
      node.events.emit({ kind: 'volume', action: 'created', volume: allocation.name, sizeBytes: allocation.sizeBytes });
      return this.info(allocation.name);
    });
  }

  resize(name: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.serially(async () => {
      const { node } = this;
      const stack = this.holding();
      const links = this.everyPartner('resize a volume');
      const current = liveAllocation(node.record(), name);
      if (sizeBytes % VOLUME_SIZE_ALIGNMENT_BYTES !== 0) throw new AllocationError(`volume ${name}: size ${sizeBytes} is not a multiple of ${VOLUME_SIZE_ALIGNMENT_BYTES} bytes`);
      if (this.moving(current.guid)) throw new AllocationError(`volume ${name} is moving between nodes; try again in a moment`);
      const allocation = await node.withRecord(async () => {
        const grown = growAllocation(node.record(), name, sizeBytes, stack.sizeBytes, stripeDataBytes(stack.array.geometry));
        if (grown.record !== node.record()) await this.write(stack, grown.record);
        return grown.allocation;
      });
      if (allocation.sizeBytes !== current.sizeBytes) {
        const ownerId = node.volumes.entries.get(allocation.guid)?.ownerId ?? node.nodeId;
        await this.tellEveryNode(allocation, ownerId, links);
        node.events.emit({ kind: 'volume', action: 'resized', volume: name, sizeBytes });
      }
      return this.info(name);
    });
  }

  delete(name: string, force: boolean, onProgress: (doneBytes: number, totalBytes: number) => void = () => undefined): Promise<void> {
    return this.serially(async () => {
      const { node } = this;
      const stack = this.holding();
      const links = this.everyPartner('delete a volume');
      let allocation = node.record().allocations.find((candidate) => candidate.name === name);
      if (!allocation) throw new AllocationError(`no volume ${name} (volumes: ${node.record().allocations.map((candidate) => candidate.name).join(', ') || 'none'})`);
      const guid = allocation.guid;
      if (!allocation.deleting) {
        if (this.moving(guid)) throw new AllocationError(`volume ${name} is moving between nodes; try again in a moment`);
        // Asked first, everywhere: a refusal must leave the volume as it was.
        const busy: string[] = [];
        if (this.clients(name) > 0) busy.push(`${node.name(node.nodeId)} (${this.clients(name)})`);
        for (const link of links) {
          const answer = await link.request({ type: MessageType.VolumeRemoval, allocation: guid, epoch: node.epoch(), commit: false, force: false });
          if (answer.type === MessageType.CommandComplete && answer.status === Status.Locked) busy.push(node.name(link.peer.nodeId));
          else expectOk(answer, `node ${node.name(link.peer.nodeId)}`);
        }
        if (busy.length > 0 && !force) throw new AllocationError(`volume ${name} is open by NBD clients on ${busy.join(', ')}: disconnect them, or delete with --force to cut them off`);
        await node.withRecord(async () => this.write(stack, markDeleting(node.record(), guid)));
        node.logger.warn(`volume ${name} is being deleted: no node serves it from now on`);
      }
      const entry = node.volumes.entries.get(guid);
      const ownerId = entry?.ownerId ?? node.nodeId;
      // The owner last: the others forward to it until they have let go.
      const order = [...links].sort((a, b) => Number(a.peer.nodeId === ownerId) - Number(b.peer.nodeId === ownerId));
      if (ownerId !== node.nodeId && entry) await this.remove(entry);
      for (const link of order) {
        expectOk(await link.request({ type: MessageType.VolumeRemoval, allocation: guid, epoch: node.epoch(), commit: true, force: true }), `node ${node.name(link.peer.nodeId)}`);
      }
      const left = node.volumes.entries.get(guid);
      if (left) await this.remove(left);
      allocation = node.record().allocations.find((candidate) => candidate.guid === guid) ?? allocation;
      await zero(stack, allocation.arrayOffset, allocation.sizeBytes, onProgress);
      await node.withRecord(async () => this.write(stack, dropAllocation(node.record(), guid, (volume) => node.config.volumes.some((configured) => configured.name === volume))));
      node.logger.warn(`volume ${name} deleted: ${formatSize(allocation.sizeBytes)} of the array are free again`);
      node.events.emit({ kind: 'volume', action: 'deleted', volume: name, sizeBytes: allocation.sizeBytes });
    });
  }

  private info(name: string): VolumeInfo {
    const found = this.list().find((volume) => volume.name === name);
    if (!found) throw new AllocationError(`no volume ${name}`);
    return found;
  }

  private serially<T>(change: () => Promise<T>): Promise<T> {
    const run = this.queue.then(change, change);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private holding(): StorageStack {
    const stack = this.node.stack();
    if (!stack) throw new NotHolderError(`node ${this.node.name(this.node.nodeId)} does not hold the shared array; node ${this.node.name(this.node.holderId())} does: volumes change there`);
    return stack;
  }

  private moving(guid: string): boolean {
    const entry = this.node.volumes.entries.get(guid);
    return entry !== undefined && entry.moving !== '';
  }

  /** Every other node, linked: a node that is away would come back exporting another catalog. */
  private everyPartner(what: string): PartnerLink[] {
    const { node } = this;
    const links: PartnerLink[] = [];
    node.config.nodes.forEach((_, index) => {
      if (index === node.nodeId) return;
      const link = node.link(index);
      if (!link) throw new AllocationError(`node ${node.name(index)} is unreachable: every node must be up and linked to ${what}`);
      links.push(link);
    });
    return links;
  }

  /** Fig. 5's space request, on this node and every partner: room (free or reclaimable) for at least one page. */
  private async roomForAPage(links: readonly PartnerLink[], pageBytes: number): Promise<void> {
    const { node } = this;
    const here = node.pool.freeBytes + node.manager.reclaimableBytes;
    if (here < pageBytes) throw new AllocationError(`node ${node.name(node.nodeId)} has no room in memory for a ${pageBytes}-byte page (${here} bytes free or reclaimable)`);
    for (const link of links) {
      const answer = await link.request({ type: MessageType.SpaceRequest, bytesWanted: pageBytes });
      if (answer.type !== MessageType.SpaceStatus) throw new AllocationError(`node ${node.name(link.peer.nodeId)} did not answer the space request (${describe(answer)})`);
      if (answer.freeBytes + answer.reclaimableBytes < pageBytes) {
        throw new AllocationError(`node ${node.name(link.peer.nodeId)} has no room in memory for a ${pageBytes}-byte page (${answer.freeBytes + answer.reclaimableBytes} bytes free or reclaimable)`);
      }
    }
  }

  /** Catalog change: the owner first (it creates the allocation), then every other node. */
  private async tellEveryNode(allocation: Allocation, ownerId: number, links: readonly PartnerLink[]): Promise<void> {
    const { node } = this;
    const tell = async (nodeId: number): Promise<void> => {
      if (nodeId === node.nodeId) {
        const status = await this.apply(allocation.guid);
        if (status !== Status.Ok) throw new AllocationError(`this node could not export volume ${allocation.name} (status ${status})`);
        return;
      }
      const link = links.find((candidate) => candidate.peer.nodeId === nodeId);
      if (!link) throw new AllocationError(`node ${node.name(nodeId)} is unreachable`);
      expectOk(await link.request({ type: MessageType.CatalogChange, allocation: allocation.guid, epoch: node.epoch() }), `node ${node.name(nodeId)}`);
    };
    await tell(ownerId);
    for (let nodeId = 0; nodeId < node.config.nodes.length; nodeId++) if (nodeId !== ownerId) await tell(nodeId);
  }

  private async write(stack: StorageStack, record: ClusterRecord): Promise<void> {
    await new NodeStateStore(stack).writeClusterRecord(record);
    this.node.setRecord(record);
  }
}

/** Size and page size of a new volume, with the reasons a config entry would give. */
function checkShape(name: string, sizeBytes: number, pageBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % VOLUME_SIZE_ALIGNMENT_BYTES !== 0) {
    throw new AllocationError(`volume ${name}: size must be a positive multiple of ${VOLUME_SIZE_ALIGNMENT_BYTES} bytes`);
  }
  if (!isValidPageSize(pageBytes)) {
    throw new AllocationError(`volume ${name}: page size must be a power of two from ${formatSize(MIN_PAGE_SIZE_BYTES)} to ${formatSize(MAX_PAGE_SIZE_BYTES)}`);
  }
  if (sizeBytes % pageBytes !== 0) throw new AllocationError(`volume ${name}: page size ${formatSize(pageBytes)} must divide the size ${formatSize(sizeBytes)}`);
}

function expectOk(answer: Message, who: string): void {
  if (answer.type === MessageType.CommandComplete && answer.status === Status.Ok) return;
  throw new AllocationError(`${who} answered ${describe(answer)}`);
}

/** Writes zeros over a deleted volume's extent, piece by piece, each piece synced. */
async function zero(stack: StorageStack, offset: number, sizeBytes: number, onProgress: (doneBytes: number, totalBytes: number) => void): Promise<void> {
  const zeros = Buffer.alloc(Math.min(ZERO_PIECE_BYTES, sizeBytes));
  for (let done = 0; done < sizeBytes; ) {
    const length = Math.min(zeros.length, sizeBytes - done);
    stack.enqueueBlocks(offset + done, zeros.subarray(0, length));
    await stack.flush();
    done += length;
    onProgress(done, sizeBytes);
  }
}
