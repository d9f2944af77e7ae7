// One node process of a cluster:
//
//   partner links   listener + reconnecting dialler (partners.ts); the responder (Fig. 10) answers them
//   array holder    exactly one running node has the shared member files open; the others page in and
//                   destage through it (remote-array.ts). The first node up holds it; a node that finds
//                   a holder among its partners joins instead.
//   memory manager  over this node's frame pool, for the volumes this node owns; each write is mirrored
//                   to every live partner before it is acknowledged, or written through when none is live
//   exports         every configured volume on this node's NBD addresses: owned ones through the memory
//                   manager, the others forwarded to their owner (forwarded-volume.ts)
//
// The partners' mirrored pages live in the same frame pool (mirror-store.ts). When a partner's link
// drops, the holder destages that partner's mirrored pages, so what it acknowledged reaches the disks.
import { clusterUuid, findNode, type ClusterConfig } from '../config/index.js';
import { FramePool, LinkReplicator, MemoryManager, MemoryVolume, MirrorStore } from '../memory/index.js';
import { Exports, NbdServer } from '../nbd/index.js';
import type { Logger } from '../observe/index.js';
import { IoOp, MessageType, NIL_ALLOCATION, Status } from '../partner/index.js';
import {
  assembleArray,
  NodeStateStore,
  placeAllocations,
  StorageStack,
  stripeDataBytes,
  DEFAULT_STACK_OPTIONS,
  type Allocation,
  type BlockDevice,
  type ClusterRecord,
} from '../storage/index.js';
import type { Volume } from '../volume/index.js';
import { ControlServer, type ClusterStatus } from './control.js';
import { ForwardedVolume } from './forwarded-volume.js';
import { Partners } from './partners.js';
import { RemoteArray } from './remote-array.js';
import { Responder, type ResponderTargets } from './responder.js';

export interface NodeTimings {
  /** How long a starting node looks for a partner that holds the array before it decides. */
  discoveryMs: number;
  /** How long a node that must not hold the array waits for the one that should. */
  holderWaitMs: number;
}

export const DEFAULT_TIMINGS: NodeTimings = { discoveryMs: 1500, holderWaitMs: 30_000 };

const PROBE_INTERVAL_MS = 100;
/** How long a joining node waits for a holder that is still assembling the array (a resync may run). */
const HOLDER_READY_WAIT_MS = 120_000;

export class ClusterNode {
  private mode: 'mirrored' | 'write-through' | null = null;

  private constructor(
    private readonly config: ClusterConfig,
    private readonly nodeId: number,
    private readonly server: NbdServer,
    private readonly control: ControlServer,
    private readonly partners: Partners,
    private readonly manager: MemoryManager,
    private readonly mirror: MirrorStore,
    private readonly stack: StorageStack | null,
    private readonly holderId: number,
    private readonly record: ClusterRecord,
    private readonly responder: Responder,
    private readonly logger: Logger,
  ) {}

  /** Joins or forms the cluster, then listens; on any failure, what was opened is closed again. */
  static async start(config: ClusterConfig, nodeName: string, logger: Logger, timings: NodeTimings = DEFAULT_TIMINGS): Promise<ClusterNode> {
    const node = findNode(config, nodeName);
    const nodeId = config.nodes.indexOf(node);
    const names = new Map(config.nodes.map((entry, index) => [index, entry.name]));
    const pool = new FramePool(config.memory);
    let manager: MemoryManager | null = null;
    const mirror = new MirrorStore(pool, (bytes) => manager?.reclaim(bytes) ?? null, () => manager?.reclaimableBytes ?? 0);
    const targets: ResponderTargets = { mirror, stack: null, owned: new Map<string, Volume>(), holding: false, ready: false };
    const responder = new Responder(targets, logger);
    const partners = new Partners({ clusterId: clusterUuid(config.cluster), nodeId, epoch: 0 }, responder.handle, logger, names, config.partnerTimeoutMs);
    const replicator = new LinkReplicator(nodeId, logger);
    partners.onUp = (link) => replicator.add(link);
    const exports = new Exports();
    const server = new NbdServer(exports, logger);
    let control: ControlServer | null = null;
    let stack: StorageStack | null = null;
    try {
      if (node.partner) await partners.listen(node.partner);
      config.nodes.forEach((other, index) => {
        if (index < nodeId && other.partner) partners.dial({ nodeId: index, name: other.name, ...other.partner });
      });
      const holderId = await ClusterNode.findHolder(config, nodeId, partners, timings, logger);
      let device: BlockDevice;
      if (holderId === nodeId) {
        targets.holding = true;
        stack = await ClusterNode.openArray(config, logger);
        targets.stack = stack;
        device = stack;
      } else {
        logger.info(`node ${names.get(holderId)} holds the shared array: paging in and destaging through it`);
        device = new RemoteArray(() => partners.link(holderId));
      }
      const record = await ClusterNode.clusterRecord(config, device, stack, logger);
      const maxPage = Math.max(...config.volumes.map((volume) => volume.pageSize));
      const high = Math.max(4, Math.floor(config.memory / maxPage / 4));
      manager = new MemoryManager(pool, device, replicator, { highWatermarkPages: high, lowWatermarkPages: Math.floor(high / 4) });
      for (const volume of config.volumes) {
        const allocation = record.allocations.find((candidate) => candidate.name === volume.name);
        if (!allocation) throw new Error(`volume ${volume.name} is not in the array's cluster record; start the array holder with this config first`);
        const ownerId = config.nodes.findIndex((candidate) => candidate.name === volume.owner);
        let served: Volume;
        if (ownerId === nodeId) {
          manager.createAllocation({ guid: allocation.guid, arrayOffset: allocation.arrayOffset, sizeBytes: allocation.sizeBytes, pageBytes: volume.pageSize });
          served = new MemoryVolume(manager, volume.name, allocation.guid, volume.pageSize, allocation.sizeBytes);
          targets.owned.set(allocation.guid, served);
        } else {
          served = new ForwardedVolume(volume.name, allocation.guid, allocation.sizeBytes, volume.owner, () => partners.link(ownerId));
        }
        exports.add({ name: volume.name, description: volume.description, volume: served, readOnly: volume.readOnly });
      }
      targets.ready = true;
      const started = new ClusterNode(config, nodeId, server, (control = new ControlServer(stack?.array ?? null, logger)), partners, manager, mirror, stack, holderId, record, responder, logger);
      control.cluster = () => started.status();
      control.mirrorPages = () => started.mirrorPages();
      partners.onUp = (link) => {
        manager?.partnerJoined();
        started.partnerJoined(link.peer.nodeId);
        replicator.add(link);
        started.modeChanged();
      };
      partners.onDown = (peer) => started.partnerLost(peer);
      started.modeChanged();
      for (const address of node.listen) await server.listen(address);
      await control.listen(node.control as string);
      return started;
    } catch (error) {
      await server.close();
      await control?.close();
      await partners.stop();
      await stack?.stop();
      throw error;
    }
  }

  /**
   * The node that holds the shared array: a partner that says so, else this node if it is the first
   * of the live nodes in config order, else (after waiting for it) the one that is.
   */
  private static async findHolder(config: ClusterConfig, nodeId: number, partners: Partners, timings: NodeTimings, logger: Logger): Promise<number> {
    if (config.nodes.length === 1) return nodeId;
    const started = Date.now();
    let waitingLogged = false;
    for (;;) {
      const live = partners.live();
      const answers = await Promise.all(
        live.map(async (link) => {
          try {
            const reply = await link.request({ type: MessageType.ForwardedIo, op: IoOp.Probe, allocation: NIL_ALLOCATION, offset: 0, length: 0, fua: false, data: Buffer.alloc(0) });
            return reply.type === MessageType.CommandComplete && reply.status === Status.Ok ? link.peer.nodeId : null;
          } catch {
            return null;
          }
        }),
      );
      const holder = answers.find((answer) => answer !== null);
      if (holder !== undefined && holder !== null) return holder;
      const elapsed = Date.now() - started;
      const everyoneHere = live.length === config.nodes.length - 1;
      const first = live.every((link) => link.peer.nodeId > nodeId);
      if ((everyoneHere || elapsed >= timings.discoveryMs) && first) {
        logger.info(live.length === 0 ? 'no partner is up: this node holds the shared array' : 'no partner holds the shared array: this node, first of those up, opens it');
        return nodeId;
      }
      if (elapsed >= timings.discoveryMs && !waitingLogged) {
        logger.info(`waiting for node ${config.nodes[Math.min(...live.map((link) => link.peer.nodeId))]?.name} to open the shared array`);
        waitingLogged = true;
      }
      if (elapsed >= timings.discoveryMs + timings.holderWaitMs) throw new Error(`no node opened the shared array within ${timings.holderWaitMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    }
  }

  private static async openArray(config: ClusterConfig, logger: Logger): Promise<StorageStack> {
    const array = await assembleArray(config.storage.members, { logger, now: () => Date.now() });
    if (array.geometry.level !== config.storage.level) {
      await array.stop();
      throw new Error(`the member files hold a ${array.geometry.level} array, the config says ${config.storage.level}`);
    }
    return new StorageStack(array, { ...DEFAULT_STACK_OPTIONS, capacityBytes: config.storage.cache, readAheadBytes: config.storage.readAhead });
  }

  /** The cluster record; the holder places allocations for configured volumes the array lacks. */
  private static async clusterRecord(config: ClusterConfig, device: BlockDevice, stack: StorageStack | null, logger: Logger): Promise<ClusterRecord> {
    const store = new NodeStateStore(device);
    // A holder found while it is still assembling the array answers array reads only once ready.
    let found: ClusterRecord | null;
    for (const deadline = Date.now() + HOLDER_READY_WAIT_MS; ; ) {
      try {
        found = await store.readClusterRecord();
        break;
      } catch (error) {
        if (stack || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
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

  status(): ClusterStatus {
    const live = new Set(this.partners.live().map((link) => link.peer.nodeId));
    return {
      cluster: this.config.cluster,
      node: this.config.nodes[this.nodeId]?.name ?? '',
      arrayHolder: this.config.nodes[this.holderId]?.name ?? '',
      mode: live.size > 0 ? 'mirrored' : 'write-through',
      partners: this.config.nodes.filter((_, index) => index !== this.nodeId).map((node) => ({ name: node.name, live: live.has(this.config.nodes.indexOf(node)) })),
      volumes: this.config.volumes.map((volume) => ({ name: volume.name, owner: volume.owner, pageBytes: volume.pageSize })),
      residentPages: this.manager.residentPages,
      dirtyPages: this.manager.dirtyPages,
      mirroredPages: this.mirror.mirroredPages,
    };
  }

  /** The array's allocations of the configured volumes that `owner` owns. */
  private allocationsOwnedBy(owner: string | undefined): Allocation[] {
    return this.record.allocations.filter((allocation) => this.config.volumes.find((volume) => volume.name === allocation.name)?.owner === owner);
  }

  /**
   * Takes the mirrored pages of these allocations out of the mirror store and, on the array holder,
   * hands them to the storage stack (the caller flushes); elsewhere they are dropped. Returns the count.
   */
  private destageMirrors(allocations: readonly Allocation[]): number {
    let pages = 0;
    for (const allocation of allocations) {
      for (const page of this.mirror.takeAllocation(allocation.guid)) {
        this.stack?.enqueueBlocks(allocation.arrayOffset + page.virtualPage * page.data.length, page.data);
        pages++;
      }
    }
    return pages;
  }

  /** Partners' pages this node mirrors and the disks may not have yet (diagnostics; the crash test reads it). */
  mirrorPages(): Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> {
    const out: Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> = [];
    for (const guid of this.mirror.allocations()) {
      const name = this.record.allocations.find((allocation) => allocation.guid === guid)?.name ?? guid;
      for (const [virtualPage, page] of this.mirror.pagesOf(guid)) out.push({ volume: name, virtualPage, version: page.version, data: page.data });
    }
    return out;
  }

  private modeChanged(): void {
    const mode = this.partners.live().length > 0 ? 'mirrored' : 'write-through';
    if (mode === this.mode) return;
    const wasMirrored = this.mode === 'mirrored';
    this.mode = mode;
    if (mode === 'mirrored') {
      this.logger.info('a partner is live: writes are acknowledged once mirrored (write-back)');
      return;
    }
    this.logger.warn('no live partner: writes are acknowledged once on the disks (write-through)');
    if (wasMirrored) this.manager.partnerLost();
  }

  /**
   * A partner's link is up (again): mirrors this node still holds of that partner's pages are stale
   * (it flushed them when it lost us and resends whole pages), so they go: to the disks if this node
   * holds the array (harmless, and safe if that partner's flush did not finish), else dropped.
   */
  private partnerJoined(peer: number): void {
    this.destageMirrors(this.allocationsOwnedBy(this.config.nodes[peer]?.name));
  }

  /** A partner is gone: its mirrored pages must reach the disks (only the holder can put them there). */
  private partnerLost(peer: number): void {
    this.modeChanged();
    const name = this.config.nodes[peer]?.name ?? String(peer);
    if (peer === this.holderId) {
      this.logger.error(`node ${name}, which holds the shared array, is gone: volumes owned here fail I/O until it returns`);
      return;
    }
    const stack = this.stack;
    if (!stack) return;
    // Synchronously, before any new link from that node can send newer versions through us.
    const pages = this.destageMirrors(this.allocationsOwnedBy(name));
    if (pages === 0) return;
    this.logger.warn(`destaging ${pages} page(s) node ${name} had mirrored here`);
    stack.flush().then(
      () => this.logger.info(`node ${name}'s mirrored pages are on the disks`),
      (error: Error) => this.logger.error(`destaging node ${name}'s mirrored pages failed: ${error.message}`),
    );
  }

  /** Drains clients, destages everything, stops the array cleanly. */
  async stop(): Promise<void> {
    await this.control.close();
    await this.server.close();
    // Forwarded writes running now are acknowledged to another node's client: let them finish, and
    // take no new ones, before the final destage.
    await this.responder.stopVolumeRequests();
    // Fig. 9 for each owned allocation: on the disks, frames freed, partners' structures dismantled.
    for (const allocation of this.allocationsOwnedBy(this.config.nodes[this.nodeId]?.name)) {
      await this.manager.releaseAllocation(allocation.guid).catch((error: Error) => this.logger.error(`releasing ${allocation.name} at stop failed: ${error.message}`));
    }
    await this.manager.flush().catch((error: Error) => this.logger.error(`destage at stop failed: ${error.message}`));
    await this.partners.stop();
    if (this.stack) {
      // Partners' acknowledged writes this node mirrors go to the disks before the array closes.
      this.destageMirrors(this.record.allocations);
      await this.stack.stop().catch((error: Error) => this.logger.error(`storage stop failed: ${error.message}`));
    }
  }
}

