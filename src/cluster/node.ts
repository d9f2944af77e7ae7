// One node process of a cluster:
//
//   lease           this node's slot in the lease files beside the members (lease.ts): renewed while
//                   it runs; nothing is acknowledged or written to the disks once it has run out
//   partner links   listener + reconnecting dialler (partners.ts); the responder (Fig. 10) answers them
//   array holder    exactly one running node has the shared member files open; the others page in and
//                   destage through it (remote-array.ts, behind array-access.ts). The holder is also
//                   the authority on who owns which volume (authority.ts)
//   memory manager  over this node's frame pool, for the volumes this node owns; each write is mirrored
//                   to every live partner before it is acknowledged, or written through when none is live
//   exports         every configured volume on this node's NBD addresses, each behind a VolumeSwitch:
//                   owned ones through the memory manager, the others forwarded to their owner
//
// The partners' mirrored pages live in the same frame pool (mirror-store.ts). They stay until that
// partner's resync drops them (it is back) or it is taken over (then they go to the disks first).
import path from 'node:path';
import { clusterUuid, findNode, type ClusterConfig, type NodeConfig } from '../config/index.js';
import { FramePool, LinkReplicator, MemoryManager, MemoryVolume, MirrorStore, ResyncStage, type PagePointer } from '../memory/index.js';
import { Exports, loadNbdTls, NbdServer } from '../nbd/index.js';
import type { Logger } from '../observe/index.js';
import { IoOp, MAX_PAGE_BYTES, MessageType, NIL_ALLOCATION, Status, type Identity, type LinkSecurity, type Message, type PartnerLink } from '../partner/index.js';
import {
  assembleArray,
  FileMember,
  MemberError,
  NodeStateStore,
  placeAllocations,
  StorageStack,
  stripeDataBytes,
  DEFAULT_STACK_OPTIONS,
  type Allocation,
  type BlockDevice,
  type ClusterRecord,
  type MemberDevice,
} from '../storage/index.js';
import { ArrayAccess } from './array-access.js';
import { Authority, type OwnershipHost } from './authority.js';
import { ControlServer, type ClusterStatus } from './control.js';
import { ForwardedVolume } from './forwarded-volume.js';
import { LeaseFiles, processGone, thisProcess } from './lease-files.js';
import { LeaseKeeper, systemClock } from './lease.js';
import { partnerSecurity, partnerSourceAddress } from './partner-security.js';
import { Partners } from './partners.js';
import { describe, isOk, RemoteArray } from './remote-array.js';
import { Responder, type ResponderTargets } from './responder.js';
import { localView, VolumeSwitch, DEFAULT_RETRY_MS } from './volume-switch.js';

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
/** How long a starting node waits for the holder to hand it its own volumes before it reports ready anyway. */
const HOME_VOLUMES_WAIT_MS = 10_000;
/** How often a listen on an address still held by someone else (a partner serving it for us) is retried. */
const LISTEN_RETRY_MS = 250;

/** One export of this node and what serves it now. */
export interface Served {
  allocation: Allocation;
  pageBytes: number;
  switch: VolumeSwitch;
  /** Set while this node owns the volume. */
  memory: MemoryVolume | null;
  /** The node that owns it now, as this node knows it. */
  ownerId: number;
  /** The node the config names as its owner: where it goes back to. */
  homeId: number;
  /** What is happening to it, for status ('', 'taking over', 'moving to b'). */
  moving: string;
  /** The export refuses writes; so does the owner, to forwarded ones. */
  readOnly: boolean;
}

/** A warm handover under way (ClusterNode.copyResident), between its live and its paused pass. */
interface ResidentCopy {
  /** The link to the receiver it began on: a new link (or another receiver) begins again. */
  link: PartnerLink;
  epoch: number;
  /** Page → the version it was sent at. */
  sentVersions: Map<number, number>;
  sent: number;
  staged: number;
  /** `to` answered no space: nothing more is sent. */
  full: boolean;
}

export class ClusterNode {
  private mode: 'mirrored' | 'write-through' | null = null;
  private readonly copies = new Map<string, ResidentCopy>();
  private fenced = false;
  private stopping = false;
  readonly authority: Authority<Served>;
  /** Told when this node was fenced and must stop serving (the process exits and may rejoin). */
  onFenced: (reason: string) => void = () => undefined;

  private constructor(
    readonly config: ClusterConfig,
    readonly nodeId: number,
    readonly server: NbdServer,
    readonly control: ControlServer,
    readonly partners: Partners,
    readonly manager: MemoryManager,
    readonly mirror: MirrorStore,
    public stack: StorageStack | null,
    public holderId: number,
    public record: ClusterRecord,
    readonly responder: Responder,
    readonly targets: ResponderTargets,
    readonly leases: LeaseKeeper,
    readonly identity: Identity,
    readonly access: ArrayAccess,
    readonly served: Map<string, Served>,
    readonly logger: Logger,
  ) {
    this.authority = new Authority(this.ownershipHost(), systemClock);
  }

  /** What the ownership loop sees of this node. */
  private ownershipHost(): OwnershipHost<Served> {
    const holder = (): number => this.holderId;
    return {
      nodeId: this.nodeId,
      get holderId() {
        return holder();
      },
      leases: this.leases,
      partners: this.partners,
      served: this.served,
      logger: this.logger,
      takeoverAddresses: this.config.takeoverAddresses,
      name: (nodeId) => this.name(nodeId),
      fence: (reason) => this.fence(reason),
      setEpoch: (epoch) => {
        this.identity.epoch = epoch;
        this.partners.announceEpoch();
      },
      claimPauseMs: () => claimPauseMs(this.config, this.leases, this.partners, this.nodeId),
      destageMirrors: (volumes) => this.destageMirrors(volumes.map((entry) => entry.allocation)),
      destageMirrorsToArray: (volumes) => this.destageMirrorsToArray(volumes.map((entry) => entry.allocation)),
      dropMirrorsExcept: (volume, writer) => this.mirror.dropAllocationExcept(volume.allocation.guid, writer),
      holderIs: (nodeId) => {
        if (this.stack || nodeId === this.holderId) return;
        this.logger.warn(`node ${this.name(nodeId)} holds the shared array now: paging in and destaging through it`);
        this.holderId = nodeId;
      },
      probeHolder: async (peer) => {
        const link = this.partners.link(peer);
        if (!link) return false;
        return probe(link).catch(() => false);
      },
      holdArray: () => this.holdArray(),
      flushArray: async () => {
        await this.stack?.flush();
      },
      own: (entry, handedOverAt) => this.own(entry, handedOverAt),
      serveFromMirrors: (entry) => this.serveFromMirrors(entry),
      copyResident: (entry, to, phase) => this.copyResident(entry, to, phase),
      forward: (entry, ownerId) => this.forward(entry, ownerId),
      releaseVolume: async (entry) => {
        this.targets.owned.delete(entry.allocation.guid);
        await this.manager.releaseAllocation(entry.allocation.guid);
        entry.memory = null;
      },
      writeOwners: () => this.writeOwners(),
      borrowAddresses: (dead, wanted) => {
        for (const address of this.config.nodes[dead]?.listen ?? []) {
          if ('path' in address) continue;
          void this.listenPersistently(address, `node ${this.name(dead)}`, wanted).catch((error: Error) => this.logger.error(`cannot serve node ${this.name(dead)}'s address: ${error.message}`));
        }
      },
      returnAddresses: (dead) => this.server.closeGroup(`node ${this.name(dead)}`),
    };
  }

  /** Joins or forms the cluster, then listens; on any failure, what was opened is closed again. */
  static async start(config: ClusterConfig, nodeName: string, logger: Logger, timings: NodeTimings = DEFAULT_TIMINGS): Promise<ClusterNode> {
    const node = findNode(config, nodeName);
    const nodeId = config.nodes.indexOf(node);
    const names = new Map(config.nodes.map((entry, index) => [index, entry.name]));
    const pool = new FramePool(config.memory);
    let manager: MemoryManager | null = null;
    const mirror = new MirrorStore(pool, (bytes) => manager?.reclaim(bytes) ?? null, () => manager?.reclaimableBytes ?? 0);
    const stage = new ResyncStage(pool, (guid) => mirror.shapeOf(guid));
    const targets: ResponderTargets = {
      mirror,
      stage,
      stack: null,
      owned: new Map(),
      holding: false,
      ready: false,
      takeover: null,
      extents: () => built?.record.allocations ?? [],
      // A linked partner's epoch is as good as one in its takeover message: it passed the hello.
      epoch: (epoch) => {
        if (epoch <= leases.epoch) return;
        leases.adoptEpoch(epoch);
        identity.epoch = leases.epoch;
      },
    };
    const responder = new Responder(targets, logger);
    const clustered = config.nodes.length > 1;
    const leaseFiles = await LeaseFiles.open(config.storage.members);
    const leases = new LeaseKeeper(nodeId, node.name, thisProcess(), leaseFiles, systemClock, { leaseMs: config.leaseMs, processGone, fencing: clustered });
    // A cluster needs its partner key before it writes anything: without it no link can be trusted.
    const security = clustered ? await partnerSecurity(config, (epoch) => leases.plausibleEpoch(epoch), logger).catch(async (error: Error) => {
      await leaseFiles.close();
      throw error;
    }) : null;
    const identity: Identity = { clusterId: clusterUuid(config.cluster), nodeId, epoch: 0 };
    const partners = new Partners(identity, security ?? noPartners, responder.handle, logger, names, config.partnerTimeoutMs, partnerSourceAddress(config, nodeId));
    const replicator = new LinkReplicator(nodeId, logger);
    partners.onUp = (link) => replicator.add(link);
    const exports = new Exports();
    const server = new NbdServer(exports, logger, { limits: config.limits, tls: await loadNbdTls(config.tls) });
    let control: ControlServer | null = null;
    let stack: StorageStack | null = null;
    /** Set once built; the closures above read its holder (it changes at a takeover). */
    let built: ClusterNode | null = null;
    try {
      await leases.acquire();
      identity.epoch = leases.epoch;
      if (node.partner) await partners.listen(node.partner);
      config.nodes.forEach((other, index) => {
        if (index < nodeId && other.partner) partners.dial({ nodeId: index, name: other.name, ...other.partner });
      });
      const holderId = await ClusterNode.findHolder(config, nodeId, partners, leases, timings, logger);
      let access: ArrayAccess;
      if (holderId === nodeId) {
        targets.holding = true;
        if (config.nodes.length > 1) {
          identity.epoch = await leases.claimEpoch(claimPauseMs(config, leases, partners, nodeId));
          partners.announceEpoch();
        }
        stack = await ClusterNode.openArray(config, logger, leases);
        targets.stack = stack;
        access = new ArrayAccess(stack, false, DEFAULT_RETRY_MS);
      } else {
        logger.info(`node ${names.get(holderId)} holds the shared array: paging in and destaging through it`);
        // Through whichever node holds the array now: another member may take it over (holderIs).
        access = new ArrayAccess(new RemoteArray(() => partners.link(built?.holderId ?? holderId)), true, DEFAULT_RETRY_MS);
      }
      const record = await ClusterNode.clusterRecord(config, access, stack, logger);
      const maxPage = Math.max(...config.volumes.map((volume) => volume.pageSize));
      const high = Math.max(4, Math.floor(config.memory / maxPage / 4));
      const gate = new AcknowledgeGate(config, leases, partners, nodeId, () => built?.holderId ?? holderId, () => manager?.partnersResynced ?? true);
      manager = new MemoryManager(pool, access, replicator, {
        highWatermarkPages: high,
        lowWatermarkPages: Math.floor(high / 4),
        acknowledgeGate: (writeThrough) => gate.check(writeThrough),
        linkGeneration: () => partners.generation,
      });
      const served = new Map<string, Served>();
      for (const volume of config.volumes) {
        const allocation = record.allocations.find((candidate) => candidate.name === volume.name);
        if (!allocation) throw new Error(`volume ${volume.name} is not in the array's cluster record; start the array holder with this config first`);
        const homeId = config.nodes.findIndex((candidate) => candidate.name === volume.owner);
        const recorded = config.nodes.findIndex((candidate) => candidate.name === allocation.owner);
        // Only the holder decides ownership. A node that joins serves nothing of its own until the
        // holder hands it over (takeover message): the record may be older than the holder's view.
        const ownerId = holderId === nodeId ? (recorded >= 0 ? recorded : homeId) : recorded >= 0 && recorded !== nodeId ? recorded : holderId;
        const entry: Served = { allocation, pageBytes: volume.pageSize, switch: null as unknown as VolumeSwitch, memory: null, ownerId, homeId, moving: '', readOnly: volume.readOnly };
        entry.switch = new VolumeSwitch(volume.name, allocation.sizeBytes, forwardTo(config, entry, ownerId, partners), () => leases.holds());
        served.set(allocation.guid, entry);
        exports.add({ name: volume.name, description: volume.description, volume: entry.switch, readOnly: volume.readOnly, tlsIdentities: volume.tlsIdentities });
      }
      control = new ControlServer(stack?.array ?? null, logger, path.dirname(node.control as string));
      const started = new ClusterNode(config, nodeId, server, control, partners, manager, mirror, stack, holderId, record, responder, targets, leases, identity, access, served, logger);
      built = started;
      targets.takeover = (message) => {
        // Given to another node: what a warm handover staged here of it is not for this node.
        if (message.toNodeId !== nodeId && message.allocation !== NIL_ALLOCATION) stage.invalidate(message.allocation);
        return started.authority.onTakeover(message);
      };
      if (holderId === nodeId) {
        // Array requests are served from here on: partners put what they mirrored of this node's
        // volumes in its previous life on the disks, through it, before it serves them.
        targets.ready = true;
        await started.authority.announceHolder(nodeId);
        await started.authority.reclaim([...served.values()].filter((entry) => entry.ownerId === nodeId));
      }
      for (const entry of served.values()) if (entry.ownerId === nodeId) started.own(entry);
      targets.ready = true;
      control.cluster = () => started.status();
      control.mirrorPages = () => started.mirrorPages();
      partners.onUp = (link) => {
        manager?.partnerJoined();
        replicator.add(link);
        started.modeChanged();
        started.authority.partnerUp(link.peer.nodeId, link.peer.epoch);
      };
      partners.onDown = (peer) => {
        // Its later writes of a volume it copied here would reach no one here.
        stage.peerLost(peer);
        started.partnerLost(peer);
      };
      leases.isLivePartner = (slot) => partners.link(slot) !== null;
      leases.onFenced = (reason) => started.fence(reason);
      leases.onSlow = (what) => logger.warn(what);
      leases.onEpoch = (epoch) => {
        identity.epoch = epoch;
        partners.announceEpoch();
      };
      partners.onStaleEpoch = (message) => started.fence(message);
      started.modeChanged();
      for (const address of node.listen) await started.listenPersistently(address, 'own');
      await control.listen(node.control as string);
      started.authority.start();
      await started.homeVolumesAssigned(HOME_VOLUMES_WAIT_MS);
      return started;
    } catch (error) {
      await server.close();
      await control?.close();
      await partners.stop();
      await stack?.stop();
      leases.abandon();
      await leaseFiles.close();
      throw error;
    }
  }

  /**
   * The node that holds the shared array: a partner that says so, else this node if it is the first
   * of the live nodes in config order and no node out of reach still renews its lease (it may hold
   * the array), else (after waiting for it) the one that is.
   */
  private static async findHolder(config: ClusterConfig, nodeId: number, partners: Partners, leases: LeaseKeeper, timings: NodeTimings, logger: Logger): Promise<number> {
    if (config.nodes.length === 1) return nodeId;
    const started = Date.now();
    let waitingLogged = false;
    for (;;) {
      const live = partners.live();
      const answers = await Promise.all(live.map((link) => probe(link).then((holds) => (holds ? link.peer.nodeId : null), () => null)));
      const holder = answers.find((answer) => answer !== null);
      if (holder !== undefined && holder !== null) return holder;
      const elapsed = Date.now() - started;
      const everyoneHere = live.length === config.nodes.length - 1;
      const first = live.every((link) => link.peer.nodeId > nodeId);
      // Judged on the links that were probed: one that came up meanwhile was not asked (ownership
      // simulator, three nodes, seed 208: this node opened the array beside the holder that linked mid-probe).
      const probed = new Set(live.map((link) => link.peer.nodeId));
      const unreachable = config.nodes.map((_, index) => index).filter((index) => index !== nodeId && !probed.has(index) && !leases.expired(index));
      if ((everyoneHere || elapsed >= timings.discoveryMs) && first && unreachable.length === 0) {
        logger.info(live.length === 0 ? 'no partner is up: this node holds the shared array' : 'no partner holds the shared array: this node, first of those up, opens it');
        return nodeId;
      }
      if (elapsed >= timings.discoveryMs && !waitingLogged) {
        const waitingFor = unreachable.length > 0 ? unreachable.map((index) => config.nodes[index]?.name).join(', ') : config.nodes[Math.min(...live.map((link) => link.peer.nodeId))]?.name;
        logger.info(`waiting for node ${waitingFor} (${unreachable.length > 0 ? 'its lease is still renewed but it cannot be reached' : 'to open the shared array'})`);
        waitingLogged = true;
      }
      if (elapsed >= timings.discoveryMs + timings.holderWaitMs) throw new Error(`no node opened the shared array within ${timings.holderWaitMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    }
  }

  /** Assembles the array; member writes and syncs are refused once this node's lease has run out. */
  static async openArray(config: ClusterConfig, logger: Logger, leases: LeaseKeeper): Promise<StorageStack> {
    const open = async (path: string): Promise<MemberDevice> => fencedMember(await FileMember.open(path), leases);
    const array = await assembleArray(config.storage.members, { logger, now: () => Date.now() }, open, { holder: config.nodes[leases.slot]?.name ?? String(leases.slot) });
    if (array.geometry.level !== config.storage.level) {
      await array.stop();
      throw new Error(`the member files hold a ${array.geometry.level} array, the config says ${config.storage.level}`);
    }
    return new StorageStack(array, { ...DEFAULT_STACK_OPTIONS, capacityBytes: config.storage.cache, readAheadBytes: config.storage.readAhead });
  }

  /** The cluster record; the holder places allocations for configured volumes the array lacks. */
  static async clusterRecord(config: ClusterConfig, device: BlockDevice, stack: StorageStack | null, logger: Logger): Promise<ClusterRecord> {
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

  /** Resolves once this node serves every volume whose home it is (or after `timeoutMs`: the holder decides). */
  private async homeVolumesAssigned(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const pending = (): Served[] => [...this.served.values()].filter((entry) => entry.homeId === this.nodeId && entry.ownerId !== this.nodeId);
    while (pending().length > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    const left = pending();
    if (left.length > 0) this.logger.warn(`the array holder has not handed over ${left.map((entry) => entry.allocation.name).join(', ')} yet: forwarding until it does`);
  }

  name(nodeId: number): string {
    return this.config.nodes[nodeId]?.name ?? String(nodeId);
  }

  /**
   * This node serves `entry` from its memory manager from now on; handed over at epoch
   * `handedOverAt`, with the pages its giver copied here then (copyResident) resident from the start.
   */
  own(entry: Served, handedOverAt?: number): void {
    const { allocation, pageBytes } = entry;
    const created = !entry.memory;
    if (!entry.memory) {
      this.manager.createAllocation({ guid: allocation.guid, arrayOffset: allocation.arrayOffset, sizeBytes: allocation.sizeBytes, pageBytes });
      entry.memory = new MemoryVolume(this.manager, allocation.name, allocation.guid, pageBytes, allocation.sizeBytes);
    }
    // Staged pages are only good for an allocation that starts here now: one served here already
    // may have been written since they were copied.
    const installed = this.targets.stage.take(allocation.guid, created && handedOverAt !== undefined ? handedOverAt : -1, (virtualPage, frame) => this.manager.installCleanFrame(allocation.guid, virtualPage, frame));
    if (installed > 0) this.logger.info(`volume ${allocation.name}: ${installed} page(s) copied by its previous owner are resident here`);
    entry.ownerId = this.nodeId;
    this.targets.owned.set(allocation.guid, { volume: localView(entry.switch, entry.memory), readOnly: entry.readOnly });
    entry.switch.setTarget(entry.memory);
  }

  /**
   * A warm handover (Authority.giveUp) of the volume's clean resident pages to `to`, between resync
   * begin and resync end, in runs of consecutive pages. 'live', while the volume is still served:
   * resync begin, then every page clean now, remembering the version each was sent at. 'paused',
   * once it is paused and drained: everything modified to the disks, then the clean pages not sent
   * yet or changed since, then resync end (a page written in between was mirrored to `to` too,
   * which drops its staged copy). So the pause covers only what changed during the live pass.
   * Stops early when `to` has no free frame left. Best effort: never throws; the count staged.
   */
  async copyResident(entry: Served, to: number, phase: 'live' | 'paused'): Promise<number> {
    const { guid, name } = entry.allocation;
    const link = this.partners.link(to);
    // A live pass starts afresh: one left by a handover that failed between its passes is no guide.
    let copy = phase === 'paused' ? this.copies.get(guid) : undefined;
    if (copy && copy.link !== link) copy = undefined;
    this.copies.delete(guid);
    if (!link || !entry.memory || !this.config.warmFailback) return 0;
    try {
      if (!copy) {
        copy = { link, epoch: this.leases.epoch, sentVersions: new Map(), sent: 0, staged: 0, full: false };
        expectOk(await link.request({ type: MessageType.ResyncBegin, epoch: copy.epoch, allocationCount: 1, pageCount: this.manager.residentPages }), 'resync begin');
      }
      if (phase === 'paused') await this.manager.flush();
      await this.sendCleanPages(entry, copy);
      if (phase === 'live') {
        this.copies.set(guid, copy);
        return copy.staged;
      }
      expectOk(await link.request({ type: MessageType.ResyncEnd, epoch: copy.epoch, allocationCount: 1, pageCount: copy.sent }), 'resync end');
      return copy.staged;
    } catch (error) {
      this.logger.warn(`volume ${name}: copying resident pages to node ${this.name(to)} failed (${(error as Error).message}); it pages them in instead`);
      return 0;
    }
  }

  /** The clean pages not sent at their current version yet, COPY_RUNS_IN_FLIGHT runs at a time. */
  private async sendCleanPages(entry: Served, copy: ResidentCopy): Promise<void> {
    const { guid } = entry.allocation;
    const pageBytes = entry.pageBytes;
    const maxRun = Math.max(1, MAX_PAGE_BYTES / pageBytes);
    const candidates = this.manager.residentPageNumbers(guid);
    let next = 0;
    const lockRun = (): Array<PagePointer & { version: number }> => {
      const run: Array<PagePointer & { version: number }> = [];
      while (next < candidates.length && run.length < maxRun) {
        const virtualPage = candidates[next] as number;
        const last = run[run.length - 1];
        if (last && last.virtualPage + 1 !== virtualPage) break;
        next++;
        const pointer = this.manager.lockCleanPage(guid, virtualPage);
        if (pointer && copy.sentVersions.get(virtualPage) === pointer.version) {
          void this.manager.releasePointer(pointer);
          if (run.length > 0) break;
          continue;
        }
        if (pointer) run.push(pointer);
        else if (run.length > 0) break;
      }
      return run;
    };
    const sender = async (): Promise<void> => {
      while (!copy.full) {
        const run = lockRun();
        if (run.length === 0) return;
        try {
          const first = (run[0] as PagePointer).virtualPage;
          copy.sent += run.length;
          const answer = await copy.link.request({ type: MessageType.WritePage, allocation: guid, virtualPage: first, version: 0, pageBytes, offset: 0, length: run.length * pageBytes, dirty: false, zeroFill: false, data: run.map((pointer) => pointer.data) });
          if (answer.type === MessageType.CommandComplete && answer.status === Status.NoSpace) copy.full = true;
          else expectOk(answer, 'write page');
          if (!copy.full) {
            copy.staged += run.length;
            for (const pointer of run) copy.sentVersions.set(pointer.virtualPage, pointer.version);
          }
        } finally {
          for (const pointer of run) void this.manager.releasePointer(pointer);
        }
      }
    };
    await Promise.all(Array.from({ length: COPY_RUNS_IN_FLIGHT }, sender));
  }

  /** `entry` is served by `ownerId` from now on; requests here are forwarded there. */
  forward(entry: Served, ownerId: number): void {
    entry.ownerId = ownerId;
    entry.switch.setTarget(forwardTo(this.config, entry, ownerId, this.partners));
  }

  status(): ClusterStatus {
    const live = new Set(this.partners.live().map((link) => link.peer.nodeId));
    return {
      cluster: this.config.cluster,
      node: this.name(this.nodeId),
      arrayHolder: this.name(this.holderId),
      mode: live.size > 0 ? 'mirrored' : 'write-through',
      epoch: this.leases.epoch,
      leaseRemainingMs: Math.max(0, Math.round(this.leases.remainingMs())),
      partners: this.config.nodes.filter((_, index) => index !== this.nodeId).map((node) => ({ name: node.name, live: live.has(this.config.nodes.indexOf(node)) })),
      volumes: [...this.served.values()].map((entry) => ({
        name: entry.allocation.name,
        owner: this.name(entry.ownerId),
        home: this.name(entry.homeId),
        pageBytes: entry.pageBytes,
        state: entry.moving || (entry.ownerId === this.nodeId ? 'served here' : 'forwarded'),
      })),
      residentPages: this.manager.residentPages,
      dirtyPages: this.manager.dirtyPages,
      mirroredPages: this.mirror.mirroredPages,
      resync: this.manager.resyncState,
    };
  }

  /** The array's allocations that `ownerId` owns now. */
  allocationsOwnedBy(ownerId: number): Allocation[] {
    return [...this.served.values()].filter((entry) => entry.ownerId === ownerId).map((entry) => entry.allocation);
  }

  /**
   * Takes the mirrored pages of these allocations out of the mirror store and, on the array holder,
   * hands them to the storage stack (the caller flushes); elsewhere they are dropped. Returns the count.
   */
  destageMirrors(allocations: readonly Allocation[]): number {
    return this.takeMirrors(allocations, this.stack).length;
  }

  /**
   * Takeover (Authority.adopt, on the holder): the allocation's mirrored pages, the newest of what
   * its dead owner acknowledged, to the disks and synced, then served here with them resident, so
   * the first reads of what was written last come from memory. Installed only into free frames,
   * only into an allocation that starts here now, and only once the disks have them.
   */
  async serveFromMirrors(entry: Served): Promise<number> {
    const { allocation } = entry;
    const stack = this.stack;
    const pages = this.takeMirrors([allocation], stack);
    await stack?.flush();
    const fresh = !entry.memory;
    this.own(entry);
    if (fresh && stack) for (const page of pages) this.manager.installCleanPage(allocation.guid, page.virtualPage, page.data);
    return pages.length;
  }

  /** Like destageMirrors, from any node: through the holder if it is another, and synced. */
  async destageMirrorsToArray(allocations: readonly Allocation[]): Promise<number> {
    const pages = this.takeMirrors(allocations, this.access).length;
    if (pages > 0) await this.access.flush();
    return pages;
  }

  /** Takes these allocations' mirrored pages out of the mirror store, handing them to `store` (if any). */
  private takeMirrors(allocations: readonly Allocation[], store: { enqueueBlocks(offset: number, data: Buffer): void } | null): Array<{ virtualPage: number; data: Buffer }> {
    const taken: Array<{ virtualPage: number; data: Buffer }> = [];
    for (const allocation of allocations) {
      for (const page of this.mirror.takeAllocation(allocation.guid)) {
        store?.enqueueBlocks(allocation.arrayOffset + page.virtualPage * page.data.length, page.data);
        taken.push(page);
      }
    }
    return taken;
  }

  /** Partners' pages this node mirrors and the disks may not have yet (diagnostics; the crash test reads it). */
  mirrorPages(): Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> {
    const out: Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> = [];
    for (const guid of this.mirror.allocations()) {
      const name = this.served.get(guid)?.allocation.name ?? guid;
      for (const [virtualPage, page] of this.mirror.pagesOf(guid)) out.push({ volume: name, virtualPage, version: page.version, data: page.data });
    }
    return out;
  }

  /** Becomes the array holder: the array assembled here, page-in and destage switched to it. */
  async holdArray(): Promise<void> {
    const stack = await ClusterNode.openArray(this.config, this.logger, this.leases);
    this.stack = stack;
    this.targets.stack = stack;
    this.targets.holding = true;
    this.holderId = this.nodeId;
    this.control.array = stack.array;
    this.access.switchTo(stack, false);
    // Ownership as the previous holder last wrote it: it writes the record before it tells a node
    // to serve a volume, and a message of that may have missed this node (ownership simulator,
    // three nodes, seed 13: a failback announcement lost with a cut link).
    const record = await new NodeStateStore(stack).readClusterRecord().catch(() => null);
    if (!record) return;
    this.record = record;
    for (const allocation of record.allocations) {
      const entry = this.served.get(allocation.guid);
      const owner = this.config.nodes.findIndex((node) => node.name === allocation.owner);
      if (!entry || owner < 0 || entry.memory || owner === entry.ownerId || owner === this.nodeId) continue;
      this.logger.info(`volume ${allocation.name} is served by node ${this.name(owner)}, as the cluster record says`);
      this.forward(entry, owner);
    }
  }

  /** Writes the owners this node (the holder) decided into the cluster record on the array. */
  async writeOwners(): Promise<void> {
    if (!this.stack) throw new Error('only the array holder writes the cluster record');
    const store = new NodeStateStore(this.stack);
    const current = (await store.readClusterRecord()) ?? this.record;
    const allocations = current.allocations.map((allocation) => {
      const entry = this.served.get(allocation.guid);
      return entry ? { ...allocation, owner: this.name(entry.ownerId) } : allocation;
    });
    this.record = { ...current, allocations };
    await store.writeClusterRecord(this.record);
  }

  modeChanged(): void {
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
   * A partner is gone. The pages it mirrored here stay here: it may be cut off but alive, with older
   * copies of them still queued for the disks that it sends once it is back (ownership simulator,
   * seed 3237: destaged now, they were overwritten by those). Its resync drops them if it comes
   * back; if it is taken over, they go to the disks then (Authority.adopt).
   */
  private partnerLost(peer: number): void {
    this.modeChanged();
    this.authority.partnerDown(peer);
    if (peer === this.holderId) {
      this.logger.error(`node ${this.name(peer)}, which holds the shared array, is gone: page-in and destage wait until a node holds it again`);
    }
  }

  /**
   * Listens on `address`; one still held by another process (a partner serving this node's address
   * while it was away) is retried in the background until it is free, the node stops, or, for a
   * partner's address, until `wanted` says no more.
   */
  async listenPersistently(address: NodeConfig['listen'][number], group: string, wanted: () => boolean = () => true): Promise<void> {
    try {
      await this.server.listen(address, group);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
      this.logger.warn(`${'path' in address ? address.path : `${address.host}:${address.port}`} is in use (a partner may still serve it): retrying`);
      const retry = (): void => {
        if (this.stopping || this.fenced || !wanted()) return;
        this.server.listen(address, group).catch((again: NodeJS.ErrnoException) => {
          if (again.code === 'EADDRINUSE') setTimeout(retry, LISTEN_RETRY_MS).unref();
          else this.logger.error(`listen failed: ${again.message}`);
        });
      };
      setTimeout(retry, LISTEN_RETRY_MS).unref();
    }
  }

  /**
   * This node lost its lease, or another node took over at a newer epoch: it must not acknowledge
   * or write anything more. Clients are cut off at once (multipath and reconnecting clients go to
   * the authority); nothing is destaged (the disks belong to the new epoch, and every acknowledged
   * write is held by a partner or the disks already).
   */
  fence(reason: string): void {
    if (this.fenced || this.stopping) return;
    this.fenced = true;
    this.logger.error(`fenced: ${reason}; this node stops serving and must rejoin`);
    this.authority.stop();
    this.leases.abandon();
    this.server.abort();
    void this.partners.stop();
    this.onFenced(reason);
  }

  /** Drains clients, destages everything, stops the array cleanly. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.authority.stop();
    await this.control.close();
    await this.server.close();
    // Forwarded writes running now are acknowledged to another node's client: let them finish, and
    // take no new ones, before the final destage.
    await this.responder.stopVolumeRequests();
    // Fig. 9 for each owned allocation: on the disks, frames freed, partners' structures dismantled.
    for (const allocation of this.allocationsOwnedBy(this.nodeId)) {
      await this.manager.releaseAllocation(allocation.guid).catch((error: Error) => this.logger.error(`releasing ${allocation.name} at stop failed: ${error.message}`));
    }
    await this.manager.flush().catch((error: Error) => this.logger.error(`destage at stop failed: ${error.message}`));
    await this.partners.stop();
    if (this.stack) {
      // Partners' acknowledged writes this node mirrors go to the disks before the array closes.
      this.destageMirrors(this.record.allocations);
      await this.stack.stop().catch((error: Error) => this.logger.error(`storage stop failed: ${error.message}`));
    }
    // Released last: a partner takes over at once, and by now everything is on the disks.
    await this.leases.release();
  }
}

/** A node alone has no partner port and dials nobody: nothing ever asks this. */
const noPartners: LinkSecurity = {
  key: { auth: Buffer.alloc(0), tls: Buffer.alloc(0) },
  tls: false,
  admits: () => false,
  knownAddress: () => false,
  plausibleEpoch: () => false,
};

/** Write pages of a warm handover in flight at once: enough to keep the link busy, bounded memory. */
const COPY_RUNS_IN_FLIGHT = 8;

function expectOk(answer: Message, what: string): void {
  if (!isOk(answer)) throw new Error(`${what} answered ${describe(answer)}`);
}

/** Whether the partner holds the shared array (or is opening it). */
async function probe(link: PartnerLink): Promise<boolean> {
  const reply = await link.request({ type: MessageType.ForwardedIo, op: IoOp.Probe, allocation: NIL_ALLOCATION, offset: 0, length: 0, fua: false, data: Buffer.alloc(0) });
  return isOk(reply);
}

function forwardTo(config: ClusterConfig, entry: Served, ownerId: number, partners: Partners): ForwardedVolume {
  const { allocation } = entry;
  return new ForwardedVolume(allocation.name, allocation.guid, allocation.sizeBytes, config.nodes[ownerId]?.name ?? String(ownerId), () => partners.link(ownerId));
}

/**
 * A claim needs a pause for competitors' claims to land only if some other node could be competing:
 * one neither connected here (connected ones defer to the lowest id) nor known to be out.
 */
export function claimPauseMs(config: ClusterConfig, leases: LeaseKeeper, partners: Partners, nodeId: number): number {
  const unknown = config.nodes.some((_, index) => index !== nodeId && !partners.link(index) && !leases.expired(index));
  return unknown ? Math.floor(config.leaseMs / 4) : 0;
}

const GATE_POLL_MS = 25;

/**
 * Whether a write may go on now (null) or when (a promise): before a mirrored write is sent, and
 * before a write-through is acknowledged, by who must hold a copy of it, so that whichever node
 * takes over has every acknowledged write:
 *
 *   a node that is not the array holder    the holder: it is the one that takes over this node's
 *                                          volumes, from its own mirrors (ownership simulator,
 *                                          three nodes: a write mirrored only to a third node was lost)
 *   the array holder, and every write-through
 *                                          every other node, or its lease has run out: a node cut off
 *                                          from this one holds mirrors as they were at the cut and
 *                                          may take the array over (two nodes, seed 1: it put older
 *                                          pages on the disks over newer ones written through)
 *   a write-through, also                  every joined partner's resync is done (`unresynced`)
 *
 * A node cut off from the holder gives way (Authority), so these waits end once its lease runs out.
 */
export class AcknowledgeGate {
  constructor(
    private readonly config: ClusterConfig,
    private readonly leases: LeaseKeeper,
    private readonly partners: Partners,
    private readonly nodeId: number,
    private readonly holderId: () => number,
    private readonly resynced: () => boolean,
  ) {}

  /** Null at once when open (the common case allocates nothing), else when it opens. */
  check(writeThrough: boolean): Promise<void> | null {
    if (this.open(writeThrough)) return null;
    return this.wait(writeThrough);
  }

  private open(writeThrough: boolean): boolean {
    if (writeThrough) return this.resynced() && this.everyOther();
    const holder = this.holderId();
    return holder === this.nodeId ? this.everyOther() : this.partners.link(holder) !== null;
  }

  private everyOther(): boolean {
    for (let index = 0; index < this.config.nodes.length; index++) {
      if (index !== this.nodeId && this.partners.link(index) === null && !this.leases.expired(index)) return false;
    }
    return true;
  }

  private async wait(writeThrough: boolean): Promise<void> {
    while (!this.open(writeThrough)) await new Promise((resolve) => setTimeout(resolve, GATE_POLL_MS));
  }
}

/** A member whose writes and syncs are refused once this node's lease has run out (it may be taken over). */
function fencedMember(member: MemberDevice, leases: LeaseKeeper): MemberDevice {
  const refuse = (): Promise<never> => Promise.reject(new MemberError(member.path, "not written: this node's lease has run out"));
  return {
    path: member.path,
    read: (offset, into) => member.read(offset, into),
    write: (offset, data) => (leases.holds() ? member.write(offset, data) : refuse()),
    sync: () => (leases.holds() ? member.sync() : refuse()),
    sizeBytes: () => member.sizeBytes(),
    close: () => member.close(),
  };
}
