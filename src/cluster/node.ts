// One node of a cluster, put together: this file builds the parts and wires them, nothing else.
//
//   lease           this node's slot in the lease files beside the members (lease.ts): renewed while
//                   it runs; nothing is acknowledged or written to the disks once it has run out
//   partner links   listener + reconnecting dialler (partners.ts), authenticated (partner/); the
//                   responder (Fig. 10) answers them
//   shared array    exactly one running node holds the member files open (shared-array.ts, found by
//                   holder-discovery.ts); the others page in and destage through it (array-access.ts)
//   memory manager  over this node's frame pool, for the volumes it owns; a write is mirrored to every
//                   live partner before it is acknowledged (acknowledge-gate.ts says when it may be)
//   exports         every volume of the cluster record, each behind a VolumeSwitch (served-volumes.ts):
//                   owned ones through the memory manager, the others forwarded to their owner; made,
//                   grown and deleted online through the holder (volume-catalog.ts)
//   ownership       the loop that decides takeovers and failbacks (authority.ts), with the warm
//                   handover (warm-handover.ts) and the mirrors' fate at a takeover (mirror-takeover.ts)
//   doors           NBD listeners (nbd-addresses.ts) and the control socket (control.ts)
//   report          what status, metrics and events say of the node (node-report.ts)
//
// Everything that waits, talks or touches a disk comes from the NodeEnvironment, so test/sim builds
// real nodes on simulated time, links and disks.
import path from 'node:path';
import { ClusterError, sleep, type Clock } from '../core/index.js';
import { clusterUuid, findNode, type ClusterConfig } from '../config/index.js';
import { FramePool, LinkReplicator, MemoryManager, MirrorStore, ResyncStage } from '../memory/index.js';
import { Exports, loadNbdTls, NbdServer } from '../nbd/index.js';
import { ClusterEvents, metricsUrl, NodeMetrics, type Logger } from '../observe/index.js';
import { MessageType, type Identity, type LinkSecurity, type Message, type OwnershipMessage } from '../partner/index.js';
import { NodeStateStore, type ClusterRecord, type StorageStack } from '../storage/index.js';
import { AcknowledgeGate } from './acknowledge-gate.js';
import { ArrayAccess } from './array-access.js';
import { Authority, type OwnershipHost } from './authority.js';
import { ControlServer, type ClusterStatus } from './control.js';
import { claimPauseMs, findHolder, probe, type DiscoveryTimings } from './holder-discovery.js';
import { ClaimLostError, LeaseKeeper } from './lease.js';
import { MirrorTakeover } from './mirror-takeover.js';
import { NbdAddresses } from './nbd-addresses.js';
import { NodeReport } from './node-report.js';
import { productionEnvironment, type LeaseArea, type NodeEnvironment } from './node-environment.js';
import { partnerSourceAddress } from './partner-security.js';
import { PartnerRoundTrips } from './partner-round-trips.js';
import { Partners } from './partners.js';
import { RemoteArray } from './remote-array.js';
import { Responder, type ResponderTargets } from './responder.js';
import { ServedVolumes, type Served } from './served-volumes.js';
import { ArrayResync, HolderMovedError, openArray, readClusterRecord, writeOwners } from './shared-array.js';
import { VolumeCatalog } from './volume-catalog.js';
import { DEFAULT_RETRY_MS } from './volume-switch.js';
import { WarmHandover } from './warm-handover.js';

export type { Served } from './served-volumes.js';
export type NodeTimings = DiscoveryTimings;
export const DEFAULT_TIMINGS: NodeTimings = { discoveryMs: 1500, holderWaitMs: 30_000 };

/**
 * A tick of this long without a modified page counts as a pause in writing: the memory manager
 * destages one batch of dirty pages then (MemoryManagerOptions.idleDestage). Short enough that a
 * burst is on the disks well before the next fsync a filesystem issues (ext4 commits every 5 s),
 * long enough that a steady writer (a page modified at least every 50 ms) is never interrupted.
 */
const IDLE_DESTAGE_MS = 50;
/**
 * A watermark pass rests up to four times as long as each batch took: a fifth of the event loop for
 * the destage while the dirty set is at the high watermark, a growing share above it (the rest
 * shrinks to none at twice the watermark, memory-manager.ts). Against a flat 1 (session 16), paired
 * runs of scripts/one-job (random 4 KiB writes, 1 GiB volume): 25–28k → 33–34k IOPS in 5 s,
 * 22–23k → 24–25k in 30 s; a FLUSH after a 3 s burst as long as before; the failover pause after
 * 10 s of writes 0.42–0.49 → 0.59–0.63 s (docs/benchmarks.md, session 17).
 */
const DESTAGE_PACE_RATIO = 4;

/** This node was fenced: it must not serve on; started again, it rejoins (exit code 75 in serve). */
export class FencedError extends ClusterError {
  override name = 'FencedError';
}

/** How long a starting node waits for the holder to hand it its own volumes before it reports ready anyway. */
const HOME_VOLUMES_WAIT_MS = 10_000;
const HOME_VOLUMES_POLL_MS = 100;

/** A node alone has no partner port and dials nobody: nothing ever asks this. */
const NO_PARTNERS: LinkSecurity = {
  key: { auth: Buffer.alloc(0), tls: Buffer.alloc(0) },
  tls: false,
  admits: () => false,
  knownAddress: () => false,
  plausibleEpoch: () => false,
};

/** The parts of a node, built by ClusterNode.start in this order. */
interface Parts {
  config: ClusterConfig;
  nodeId: number;
  env: NodeEnvironment;
  logger: Logger;
  leaseArea: LeaseArea;
  leases: LeaseKeeper;
  identity: Identity;
  targets: ResponderTargets;
  responder: Responder;
  partners: Partners;
  replicator: LinkReplicator;
  pool: FramePool;
  mirror: MirrorStore;
  /** The mirror store reclaims frames from the memory manager, which is built once the array is found. */
  reclaimer: { manager: MemoryManager | null };
  stage: ResyncStage;
  server: NbdServer | null;
  exports: Exports;
  /** What `ftvm events` streams and the metrics count: emitted beside the log lines of the transitions. */
  events: ClusterEvents;
  /** The node's Prometheus metrics, when its config has `metrics` (and it has doors). */
  metrics: NodeMetrics | null;
  /** The resync of the array after an unclean stop, when this node opens it. */
  arrayResync: ArrayResync;
  /** Ends a start that is under way: the lease keeper, or the node itself, fenced it meanwhile. */
  fenceStart: (reason: string) => void;
}

/** Where the shared array is, as this node knows it; the holder changes at a takeover. */
interface ArrayState {
  holderId: number;
  stack: StorageStack | null;
  record: ClusterRecord;
}

export class ClusterNode {
  private mode: 'mirrored' | 'write-through' | null = null;
  private fenced = false;
  private stopping = false;
  /** ClusterNode.start has returned it: from then on onFenced is its owner's to hear. */
  private started = false;
  private readonly clock: Clock;
  private readonly authority: Authority<Served>;
  private readonly volumes: ServedVolumes;
  private readonly handover: WarmHandover;
  private readonly mirrors: MirrorTakeover;
  private readonly catalog: VolumeCatalog;
  /** The holder's writers of the cluster record (ownership loop, catalog) take turns: each re-reads, changes, writes. */
  private recordTurn: Promise<unknown> = Promise.resolve();
  private readonly addresses: NbdAddresses | null;
  private control: ControlServer | null = null;
  /** Measured only by a node that serves clients (not in the simulator). */
  private roundTrips: PartnerRoundTrips | null = null;
  private readonly report: NodeReport;
  /** Told when this node was fenced and must stop serving (the process exits and may rejoin). */
  onFenced: (reason: string) => void = () => undefined;

  private constructor(
    private readonly parts: Parts,
    private readonly array: ArrayState,
    private readonly access: ArrayAccess,
    private readonly manager: MemoryManager,
  ) {
    const { nodeId, env, logger, targets, partners, stage, config } = parts;
    this.clock = env.clock;
    this.volumes = new ServedVolumes(nodeId, manager, stage, targets.owned, (peer) => partners.link(peer), (peer) => this.name(peer), logger);
    this.handover = new WarmHandover(manager, (peer) => partners.link(peer), () => parts.leases.epoch, config.warmFailback, (peer) => this.name(peer), logger);
    this.mirrors = new MirrorTakeover(parts.mirror, manager, () => this.array.stack, access, env.faults?.dropMirrorsAtTakeover === true);
    this.addresses = parts.server ? new NbdAddresses(parts.server, this.clock, logger) : null;
    this.authority = new Authority(this.ownershipHost(), this.clock);
    this.catalog = new VolumeCatalog({
      nodeId,
      config,
      volumes: this.volumes,
      exports: parts.exports,
      server: parts.server,
      manager,
      replicator: parts.replicator,
      pool: parts.pool,
      stage,
      clock: this.clock,
      logger,
      events: parts.events,
      epoch: () => parts.leases.epoch,
      holdsLease: () => parts.leases.holds(),
      name: (id) => this.name(id),
      holderId: () => this.array.holderId,
      stack: () => (this.fenced ? null : this.array.stack),
      arrayAccess: () => this.access,
      record: () => this.array.record,
      setRecord: (record) => {
        this.array.record = record;
      },
      withRecord: (change) => this.withRecord(change),
      link: (peer) => partners.link(peer),
    });
    this.report = new NodeReport({
      ...parts,
      clock: this.clock,
      manager,
      volumes: this.volumes,
      name: (id) => this.name(id),
      holderId: () => this.array.holderId,
      heldStack: () => (this.holdsArray ? this.array.stack : null),
      operation: () => this.control?.operation ?? parts.arrayResync.operation,
      roundTripMs: (peer, linked) => this.roundTrips?.lastOf(peer, linked),
      handoverProgress: (guid) => this.handover.progressOf(guid),
      ended: () => this.stopping || this.fenced,
    });
  }

  /**
   * Joins or forms the cluster, then listens; on any failure, what was opened is closed again. A
   * fence while starting ends the start at once with a FencedError (the caller exits as fenced).
   */
  static async start(config: ClusterConfig, nodeName: string, logger: Logger, timings: NodeTimings = DEFAULT_TIMINGS, env: NodeEnvironment = productionEnvironment): Promise<ClusterNode> {
    const parts = await ClusterNode.buildParts(config, nodeName, logger, env);
    const opened: { stack: StorageStack | null } = { stack: null };
    const fenced = new Promise<never>((_, reject) => {
      parts.fenceStart = (reason) => reject(new FencedError(`fenced while starting: ${reason}`));
    });
    try {
      const node = await Promise.race([ClusterNode.join(parts, timings, opened), fenced]);
      node.started = true;
      return node;
    } catch (error) {
      await parts.metrics?.close();
      await parts.server?.close();
      await parts.partners.stop();
      await opened.stack?.stop().catch(() => undefined);
      parts.leases.abandon();
      await parts.leaseArea.close();
      throw error;
    }
  }

  /** Finds or becomes the array holder, reads the cluster record, builds the node and lets it serve. */
  private static async join(parts: Parts, timings: NodeTimings, opened: { stack: StorageStack | null }): Promise<ClusterNode> {
    const { config, leases, partners, env, logger } = parts;
    await leases.acquire();
    parts.identity.epoch = leases.epoch;
    const own = config.nodes[parts.nodeId];
    if (own?.partner) await partners.listen(own.partner);
    config.nodes.forEach((other, index) => {
      if (index < parts.nodeId && other.partner) partners.dial({ nodeId: index, name: other.name, ...other.partner });
    });
    for (;;) {
      const holderId = await findHolder(config.nodes, parts.nodeId, partners, leases, timings, env.clock, logger);
      const array: ArrayState = { holderId, stack: null, record: null as unknown as ClusterRecord };
      if (holderId === parts.nodeId) {
        parts.targets.holding = true;
        if (config.nodes.length > 1) {
          try {
            parts.identity.epoch = await leases.claimEpoch(claimPauseMs(config.nodes.length, config.leaseMs, leases, partners, parts.nodeId));
          } catch (error) {
            // Another node started meanwhile (its lease was blank a moment ago) or claimed at the
            // same time: look again rather than give up the start (cluster simulation, seed 58).
            if (!(error instanceof ClaimLostError)) throw error;
            parts.targets.holding = false;
            logger.warn(`${error.message}: looking for the array holder again`);
            await sleep(env.clock, Math.floor(config.leaseMs / 4));
            continue;
          }
          partners.announceEpoch();
        }
        const stack = await openArray(config, leases, env.openMember, env.claimMembers, env.clock, logger, parts.arrayResync.onProgress);
        ClusterNode.reportMemberFailures(parts, stack);
        opened.stack = stack;
        array.stack = stack;
        parts.targets.stack = stack;
      } else {
        logger.info(`node ${config.nodes[holderId]?.name} holds the shared array: paging in and destaging through it`);
      }
      // Through whichever node holds the array now: another may take it over (holderIs).
      const access = array.stack ? new ArrayAccess(array.stack, false, DEFAULT_RETRY_MS, env.clock) : new ArrayAccess(new RemoteArray(() => partners.link(array.holderId)), true, DEFAULT_RETRY_MS, env.clock);
      // The holder may die while this node reads its record, and another take the array over: the
      // record is then read from that one (cluster simulation, seed 58 of three nodes: a starting
      // node asked a restarted process that no longer held the array, for two minutes).
      const stillHolder = async (): Promise<boolean> => {
        const link = partners.link(holderId);
        return link !== null && (await probe(link).catch(() => false));
      };
      try {
        // Straight to the holder, not through the access's retries: a holder that died must show
        // here at once so that stillHolder is asked.
        const recordSource = array.stack ?? new RemoteArray(() => partners.link(holderId));
        array.record = await readClusterRecord(config, recordSource, array.stack, env.clock, logger, stillHolder);
      } catch (error) {
        if (!(error instanceof HolderMovedError)) throw error;
        logger.warn(`${error.message}: looking for the array holder again`);
        continue;
      }
      const node = new ClusterNode(parts, array, access, ClusterNode.memoryManager(parts, array, access));
      await node.begin();
      return node;
    }
  }

  /** Everything a node has before it knows who holds the array. */
  private static async buildParts(config: ClusterConfig, nodeName: string, logger: Logger, env: NodeEnvironment): Promise<Parts> {
    const nodeId = config.nodes.indexOf(findNode(config, nodeName));
    const clustered = config.nodes.length > 1;
    const leaseArea = await env.openLeases(config.storage.members);
    const leases = new LeaseKeeper(nodeId, nodeName, env.process, leaseArea, env.clock, { leaseMs: config.leaseMs, processGone: (lease) => env.processGone(lease), fencing: clustered });
    // A cluster needs its partner key before it writes anything: without it no link can be trusted.
    let security = NO_PARTNERS;
    if (clustered) {
      security = await env.linkSecurity(config, (epoch) => leases.plausibleEpoch(epoch), logger).catch(async (error: Error) => {
        await leaseArea.close();
        throw error;
      });
    }
    const pool = new FramePool(config.memory);
    const reclaimer: { manager: MemoryManager | null } = { manager: null };
    const mirror = new MirrorStore(pool, (bytes) => reclaimer.manager?.reclaim(bytes) ?? null, () => reclaimer.manager?.reclaimableBytes ?? 0);
    const stage = new ResyncStage(pool, (guid) => mirror.shapeOf(guid), env.clock);
    const identity: Identity = { clusterId: clusterUuid(config.cluster), nodeId, epoch: 0 };
    const targets: ResponderTargets = {
      mirror,
      stage,
      stack: null,
      owned: new Map(),
      holding: false,
      ready: false,
      ownership: null,
      catalog: null,
      extents: () => [],
      // A linked partner's epoch is as good as one in its takeover message: it passed the handshake.
      epoch: (epoch) => {
        if (epoch <= leases.epoch) return;
        leases.adoptEpoch(epoch);
        identity.epoch = leases.epoch;
      },
    };
    const responder = new Responder(targets, logger);
    const names = new Map(config.nodes.map((entry, index) => [index, entry.name]));
    const context = { local: identity, security, transport: env.transport(security), handler: responder.handle, logger, clock: env.clock, nodeName: (id: number) => names.get(id) };
    const partners = new Partners(context, names, config.partnerTimeoutMs, partnerSourceAddress(config, nodeId));
    const replicator = new LinkReplicator(nodeId, logger);
    const exports = new Exports();
    const events = new ClusterEvents(nodeName, () => env.clock.wallNow());
    const ownConfig = config.nodes[nodeId];
    const metrics = env.doors && ownConfig?.metrics ? new NodeMetrics(nodeName, config.nodes.filter((_, index) => index !== nodeId).map((node) => node.name), events) : null;
    const server = env.doors ? new NbdServer(exports, logger, { limits: config.limits, tls: await loadNbdTls(config.tls), ...(metrics ? { observer: metrics } : {}) }) : null;
    const arrayResync = new ArrayResync(env.clock, events, logger);
    const parts: Parts = { config, nodeId, env, logger, leaseArea, leases, identity, targets, responder, partners, replicator, pool, mirror, reclaimer, stage, server, exports, events, metrics, arrayResync, fenceStart: () => undefined };
    // Wired before the lease is acquired: a start takes seconds (holder discovery, array assembly),
    // and meanwhile a partner's newer epoch is a live partner's, not a takeover's; and a fence then
    // must end the start, not be dropped (cluster simulation, seed 2 of three nodes: a node fenced
    // while starting went on serving without a lease).
    leases.isLivePartner = (slot) => partners.link(slot) !== null;
    leases.onSlow = (what) => logger.warn(what);
    leases.onLate = (late) => {
      env.paceMemberIo(late);
      if (late) logger.warn(`a lease renewal is late: this node's member I/O goes one operation at a time until it lands`);
      else logger.info('lease renewals on time again: member I/O at full concurrency');
    };
    leases.onEpoch = (epoch) => {
      identity.epoch = epoch;
      partners.announceEpoch();
    };
    leases.onFenced = (reason) => {
      logger.error(`fenced while starting: ${reason}`);
      parts.fenceStart(reason);
    };
    partners.onStaleEpoch = (message) => leases.onFenced(message);
    return parts;
  }

  /** The array's members tell `ftvm events` (and the metrics) when one is taken out of service. */
  private static reportMemberFailures(parts: Parts, stack: StorageStack): void {
    stack.array.members.onFailed = (member, memberPath, reason) => parts.events.emit({ kind: 'member-failed', member, path: memberPath, reason });
  }

  private static memoryManager(parts: Parts, array: ArrayState, access: ArrayAccess): MemoryManager {
    const { config, partners, nodeId, leases, env } = parts;
    const maxPage = Math.max(...config.volumes.map((volume) => volume.pageSize));
    // Writes wait at maxDirty pages; the watermarks sit below it, so the destage starts (and its
    // rests shrink) before writes have to wait.
    const maxDirty = Math.max(1, Math.floor(config.limits.dirtyBytes / maxPage));
    const high = Math.max(4, Math.min(Math.floor(config.memory / maxPage / 4), Math.floor(maxDirty / 2)));
    const gate = new AcknowledgeGate(
      {
        nodeCount: config.nodes.length,
        nodeId,
        holderId: () => array.holderId,
        linked: (peer) => partners.link(peer) !== null,
        leaseExpired: (peer) => leases.expired(peer),
        resynced: () => parts.reclaimer.manager?.partnersResynced ?? true,
      },
      env.clock,
    );
    const manager = new MemoryManager(parts.pool, access, parts.replicator, {
      highWatermarkPages: high,
      lowWatermarkPages: Math.floor(high / 4),
      acknowledgeGate: (writeThrough) => gate.check(writeThrough),
      linkGeneration: () => partners.generation,
      idleDestage: { clock: env.clock, ms: IDLE_DESTAGE_MS },
      pacedDestage: { clock: env.clock, ratio: DESTAGE_PACE_RATIO },
      maxDirtyPages: maxDirty,
    });
    parts.reclaimer.manager = manager;
    return manager;
  }

  /** The exports, the ownership loop and the doors: from here on the node serves. */
  private async begin(): Promise<void> {
    const { config, nodeId, targets, partners, leases, replicator, stage } = this.parts;
    targets.extents = () => this.array.record.allocations;
    const { record } = this.array;
    for (const volume of config.volumes) {
      if (record.allocations.some((candidate) => candidate.name === volume.name && !candidate.deleting)) continue;
      if (record.deleted?.includes(volume.name) || record.allocations.some((candidate) => candidate.name === volume.name)) {
        this.parts.logger.warn(`volume ${volume.name} was deleted online ('ftvm volume delete'): it is not exported; take it out of the config`);
        continue;
      }
      throw new Error(`volume ${volume.name} is not in the array's cluster record; start the array holder with this config first`);
    }
    for (const allocation of record.allocations) {
      if (allocation.deleting) continue;
      const homeName = config.volumes.find((volume) => volume.name === allocation.name)?.owner ?? allocation.home ?? allocation.owner;
      const homeId = config.nodes.findIndex((candidate) => candidate.name === homeName);
      const recorded = config.nodes.findIndex((candidate) => candidate.name === allocation.owner);
      // Only the holder decides ownership. A node that joins serves nothing of its own until the
      // holder hands it over (takeover message): the record may be older than the holder's view.
      const holding = this.array.holderId === nodeId;
      const ownerId = holding ? (recorded >= 0 ? recorded : homeId >= 0 ? homeId : nodeId) : recorded >= 0 && recorded !== nodeId ? recorded : this.array.holderId;
      await this.catalog.add(allocation, ownerId, false);
    }
    targets.ownership = (message) => this.onOwnership(message);
    targets.catalog = (message) => this.catalog.onMessage(message);
    if (this.array.holderId === nodeId) {
      // Array requests are served from here on: partners put what they mirrored of this node's
      // volumes in its previous life on the disks, through it, before it serves them.
      targets.ready = true;
      await this.authority.announceHolder(nodeId);
      await this.authority.reclaim([...this.volumes.entries.values()].filter((entry) => entry.ownerId === nodeId));
    }
    for (const entry of this.volumes.entries.values()) if (entry.ownerId === nodeId) this.volumes.own(entry);
    targets.ready = true;
    partners.onUp = (link) => {
      this.parts.events.emit({ kind: 'link-up', peer: this.name(link.peer.nodeId) });
      this.roundTrips?.linked(link);
      this.manager.partnerJoined();
      this.report.watchResync();
      replicator.add(link);
      this.modeChanged();
      this.authority.partnerUp(link.peer.nodeId, link.peer.epoch);
    };
    for (const link of partners.live()) replicator.add(link);
    partners.onDown = (peer, reason) => {
      this.parts.events.emit({ kind: 'link-down', peer: this.name(peer), reason });
      // Its later writes of a volume it copied here would reach no one here.
      stage.peerLost(peer);
      this.partnerLost(peer);
    };
    leases.onFenced = (reason) => this.fence(reason);
    partners.onStaleEpoch = (message) => this.fence(message);
    this.modeChanged();
    await this.openDoors();
    this.authority.start();
    await this.homeVolumesAssigned(HOME_VOLUMES_WAIT_MS);
  }

  private async openDoors(): Promise<void> {
    const { config, nodeId, logger, metrics } = this.parts;
    const own = config.nodes[nodeId];
    if (!this.addresses || !own) return;
    // First: a held metrics port ends the start before any client could attach.
    if (metrics && own.metrics) {
      metrics.source = () => this.report.metricsSnapshot();
      await metrics.listen(own.metrics);
      logger.info(`metrics at ${metricsUrl(own.metrics)}`);
    }
    for (const address of own.listen) await this.addresses.listen(address, 'own');
    const control = new ControlServer(this.array.stack?.array ?? null, logger, path.dirname(own.control as string));
    control.cluster = () => this.status();
    control.events = this.parts.events;
    control.volumes = this.catalog;
    control.background = () => this.parts.arrayResync.operation;
    control.mirrorPages = () => this.mirrors.mirrorPages((guid) => this.volumes.entries.get(guid)?.allocation.name ?? guid);
    await control.listen(own.control as string);
    this.control = control;
    if (config.nodes.length > 1) {
      this.roundTrips = new PartnerRoundTrips(this.clock, () => this.parts.partners.live());
      this.roundTrips.start();
    }
  }

  /** A message of the ownership loop from another node (routed by the responder). */
  private onOwnership(message: OwnershipMessage): Promise<Message> {
    // Given to another node: what a warm handover staged here of it is not for this node.
    const elsewhere = (message.type === MessageType.VolumeHandover && message.toNodeId !== this.parts.nodeId) || (message.type === MessageType.OwnerNotice && message.ownerNodeId !== this.parts.nodeId);
    if (elsewhere) this.parts.stage.invalidate(message.allocation);
    return this.authority.onOwnershipMessage(message);
  }

  /** What the ownership loop sees of this node. */
  private ownershipHost(): OwnershipHost<Served> {
    const { config, nodeId, leases, partners, logger, identity } = this.parts;
    const array = this.array;
    return {
      nodeId,
      nodeCount: config.nodes.length,
      get holderId() {
        return array.holderId;
      },
      leases,
      partners,
      served: this.volumes.entries,
      logger,
      events: this.parts.events,
      takeoverAddresses: config.takeoverAddresses,
      name: (peer) => this.name(peer),
      fence: (reason) => this.fence(reason),
      setEpoch: (epoch) => {
        identity.epoch = epoch;
        partners.announceEpoch();
      },
      claimPauseMs: () => claimPauseMs(config.nodes.length, config.leaseMs, leases, partners, nodeId),
      destageMirrors: (volumes) => this.mirrors.destageMirrors(volumes.map((entry) => entry.allocation)),
      destageMirrorsToArray: (volumes) => this.mirrors.destageMirrorsToArray(volumes.map((entry) => entry.allocation)),
      dropMirrorsExcept: (volume, writer) => this.parts.mirror.dropAllocationExcept(volume.allocation.guid, writer),
      holderIs: (peer) => {
        if (array.stack || peer === array.holderId) return;
        logger.warn(`node ${this.name(peer)} holds the shared array now: paging in and destaging through it`);
        array.holderId = peer;
      },
      probeHolder: async (peer) => {
        const link = partners.link(peer);
        if (!link) return false;
        return probe(link).catch(() => false);
      },
      openingArray: (opening) => {
        this.parts.targets.holding = opening || !!array.stack;
      },
      holdArray: () => this.holdArray(),
      own: (entry, handedOverAt) => this.volumes.own(entry, handedOverAt),
      serveFromMirrors: (entry) => {
        const previous = entry.ownerId;
        return this.mirrors.serveFromMirrors(entry.allocation, !entry.memory, () => this.volumes.own(entry), () => this.volumes.forward(entry, previous));
      },
      copyResident: (entry, to, phase) => this.handover.copyResident(entry, to, phase),
      forward: (entry, ownerId) => this.volumes.forward(entry, ownerId),
      releaseVolume: (entry) => this.volumes.release(entry),
      writeOwners: () =>
        this.withRecord(async () => {
          if (!array.stack) throw new Error('only the array holder writes the cluster record');
          array.record = await writeOwners(array.stack, array.record, (guid) => {
            const entry = this.volumes.entries.get(guid);
            return entry ? this.name(entry.ownerId) : undefined;
          });
        }),
      borrowAddresses: (dead, wanted) => this.addresses?.borrow(this.name(dead), config.nodes[dead]?.listen ?? [], wanted),
      returnAddresses: async (dead) => {
        await this.addresses?.giveBack(this.name(dead));
      },
    };
  }

  /** Becomes the array holder: the array assembled here, page-in and destage switched to it. */
  private async holdArray(): Promise<void> {
    const { config, nodeId, leases, env, logger, targets } = this.parts;
    const stack = await openArray(config, leases, env.openMember, env.claimMembers, env.clock, logger, this.parts.arrayResync.onProgress);
    ClusterNode.reportMemberFailures(this.parts, stack);
    this.array.stack = stack;
    targets.stack = stack;
    targets.holding = true;
    this.array.holderId = nodeId;
    if (this.control) this.control.array = stack.array;
    this.access.switchTo(stack, false);
    // Ownership as the previous holder last wrote it: it writes the record before it tells a node
    // to serve a volume, and a message of that may have missed this node (ownership simulator,
    // three nodes, seed 13: a failback announcement lost with a cut link).
    const record = await new NodeStateStore(stack).readClusterRecord().catch(() => null);
    if (!record) return;
    this.array.record = record;
    for (const allocation of record.allocations) {
      const entry = this.volumes.entries.get(allocation.guid);
      const owner = config.nodes.findIndex((node) => node.name === allocation.owner);
      if (!entry || owner < 0 || entry.memory || owner === entry.ownerId || owner === nodeId) continue;
      logger.info(`volume ${allocation.name} is served by node ${this.name(owner)}, as the cluster record says`);
      this.volumes.forward(entry, owner);
    }
    // The previous holder may have died between writing a volume change and telling this node.
    await this.catalog.reconcile(record).catch((error: Error) => logger.error(`volumes of the cluster record: ${error.message}`));
  }

  /** Runs `change` once every earlier writer of the cluster record on this node is done. */
  private withRecord<T>(change: () => Promise<T>): Promise<T> {
    const turn = this.recordTurn.then(change, change);
    this.recordTurn = turn.catch(() => undefined);
    return turn;
  }

  /** Resolves once this node serves every volume whose home it is (or after `timeoutMs`: the holder decides). */
  private async homeVolumesAssigned(timeoutMs: number): Promise<void> {
    const deadline = this.clock.now() + timeoutMs;
    const pending = (): Served[] => [...this.volumes.entries.values()].filter((entry) => entry.homeId === this.parts.nodeId && entry.ownerId !== this.parts.nodeId);
    while (pending().length > 0 && this.clock.now() < deadline) await new Promise<void>((resolve) => this.clock.setTimer(HOME_VOLUMES_POLL_MS, resolve));
    const left = pending();
    if (left.length > 0) this.parts.logger.warn(`the array holder has not handed over ${left.map((entry) => entry.allocation.name).join(', ')} yet: forwarding until it does`);
  }

  name(nodeId: number): string {
    return this.parts.config.nodes[nodeId]?.name ?? String(nodeId);
  }

  /** The volumes this node exports, by allocation GUID (test/sim drives them directly). */
  get exports(): ReadonlyMap<string, Served> {
    return this.volumes.entries;
  }

  /** Whether this node may acknowledge now: it holds its lease and was not fenced. */
  get holdsLease(): boolean {
    return !this.fenced && this.parts.leases.holds();
  }

  /** Partners linked now. */
  get livePartners(): number {
    return this.parts.partners.liveCount();
  }

  /** Whether this node holds the shared array open. */
  get holdsArray(): boolean {
    return this.array.stack !== null && !this.fenced;
  }

  status(): ClusterStatus {
    return this.report.status();
  }

  private modeChanged(): void {
    const mode = this.parts.partners.live().length > 0 ? 'mirrored' : 'write-through';
    if (mode === this.mode) return;
    const wasMirrored = this.mode === 'mirrored';
    this.mode = mode;
    this.parts.events.emit({ kind: 'mode', mode });
    if (mode === 'mirrored') {
      this.parts.logger.info('a partner is live: writes are acknowledged once mirrored (write-back)');
      return;
    }
    this.parts.logger.warn('no live partner: writes are acknowledged once on the disks (write-through)');
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
    if (peer === this.array.holderId) {
      this.parts.logger.error(`node ${this.name(peer)}, which holds the shared array, is gone: page-in and destage wait until a node holds it again`);
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
    this.manager.stopIdleDestage();
    this.roundTrips?.stop();
    this.parts.logger.error(`fenced: ${reason}; this node stops serving and must rejoin`);
    this.parts.events.emit({ kind: 'fenced', reason });
    this.authority.stop();
    this.addresses?.close();
    this.parts.leases.abandon();
    this.parts.server?.abort();
    void this.parts.partners.stop();
    // Fenced while its volumes were being handed to it: its start ends here (nobody else would hear:
    // the caller sets onFenced once start returns; cluster simulation, seed 6 of four nodes).
    if (!this.started) this.parts.fenceStart(reason);
    else this.onFenced(reason);
  }

  /** Drains clients, destages everything, stops the array cleanly. */
  async stop(): Promise<void> {
    const { partners, responder, leases, logger, leaseArea } = this.parts;
    this.stopping = true;
    // Everything is flushed below, in order; no pass of its own meanwhile.
    this.manager.stopIdleDestage();
    this.roundTrips?.stop();
    this.authority.stop();
    this.addresses?.close();
    await this.control?.close();
    await this.parts.metrics?.close();
    await this.parts.server?.close();
    // Forwarded writes running now are acknowledged to another node's client: let them finish, and
    // take no new ones, before the final destage.
    await responder.stopVolumeRequests();
    // Fig. 9 for each owned allocation: on the disks, frames freed, partners' structures dismantled.
    for (const allocation of this.volumes.ownedBy(this.parts.nodeId)) {
      await this.manager.releaseAllocation(allocation.guid).catch((error: Error) => logger.error(`releasing ${allocation.name} at stop failed: ${error.message}`));
    }
    await this.manager.flush().catch((error: Error) => logger.error(`destage at stop failed: ${error.message}`));
    await partners.stop();
    const stack = this.array.stack;
    if (stack) {
      // Partners' acknowledged writes this node mirrors go to the disks before the array closes.
      this.mirrors.destageMirrors(this.array.record.allocations);
      await stack.stop().catch((error: Error) => logger.error(`storage stop failed: ${error.message}`));
    }
    // Released last: a partner takes over at once, and by now everything is on the disks.
    await leases.release();
    await leaseArea.close();
  }
}
