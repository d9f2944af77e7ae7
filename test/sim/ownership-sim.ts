// A seeded simulation of failover and failback: two or three nodes, each with the real ownership loop
// (src/cluster/authority.ts), the real LeaseKeeper (lease.ts) and a real VolumeSwitch per volume
// (volume-switch.ts, with localView for forwarded requests), over simulated partner links, lease
// files, shared disks and time (timed-world.ts). Clients write and read every volume throughout, through
// whichever node they reach, while nodes crash, pause (SIGSTOP) and come back, the partner links are
// cut and healed, and lease writes turn slow or fail.
//
// What is simulated, and follows the real node's rules (src/cluster/node.ts, src/memory):
//   data plane   an owner's write changes its page and is mirrored to every live partner before it
//                is acknowledged; with none live it is written through; dirty pages are destaged and
//                then cleaned on the partners; losing the last partner flushes at once; Fig. 9
//                (release) flushes and drops the partners' mirrors
//   array        only the array holder writes the disks, and only while its lease holds (fencedMember);
//                the others page in and destage through it over their link; a write lands within
//                DISK_MAX_MS, well inside the lease margin (leaseMs/4)
//   mirrors      kept until the owner's resync after a join drops them (a page clean up to its version
//                then) or a takeover destages them; a node about to serve a volume first has its
//                partners put what they mirrored of its previous process on the disks (reclaim)
//   handover     a node giving a volume up copies its clean cached pages to the next owner, once
//                while still serving and once paused (what changed since); resync-stage.ts's rules
//                there: a page is dropped at a mirrored write of it, all at the giver's link closing,
//                a takeover to another node, another epoch; the rest start cached at the new owner
//   start        lease acquire, a holder found by probing partners or claimed (findHolder's rule),
//                the owners from the cluster record the holder writes
//   links        FIFO per direction, heartbeats; a link closes at a crash (the kernel), at a fence, or
//                when heartbeats stop for PARTNER_TIMEOUT_MS (a pause, or a cut that lasts); a hello
//                between different epochs fences the older side
//   clients      one per volume, reconnecting as QEMU does to its node's address (served by a
//                borrower while that node is away) or, multipath, to any node
//
// Checked after every event, for every volume: at most one live node serves it from memory while
// holding its lease (so at most one can acknowledge). At every acknowledgement: the node holds its
// lease. Every read returns a value allowed by the writes acknowledged before it started and the
// writes submitted. At the end, after a quiet period without faults: every node is up, one holds
// the array, every volume is served by its home node again (failback), and a read of every page
// returns at least the last acknowledged write.
import type { Clock } from '../../src/core/index.js';
import { Authority, type OwnedVolume, type OwnershipHost, type OwnershipLink } from '../../src/cluster/authority.js';
import { LeaseKeeper } from '../../src/cluster/lease.js';
import { localView, OwnerUnavailableError, VolumeSwitch } from '../../src/cluster/volume-switch.js';
import type { Logger } from '../../src/observe/index.js';
import { MessageType, Status, type Message, type OwnershipMessage } from '../../src/partner/index.js';
import type { Lease } from '../../src/storage/index.js';
import { VolumeError, type Extent, type Volume } from '../../src/volume/index.js';
import { randomInt, seededRandom } from '../support/seeded-random.js';
import { SimLeaseDisk, type LeaseWriteDraw } from './lease-disk.js';
import { TimedWorld, type Actor } from './timed-world.js';

export interface OwnershipSimOptions {
  /** 2 or 3; drawn from the seed when not given. */
  nodes?: number;
  leaseMs?: number;
  faultMs?: number;
  quietMs?: number;
  trace?: boolean;
  /** Overlapping faults (see OwnershipSimulation.storm); drawn from the seed when not given. */
  storm?: boolean;
  /** Broken on purpose, to prove the checks fail: nodes see every other lease as expired. */
  ignoreLeases?: boolean;
  /** Broken on purpose: a node taking over drops the mirrored pages instead of destaging them. */
  dropMirrorsAtTakeover?: boolean;
}

export interface OwnershipSimStats {
  nodes: number;
  crashes: number;
  pauses: number;
  cuts: number;
  slowLeaseSpells: number;
  fenced: number;
  arrayTakeovers: number;
  volumeTakeovers: number;
  failbacks: number;
  /** Pages that started resident at a node handed a volume (warm handover). */
  warmPages: number;
  /** Mirrored pages a node taking a dead owner's volume over kept resident. */
  adoptedPages: number;
  writesAcked: number;
  writesFailed: number;
  readsChecked: number;
  reconnects: number;
}

export interface OwnershipSimResult {
  seed: number;
  ok: boolean;
  failure?: string;
  steps: number;
  stats: OwnershipSimStats;
  trace: string[];
}

const PAGE_BYTES = 8;
const PAGES = 6;
const PARTNER_TIMEOUT_MS = 500;
const HEARTBEAT_MS = PARTNER_TIMEOUT_MS / 4;
const DISCOVERY_MS = 1500;
const HOLDER_WAIT_MS = 30_000;
/** The longest a data write takes to land once submitted: below the lease margin, as the design assumes. */
const DISK_MAX_MS = 150;
const STEP_LIMIT = 1_500_000;
/** How long the cluster must have been whole before a fault that may cost a node its memory. */
const HEALTHY_MS = 500;
const TRACE_LINES = Number(process.env.OWNERSHIP_SIM_TRACE_LINES ?? 120);

type Payload =
  | { kind: 'heartbeat'; epoch: number }
  | { kind: 'probe' }
  | { kind: 'takeover'; message: OwnershipMessage }
  | { kind: 'mirror'; guid: string; page: number; value: number }
  | { kind: 'clean'; guid: string; page: number; value: number }
  | { kind: 'clean-all'; guid: string; upTo: number }
  | { kind: 'release'; guid: string }
  | { kind: 'resync-pages'; guid: string; epoch: number; begin: boolean; pages: Array<[number, number]> }
  | { kind: 'resync-end'; epoch: number }
  | { kind: 'io'; guid: string; write: boolean; page: number; value: number }
  | { kind: 'disk-write'; key: string; value: number }
  | { kind: 'disk-flush' }
  | { kind: 'disk-read'; key: string };

interface Reply {
  ok: boolean;
  value: number;
  /** Why not: 'not-local' (ask again elsewhere) or a message. */
  why: string;
  message?: Message;
}

const OK: Reply = { ok: true, value: 0, why: '' };
const refused = (why: string): Reply => ({ ok: false, value: 0, why });

interface Pending {
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
}

class LinkClosedError extends Error {}

/** One TCP connection between two incarnations. */
class SimLink {
  closed = false;
  private readonly lastDelivery = [0, 0];
  private readonly pending = [new Map<number, Pending>(), new Map<number, Pending>()];
  /** Deliveries held while the network between the two is cut (TCP retransmits them after). */
  private readonly held: Array<Array<() => void>> = [[], []];
  private nextId = 1;
  readonly ends: [LinkEnd, LinkEnd];

  constructor(
    private readonly sim: OwnershipSimulation,
    readonly nodes: [SimNode, SimNode],
  ) {
    this.ends = [new LinkEnd(this, 0), new LinkEnd(this, 1)];
  }

  send(from: 0 | 1, payload: Payload, replyTo: number, reply?: Reply): void {
    const sender = this.nodes[from];
    const to = (1 - from) as 0 | 1;
    const receiver = this.nodes[to];
    if (this.closed || !sender.alive) return;
    const { world, random } = this.sim;
    const delay = random() < 0.05 ? 5 + random() * 40 : 0.1 + random() * 2;
    const at = Math.max(world.now + delay, this.lastDelivery[from] as number);
    this.lastDelivery[from] = at;
    const deliver = (): void => {
      if (this.closed) return;
      if (this.sim.isCut(sender.node, receiver.node)) {
        (this.held[from] as Array<() => void>).push(deliver);
        return;
      }
      receiver.heard(sender.node);
      if (payload.kind === 'heartbeat' && !reply) receiver.epochHeard(payload.epoch);
      if (reply) {
        const waiting = (this.pending[to] as Map<number, Pending>).get(replyTo);
        (this.pending[to] as Map<number, Pending>).delete(replyTo);
        waiting?.resolve(reply);
        return;
      }
      if (payload.kind === 'heartbeat') return;
      void receiver.handle(payload, sender.node).then((answer) => {
        if (replyTo !== 0 && receiver.alive) this.send(to, payload, replyTo, answer);
      });
    };
    world.schedule(at - world.now, receiver, `${sender.label}→${receiver.label} ${reply ? 'reply' : payload.kind}`, deliver);
  }

  request(from: 0 | 1, payload: Payload): Promise<Reply> {
    if (this.closed) return Promise.reject(new LinkClosedError('link closed'));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      (this.pending[from] as Map<number, Pending>).set(id, { resolve, reject });
      this.send(from, payload, id);
    });
  }

  /** The network between the two works again: what it held is delivered, in order. */
  mend(): void {
    for (const queue of this.held) for (const deliver of queue.splice(0)) deliver();
  }

  /** Both ends learn of the close, each when its process runs (`delayMs` after now). */
  close(why: string, delayMs: number): void {
    if (this.closed) return;
    this.closed = true;
    this.sim.note(`link ${this.nodes[0].label}–${this.nodes[1].label} closes (${why})`);
    for (const side of [0, 1] as const) {
      const node = this.nodes[side];
      const peer = this.nodes[1 - side] as SimNode;
      this.sim.world.schedule(delayMs, node, `${node.label} sees link to ${peer.label} closed`, () => {
        for (const waiting of (this.pending[side] as Map<number, Pending>).values()) waiting.reject(new LinkClosedError(`link to ${peer.label} closed`));
        (this.pending[side] as Map<number, Pending>).clear();
        node.linkDown(peer.node, this);
      });
    }
  }
}

/** One end of a link, as its node uses it (and as the ownership loop sees a partner link). */
class LinkEnd implements OwnershipLink {
  readonly peer: { nodeId: number };

  constructor(
    readonly link: SimLink,
    readonly side: 0 | 1,
  ) {
    this.peer = { nodeId: link.nodes[(1 - side) as 0 | 1].node };
  }

  call(payload: Payload): Promise<Reply> {
    return this.link.request(this.side, payload);
  }

  async request(message: Message): Promise<Message> {
    const reply = await this.call({ kind: 'takeover', message: message as OwnershipMessage });
    return reply.message ?? { type: MessageType.CommandComplete, requestId: message.requestId, requestType: message.type, status: Status.IoError };
  }
}

interface SimVolume extends OwnedVolume {
  readonly allocation: { guid: string; name: string };
  memory: SimMemory | null;
  readonly switch: VolumeSwitch;
}

interface CachedPage {
  value: number;
  dirty: boolean;
  destaging: boolean;
}

/** What the simulated volumes share: one page per request, and the requests the clients never send. */
abstract class SimVolumeBase implements Volume {
  readonly sizeBytes = PAGES * PAGE_BYTES;
  readonly flushCoversAllConnections = true;
  abstract read(offset: number, into: Buffer): Promise<void>;
  abstract write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void>;
  abstract flush(): Promise<void>;

  trim(): Promise<void> {
    return Promise.reject(new VolumeError('ENOTSUP', 'not simulated'));
  }

  zero(): Promise<void> {
    return Promise.reject(new VolumeError('ENOTSUP', 'not simulated'));
  }

  cache(): Promise<void> {
    return Promise.resolve();
  }

  blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    return Promise.resolve([{ lengthBytes, flags: 0 }]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A volume served from one node's memory: the memory manager's rules at page granularity. */
class SimMemory extends SimVolumeBase {
  private readonly pages = new Map<number, CachedPage>();
  private active = true;
  private resyncs = 0;
  private owed = false;
  /** The highest value (version) written here. */
  private highest = 0;

  /** `resident`: clean pages it starts with (installCleanFrame, from a warm handover). */
  constructor(
    private readonly node: SimNode,
    private readonly guid: string,
    resident: ReadonlyMap<number, number> = new Map(),
  ) {
    super();
    for (const [page, value] of resident) this.pages.set(page, { value, dirty: false, destaging: false });
    this.destageSoon();
  }

  /** installCleanPage: a page the disks hold, cached clean unless already cached. */
  installClean(page: number, value: number): void {
    if (!this.pages.has(page)) this.pages.set(page, { value, dirty: false, destaging: false });
  }

  /** lockCleanPages: what a warm handover copies (after a flush). */
  cleanPages(): Array<[number, number]> {
    return [...this.pages].filter(([, cached]) => !cached.dirty && !cached.destaging).map(([page, cached]) => [page, cached.value]);
  }

  async read(offset: number, into: Buffer): Promise<void> {
    const page = offset / PAGE_BYTES;
    let cached = this.pages.get(page);
    if (!cached) {
      const value = await this.node.diskRead(`${this.guid}:${page}`);
      cached = this.pages.get(page) ?? { value, dirty: false, destaging: false };
      this.pages.set(page, cached);
    }
    into.writeUInt32LE(cached.value, 0);
  }

  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    const page = offset / PAGE_BYTES;
    const value = (data[0] as Buffer).readUInt32LE(0);
    this.highest = Math.max(this.highest, value);
    const cached = this.pages.get(page);
    if (cached) {
      cached.value = value;
      cached.dirty = true;
    } else this.pages.set(page, { value, dirty: true, destaging: false });
    // The memory manager's rules: the acknowledgement gate before a mirrored write goes out; all
    // live partners hold it and none joined meanwhile, else write-through, gated again.
    let held = false;
    if (this.node.liveLinks().length > 0) {
      await this.node.acknowledgeGate(false);
      const generation = this.node.linkGeneration;
      const links = this.node.liveLinks();
      const answers = await Promise.allSettled(links.map((end) => end.call({ kind: 'mirror', guid: this.guid, page, value })));
      held = links.length > 0 && answers.every((answer) => answer.status === 'fulfilled' && answer.value.ok) && generation === this.node.linkGeneration;
    }
    if (!held || fua) await this.writeThrough(page, value);
    if (!held) await this.node.acknowledgeGate(true);
  }

  async flush(): Promise<void> {
    for (;;) {
      const dirty = [...this.pages.entries()].filter(([, cached]) => cached.dirty);
      if (dirty.length === 0) return;
      await Promise.all(dirty.map(([page, cached]) => this.writeThrough(page, cached.value)));
    }
  }

  /**
   * MemoryManager.partnerJoined's resync: everything modified so far to the disks, then every
   * partner drops its mirrors of versions up to then (a page clean over the allocation, then a
   * round trip). Values are versions here: they only grow.
   */
  partnerJoined(): void {
    this.resyncs++;
    const upTo = this.highest;
    void this.flush()
      .then(() => Promise.all(this.node.liveLinks().map((end) => end.call({ kind: 'clean-all', guid: this.guid, upTo }).catch(() => null))))
      .then(
        () => {
          this.owed = false;
        },
        () => {
          this.owed = true;
        },
      )
      .finally(() => this.resyncs--);
  }

  get resynced(): boolean {
    return this.resyncs === 0 && !this.owed;
  }

  /** Losing the last partner: pages acknowledged while mirrored go to the disks at once. */
  partnerLost(): void {
    if (this.node.liveLinks().length === 0) this.flush().catch(() => undefined);
  }

  /** Fig. 9: every page on the disks, the partners' structures dismantled, the frames freed. */
  async release(): Promise<void> {
    await this.flush();
    await Promise.allSettled(this.node.liveLinks().map((end) => end.call({ kind: 'release', guid: this.guid })));
    this.pages.clear();
    this.active = false;
  }

  private async writeThrough(page: number, value: number): Promise<void> {
    this.node.array.enqueue(`${this.guid}:${page}`, value);
    await this.node.array.flush();
    this.cleaned(page, value);
  }

  private cleaned(page: number, value: number): void {
    const cached = this.pages.get(page);
    if (!cached || cached.value !== value || !cached.dirty) return;
    cached.dirty = false;
    for (const end of this.node.liveLinks()) end.call({ kind: 'clean', guid: this.guid, page, value }).catch(() => undefined);
  }

  private destageSoon(): void {
    const { sim } = this.node;
    this.node.clock.setTimer(20 + sim.random() * 120, () => {
      if (!this.active || !this.node.alive) return;
      const batch: Array<[number, CachedPage, number]> = [];
      for (const [page, cached] of this.pages) {
        if (!cached.dirty || cached.destaging) continue;
        cached.destaging = true;
        batch.push([page, cached, cached.value]);
        this.node.array.enqueue(`${this.guid}:${page}`, cached.value);
      }
      if (batch.length > 0) {
        this.node.array.flush().then(
          () => {
            for (const [page, cached, value] of batch) {
              cached.destaging = false;
              this.cleaned(page, value);
            }
          },
          () => {
            for (const [, cached] of batch) cached.destaging = false;
          },
        );
      }
      this.destageSoon();
    });
  }
}

/** A volume another node owns: requests go to it over the link (forwarded-volume.ts's rules). */
class SimForwarder extends SimVolumeBase {
  constructor(
    private readonly node: SimNode,
    private readonly guid: string,
    private readonly ownerId: number,
  ) {
    super();
  }

  async read(offset: number, into: Buffer): Promise<void> {
    const reply = await this.forward(false, offset / PAGE_BYTES, 0);
    into.writeUInt32LE(reply.value, 0);
  }

  async write(offset: number, data: readonly Buffer[]): Promise<void> {
    await this.forward(true, offset / PAGE_BYTES, (data[0] as Buffer).readUInt32LE(0));
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  private async forward(write: boolean, page: number, value: number): Promise<Reply> {
    const end = this.node.linkTo(this.ownerId);
    if (!end) throw new OwnerUnavailableError(`owner n${this.ownerId} is not connected`);
    let reply: Reply;
    try {
      reply = await end.call({ kind: 'io', guid: this.guid, write, page, value });
    } catch (error) {
      throw new OwnerUnavailableError(`owner n${this.ownerId}: ${(error as Error).message}`);
    }
    if (reply.ok) return reply;
    if (reply.why === 'not-local') throw new OwnerUnavailableError(`n${this.ownerId} does not serve it`);
    throw new VolumeError('EIO', `n${this.ownerId}: ${reply.why}`);
  }
}

/** One incarnation of a node: the process between its start and its crash, fence or stop. */
class SimNode implements Actor, OwnershipHost<SimVolume> {
  alive = true;
  /** It gave way to the holder (Authority): it will be fenced. */
  yielded = false;
  /** Its lease is acquired: it listens and dials from now on (node.ts). */
  acquired = false;
  started = false;
  readonly label: string;
  readonly keeper: LeaseKeeper;
  readonly clock: Clock;
  readonly authority: Authority<SimVolume>;
  holderId = -1;
  /** Says so to probes from the start of its claim (as targets.holding), writes the disks once `holding`. */
  claimingArray = false;
  holding = false;
  epochAnnounced = 0;
  readonly served = new Map<string, SimVolume>();
  readonly links = new Map<number, LinkEnd>();
  /** Partners.generation: counts links that came up. */
  linkGeneration = 0;
  private readonly ownedViews = new Map<string, Volume>();
  /** Per volume, page → the newest value mirrored and the node that wrote it (mirror-store.ts). */
  private readonly mirrors = new Map<string, Map<number, { value: number; writer: number }>>();
  /** resync-stage.ts: per giver, the epoch of its warm handover and, per volume, page → value. */
  private readonly stage = new Map<number, { epoch: number; complete: boolean; pages: Map<string, Map<number, number>> }>();
  /** A warm handover between its passes: per volume, page → the value sent (node.ts copies). */
  private readonly copies = new Map<string, { to: number; end: LinkEnd; epoch: number; sent: Map<number, number> }>();
  private readonly pendingDisk = new Set<Promise<void>>();
  /** Members whose writes reached this node while it did not hold the array, since their last flush. */
  private readonly refusedWrites = new Set<number>();
  /** Blocks whose last write was refused (lease), by the sequence of that write. */
  private readonly refusedBlocks = new Map<string, number>();
  private writeSequence = 0;
  readonly array: SimArrayAccess;
  private readonly lastHeard = new Map<number, number>();
  readonly logger: Logger;
  readonly leases: LeaseKeeper;
  readonly partners: OwnershipHost<SimVolume>['partners'];
  readonly takeoverAddresses = true;

  constructor(
    readonly sim: OwnershipSimulation,
    readonly node: number,
    readonly generation: number,
  ) {
    this.label = `n${node}.${generation}`;
    this.clock = sim.world.clockFor(this);
    this.logger = sim.loggerFor(this);
    const processGone = (lease: Lease): boolean | null => sim.processGone(this, lease);
    this.keeper = new LeaseKeeper(node, `n${node}`, { pid: 1000 * (node + 1) + generation, processStart: generation, host: sim.hostOf(node) }, sim.leaseDisk.diskFor(() => this, () => this.label), this.clock, {
      leaseMs: sim.leaseMs,
      processGone,
      fencing: true,
    });
    this.leases = sim.options.ignoreLeases ? Object.assign(Object.create(this.keeper) as LeaseKeeper, { expired: () => true }) : this.keeper;
    this.keeper.onFenced = (reason) => sim.fence(this, reason);
    this.keeper.onEpoch = (epoch) => this.setEpoch(epoch);
    this.keeper.isLivePartner = (slot) => this.links.has(slot);
    this.partners = { link: (peer) => this.linkTo(peer), live: () => this.liveLinks() };
    this.authority = new Authority(this, this.clock);
    this.array = new SimArrayAccess(this);
  }

  get nodeId(): number {
    return this.node;
  }

  linkTo(peer: number): LinkEnd | null {
    const end = this.links.get(peer);
    return end && !end.link.closed ? end : null;
  }

  liveLinks(): LinkEnd[] {
    return [...this.links.values()].filter((end) => !end.link.closed);
  }

  heard(peer: number): void {
    this.lastHeard.set(peer, this.sim.world.now);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(ms, resolve));
  }

  // ——— start-up: lease, holder, volumes ———

  async boot(): Promise<void> {
    try {
      await this.keeper.acquire();
    } catch (error) {
      this.sim.stop(this, `lease acquire failed: ${(error as Error).message}`);
      return;
    }
    this.epochAnnounced = this.keeper.epoch;
    this.acquired = true;
    this.heartbeat();
    const began = this.sim.world.now;
    for (;;) {
      if (!this.alive) return;
      const live = this.liveLinks();
      const answers = await Promise.all(live.map((end) => end.call({ kind: 'probe' }).then((reply) => (reply.ok ? end.peer.nodeId : null), () => null)));
      const holder = answers.find((answer) => answer !== null);
      if (holder !== undefined && holder !== null) {
        this.holderId = holder;
        break;
      }
      // findHolder's rule, on the links that were probed.
      const probed = new Set(live.map((end) => end.peer.nodeId));
      const others = this.sim.nodeIds.filter((id) => id !== this.node);
      const elapsed = this.sim.world.now - began;
      const everyoneHere = others.every((id) => probed.has(id));
      const first = live.every((end) => end.peer.nodeId > this.node);
      const unreachable = others.filter((id) => !probed.has(id) && !this.leases.expired(id));
      if ((everyoneHere || elapsed >= DISCOVERY_MS) && first && unreachable.length === 0) {
        this.claimingArray = true;
        try {
          this.setEpoch(await this.keeper.claimEpoch(this.claimPauseMs()));
        } catch (error) {
          // ClusterNode.start fails with it: the process exits (its lease abandoned) and is started again.
          this.sim.stop(this, `claim at start lost: ${(error as Error).message}`);
          return;
        }
        await this.holdArray();
        break;
      }
      if (elapsed >= DISCOVERY_MS + HOLDER_WAIT_MS) {
        this.sim.stop(this, 'no node opened the shared array');
        return;
      }
      await this.sleep(100);
    }
    if (!this.alive) return;
    for (const [index, guid] of this.sim.guids.entries()) {
      const recorded = this.sim.record.get(guid) ?? index;
      const ownerId = this.holderId === this.node ? recorded : recorded !== this.node ? recorded : this.holderId;
      const entry: SimVolume = {
        allocation: { guid, name: `vol${index}` },
        ownerId,
        homeId: index,
        memory: null,
        moving: '',
        switch: new VolumeSwitch(`vol${index}`, PAGES * PAGE_BYTES, new SimForwarder(this, guid, ownerId), () => this.keeper.holds(), 60_000, this.clock),
      };
      this.served.set(guid, entry);
    }
    const mine = [...this.served.values()].filter((entry) => entry.ownerId === this.node);
    if (this.holderId === this.node) {
      await this.authority.announceHolder(this.node);
      await this.authority.reclaim(mine);
    }
    if (!this.alive) return;
    for (const entry of mine) this.own(entry);
    this.started = true;
    this.sim.note(`${this.label} started (holder n${this.holderId}, epoch ${this.keeper.epoch})`);
    this.authority.start();
  }

  private heartbeat(): void {
    this.clock.setTimer(HEARTBEAT_MS, () => {
      if (!this.alive) return;
      const now = this.sim.world.now;
      for (const end of this.liveLinks()) {
        if (now - (this.lastHeard.get(end.peer.nodeId) ?? now) > PARTNER_TIMEOUT_MS) end.link.close(`${this.label} heard nothing for ${PARTNER_TIMEOUT_MS} ms`, 0);
        else end.link.send(end.side, { kind: 'heartbeat', epoch: this.epochAnnounced }, 0);
      }
      this.heartbeat();
    });
  }

  linkUp(end: LinkEnd, peerEpoch: number): void {
    const peer = end.peer.nodeId;
    this.links.set(peer, end);
    this.linkGeneration++;
    this.heard(peer);
    if (!this.started) return;
    for (const entry of this.served.values()) entry.memory?.partnerJoined();
    this.authority.partnerUp(peer, peerEpoch);
  }

  linkDown(peer: number, link: SimLink): void {
    if (this.links.get(peer)?.link !== link) return;
    this.links.delete(peer);
    this.stage.delete(peer);
    if (!this.started) return;
    for (const entry of this.served.values()) entry.memory?.partnerLost();
    // node.partnerLost: the partner's mirrored pages stay (its resync drops them, a takeover destages them).
    this.authority.partnerDown(peer);
  }

  // ——— the partner side (responder) ———

  async handle(payload: Payload, from: number): Promise<Reply> {
    switch (payload.kind) {
      case 'heartbeat':
        return OK;
      case 'probe':
        return this.claimingArray || this.holding ? OK : refused('not the holder');
      case 'takeover': {
        if (!this.started) return { ...OK, message: { type: MessageType.CommandComplete, requestId: 0, requestType: payload.message.type, status: Status.UnknownAllocation } };
        const message = payload.message;
        if (message.type === MessageType.VolumeHandover && message.toNodeId !== this.node) this.invalidateStage(message.allocation);
        if (message.type === MessageType.OwnerNotice && message.ownerNodeId !== this.node) this.invalidateStage(message.allocation);
        return { ...OK, message: await this.authority.onOwnershipMessage(payload.message) };
      }
      case 'mirror': {
        this.invalidateStage(payload.guid, payload.page);
        let pages = this.mirrors.get(payload.guid);
        if (!pages) this.mirrors.set(payload.guid, (pages = new Map()));
        const held = pages.get(payload.page);
        if (!held || held.writer !== from || held.value < payload.value) pages.set(payload.page, { value: payload.value, writer: from });
        return OK;
      }
      case 'clean': {
        const pages = this.mirrors.get(payload.guid);
        const held = pages?.get(payload.page);
        if (held && held.writer === from && held.value <= payload.value) pages?.delete(payload.page);
        return OK;
      }
      case 'clean-all': {
        const pages = this.mirrors.get(payload.guid);
        for (const [page, held] of pages ?? []) if (held.writer === from && held.value <= payload.upTo) pages?.delete(page);
        return OK;
      }
      case 'release':
        this.mirrors.delete(payload.guid);
        return OK;
      case 'resync-pages': {
        let session = this.stage.get(from);
        if (payload.begin || !session) {
          const fresh = { epoch: payload.epoch, complete: false, pages: new Map<string, Map<number, number>>() };
          this.stage.set(from, fresh);
          this.clock.setTimer(30_000, () => {
            if (this.stage.get(from) === fresh) this.stage.delete(from);
          });
          session = fresh;
        }
        if (session.complete) return refused('resync complete');
        let pages = session.pages.get(payload.guid);
        if (!pages) session.pages.set(payload.guid, (pages = new Map()));
        for (const [page, value] of payload.pages) pages.set(page, value);
        return OK;
      }
      case 'resync-end': {
        const session = this.stage.get(from);
        if (!session || session.epoch !== payload.epoch) return refused('no resync');
        session.complete = true;
        return OK;
      }
      case 'io': {
        const view = this.ownedViews.get(payload.guid);
        if (!view) return refused('not-local');
        const buffer = Buffer.alloc(PAGE_BYTES);
        try {
          if (payload.write) {
            buffer.writeUInt32LE(payload.value, 0);
            await view.write(payload.page * PAGE_BYTES, [buffer], false);
            return OK;
          }
          await view.read(payload.page * PAGE_BYTES, buffer);
          return { ...OK, value: buffer.readUInt32LE(0) };
        } catch (error) {
          return refused(error instanceof OwnerUnavailableError ? 'not-local' : (error as Error).message);
        }
      }
      case 'disk-write':
        // A member's destage (RemoteArray): a refused one fails that member's next flush.
        if (!this.holding) this.refusedWrites.add(from);
        else this.localWrite(payload.key, payload.value);
        return OK;
      case 'disk-flush':
        if (!this.holding) return refused('not the holder');
        await Promise.allSettled([...this.pendingDisk]);
        if (this.refusedWrites.delete(from) || this.refusedBlocks.size > 0) return refused('a write was refused');
        return OK;
      case 'disk-read':
        if (!this.holding) return refused('not the holder');
        return { ...OK, value: await this.sim.disk.read(this, payload.key) };
    }
  }

  // ——— the array, through the holder ———

  /**
   * Writes a block on the disks as the holder: refused while this node's lease has run out
   * (fencedMember). A refused block fails every flush until a later write of it lands.
   */
  localWrite(key: string, value: number): void {
    const sequence = ++this.writeSequence;
    const write = this.sim.disk.write(this, key, value).then(
      () => {
        if ((this.refusedBlocks.get(key) ?? Infinity) < sequence) this.refusedBlocks.delete(key);
      },
      () => {
        this.refusedBlocks.set(key, sequence);
      },
    );
    this.pendingDisk.add(write);
    void write.then(() => this.pendingDisk.delete(write));
  }

  /** The holder's own flush (its storage stack): every write so far landed, or one was refused. */
  async flushLocal(): Promise<void> {
    await Promise.allSettled([...this.pendingDisk]);
    if (this.refusedBlocks.size > 0) throw new VolumeError('EIO', `${this.label}: a write was refused (lease)`);
  }

  async diskRead(key: string): Promise<number> {
    const deadline = this.sim.world.now + 60_000;
    for (;;) {
      if (!this.alive) throw new VolumeError('EIO', 'process gone');
      if (this.holding) return this.sim.disk.read(this, key);
      const end = this.linkTo(this.holderId);
      if (end) {
        const reply = await end.call({ kind: 'disk-read', key }).catch(() => null);
        if (reply?.ok) return reply.value;
      }
      if (this.sim.world.now >= deadline) throw new VolumeError('EIO', 'the array is out of reach');
      await this.sleep(100);
    }
  }

  // ——— OwnershipHost ———

  name(nodeId: number): string {
    return `n${nodeId}`;
  }

  fence(reason: string): void {
    this.sim.fence(this, reason);
  }

  setEpoch(epoch: number): void {
    this.epochAnnounced = epoch;
    // Partners.announceEpoch: a heartbeat on every link, ahead of anything the new epoch covers.
    for (const end of this.liveLinks()) end.link.send(end.side, { kind: 'heartbeat', epoch }, 0);
  }

  /** The responder's epoch target: a linked partner's newer epoch is adopted. */
  epochHeard(epoch: number): void {
    if (epoch <= this.keeper.epoch) return;
    this.keeper.adoptEpoch(epoch);
    this.epochAnnounced = this.keeper.epoch;
  }

  /** node.ts's acknowledgeGate: who must hold a copy (or be out) before a write is acknowledged. */
  async acknowledgeGate(writeThrough: boolean): Promise<void> {
    const everyOther = (): boolean => this.sim.nodeIds.every((id) => id === this.node || !!this.linkTo(id) || this.leases.expired(id));
    const resynced = (): boolean => [...this.served.values()].every((entry) => entry.memory?.resynced ?? true);
    const open = (): boolean => {
      if (writeThrough) return resynced() && everyOther();
      return this.holderId === this.node ? everyOther() : !!this.linkTo(this.holderId);
    };
    while (!open()) await this.sleep(25);
  }

  claimPauseMs(): number {
    const unknown = this.sim.nodeIds.some((id) => id !== this.node && !this.linkTo(id) && !this.leases.expired(id));
    return unknown ? Math.floor(this.sim.leaseMs / 4) : 0;
  }

  /** node.ts serveFromMirrors: the mirrored pages on the disks, then cached clean in a new memory. */
  async serveFromMirrors(entry: SimVolume): Promise<number> {
    const { blocks, written } = this.destageMirrorBlocks([entry]);
    // The real flush throws and the takeover is retried; here it is as flushArray was.
    const flushed = await this.flushLocal().then(
      () => true,
      () => false,
    );
    const fresh = !entry.memory;
    this.own(entry);
    if (fresh && written && flushed) {
      for (const [key, value] of blocks) (entry.memory as SimMemory).installClean(Number(key.split(':')[1]), value);
      this.sim.stats.adoptedPages += blocks.length;
    }
    return blocks.length;
  }

  destageMirrors(volumes: readonly SimVolume[]): number {
    return this.destageMirrorBlocks(volumes).blocks.length;
  }

  /** The mirrored blocks taken, and whether they went to the disks (the holder, not broken on purpose). */
  private destageMirrorBlocks(volumes: readonly SimVolume[]): { blocks: Array<[string, number]>; written: boolean } {
    const blocks = this.takeMirrors(volumes);
    const written = this.holding && !this.sim.options.dropMirrorsAtTakeover;
    if (written) for (const [key, value] of blocks) this.localWrite(key, value);
    return { blocks, written };
  }

  /** node.ts takeMirrors: these volumes' mirrored pages out of the store, as disk blocks. */
  private takeMirrors(volumes: readonly SimVolume[]): Array<[string, number]> {
    const blocks: Array<[string, number]> = [];
    for (const entry of volumes) {
      const mirrored = this.mirrors.get(entry.allocation.guid);
      this.mirrors.delete(entry.allocation.guid);
      for (const [page, { value }] of mirrored ?? []) blocks.push([`${entry.allocation.guid}:${page}`, value]);
    }
    return blocks;
  }

  /**
   * node.ts copyResident: 'live', the clean cached pages now, remembering their values; 'paused',
   * after a flush, the clean ones not sent yet or changed since, then the end (the link is FIFO:
   * a page's mirror sent after its copy drops it there).
   */
  async copyResident(entry: SimVolume, to: number, phase: 'live' | 'paused'): Promise<number> {
    const guid = entry.allocation.guid;
    const end = this.linkTo(to);
    let copy = phase === 'paused' ? this.copies.get(guid) : undefined;
    if (copy && (copy.end !== end || copy.to !== to)) copy = undefined;
    this.copies.delete(guid);
    const memory = entry.memory;
    if (!end || !memory) return 0;
    try {
      const begin = !copy;
      const state = copy ?? { to, end, epoch: this.keeper.epoch, sent: new Map<number, number>() };
      copy = state;
      if (phase === 'paused') await memory.flush();
      const pages = memory.cleanPages().filter(([page, value]) => state.sent.get(page) !== value);
      const reply = await end.call({ kind: 'resync-pages', guid, epoch: copy.epoch, begin, pages });
      if (!reply.ok) return 0;
      for (const [page, value] of pages) copy.sent.set(page, value);
      if (phase === 'live') {
        this.copies.set(guid, copy);
        return copy.sent.size;
      }
      return (await end.call({ kind: 'resync-end', epoch: copy.epoch })).ok ? copy.sent.size : 0;
    } catch {
      return 0;
    }
  }

  private invalidateStage(guid: string, page?: number): void {
    for (const session of this.stage.values()) {
      if (page === undefined) session.pages.delete(guid);
      else session.pages.get(guid)?.delete(page);
    }
  }

  dropMirrorsExcept(volume: SimVolume, writer: number): number {
    const pages = this.mirrors.get(volume.allocation.guid);
    let dropped = 0;
    for (const [page, held] of pages ?? []) {
      if (held.writer === writer) continue;
      pages?.delete(page);
      dropped++;
    }
    return dropped;
  }

  async destageMirrorsToArray(volumes: readonly SimVolume[]): Promise<number> {
    const blocks = this.takeMirrors(volumes);
    if (!this.sim.options.dropMirrorsAtTakeover) for (const [key, value] of blocks) this.array.enqueue(key, value);
    if (blocks.length > 0) await this.array.flush();
    return blocks.length;
  }

  holderIs(nodeId: number): void {
    if (this.holding || nodeId === this.holderId) return;
    this.sim.note(`${this.label} learns n${nodeId} holds the array`);
    this.holderId = nodeId;
  }

  async probeHolder(peer: number): Promise<boolean> {
    const end = this.linkTo(peer);
    if (!end) return false;
    return end.call({ kind: 'probe' }).then(
      (reply) => reply.ok,
      () => false,
    );
  }

  async holdArray(): Promise<void> {
    this.claimingArray = true;
    await this.sleep(5 + this.sim.random() * 40);
    this.holding = true;
    this.holderId = this.node;
    this.array.switchToLocal();
    this.sim.note(`${this.label} holds the array`);
    // node.ts holdArray: the owners as the cluster record has them.
    for (const [guid, owner] of this.sim.record) {
      const entry = this.served.get(guid);
      if (!entry || entry.memory || owner === entry.ownerId || owner === this.node) continue;
      this.forward(entry, owner);
    }
  }

  async flushArray(): Promise<void> {
    await this.flushLocal().catch(() => undefined);
  }

  own(entry: SimVolume, handedOverAt?: number): void {
    // node.ts own: staged pages of a matching epoch start resident in a memory that starts now.
    const resident = new Map<number, number>();
    for (const session of this.stage.values()) {
      const pages = session.pages.get(entry.allocation.guid);
      session.pages.delete(entry.allocation.guid);
      const current = !entry.memory && handedOverAt !== undefined && session.complete && session.epoch === handedOverAt;
      if (pages && current) for (const [page, value] of pages) resident.set(page, value);
    }
    if (resident.size > 0) this.sim.stats.warmPages += resident.size;
    entry.memory ??= new SimMemory(this, entry.allocation.guid, resident);
    entry.ownerId = this.node;
    this.ownedViews.set(entry.allocation.guid, localView(entry.switch, entry.memory));
    entry.switch.setTarget(entry.memory);
  }

  forward(entry: SimVolume, ownerId: number): void {
    entry.ownerId = ownerId;
    entry.switch.setTarget(new SimForwarder(this, entry.allocation.guid, ownerId));
  }

  async releaseVolume(entry: SimVolume): Promise<void> {
    this.ownedViews.delete(entry.allocation.guid);
    await entry.memory?.release();
    entry.memory = null;
  }

  async writeOwners(): Promise<void> {
    if (!this.holding) throw new Error('only the array holder writes the cluster record');
    const owners = [...this.served.values()].map((entry) => [entry.allocation.guid, entry.ownerId] as const);
    for (const [guid, owner] of owners) this.localWrite(`record:${guid}`, owner);
    await this.flushLocal();
    for (const [guid, owner] of owners) this.sim.record.set(guid, owner);
  }

  borrowAddresses(dead: number, wanted: () => boolean): void {
    this.sim.borrow(dead, this, wanted);
  }

  returnAddresses(dead: number): Promise<void> {
    this.sim.giveBack(dead, this);
    return Promise.resolve();
  }

}

/**
 * array-access.ts over RemoteArray: blocks go to the holder over the link and are kept until a
 * flush covers them; a flush on a link the blocks were not all sent on sends them again first, in
 * order, and a node that takes the array over writes them itself (switchTo).
 */
class SimArrayAccess {
  private pending: Array<{ sequence: number; key: string; value: number; sentOn: SimLink | null }> = [];
  private sequence = 0;

  constructor(private readonly node: SimNode) {}

  enqueue(key: string, value: number): void {
    if (this.node.holding) return this.node.localWrite(key, value);
    const block = { sequence: ++this.sequence, key, value, sentOn: null as SimLink | null };
    this.pending.push(block);
    this.send(block);
  }

  switchToLocal(): void {
    for (const block of this.pending) this.node.localWrite(block.key, block.value);
    this.pending = [];
  }

  async flush(): Promise<void> {
    const { node } = this;
    const covered = this.sequence;
    const deadline = node.sim.world.now + 60_000;
    for (;;) {
      if (!node.alive) throw new VolumeError('EIO', 'process gone');
      if (node.holding) return node.flushLocal();
      const end = node.linkTo(node.holderId);
      if (end) {
        // As ArrayAccess: all of them again, in order, so that no older one lands after a newer one.
        if (this.pending.some((block) => block.sentOn !== end.link)) for (const block of this.pending) this.send(block);
        const reply = await end.call({ kind: 'disk-flush' }).catch(() => null);
        if (reply?.ok) {
          this.pending = this.pending.filter((block) => block.sequence > covered);
          return;
        }
        // Refused or lost: everything kept goes again.
        for (const block of this.pending) block.sentOn = null;
      }
      if (node.sim.world.now >= deadline) throw new VolumeError('EIO', 'the array is out of reach');
      await node.sleep(100);
    }
  }

  private send(block: { key: string; value: number; sentOn: SimLink | null }): void {
    const end = this.node.linkTo(this.node.holderId);
    if (!end) return;
    block.sentOn = end.link;
    end.link.send(end.side, { kind: 'disk-write', key: block.key, value: block.value }, 0);
  }
}

/** The shared disks: only a holder whose lease holds may write (fencedMember); writes land in order. */
class SimDisks {
  readonly durable = new Map<string, number>();
  private readonly lastLanding = new Map<string, number>();

  constructor(private readonly sim: OwnershipSimulation) {}

  write(node: SimNode, key: string, value: number): Promise<void> {
    const { world, random } = this.sim;
    if (!node.alive || !node.holding) return Promise.reject(new Error(`${node.label} does not hold the array`));
    if (!node.keeper.holds()) return Promise.reject(new Error(`${node.label}: not written, this node's lease has run out`));
    const latency = this.sim.slowDisk() ? random() * DISK_MAX_MS : 0.2 + random() * 10;
    const landAt = Math.max(world.now + latency, this.lastLanding.get(key) ?? 0);
    this.lastLanding.set(key, landAt);
    if (landAt - world.now > DISK_MAX_MS) this.sim.fail(`a disk write would take ${(landAt - world.now).toFixed(0)} ms, beyond the design's assumption`);
    return new Promise((resolve) => {
      world.schedule(landAt - world.now, null, `${node.label} disk ${key} := ${value} lands`, () => {
        this.durable.set(key, value);
        world.schedule(0.1, node, `${node.label} disk ${key} done`, resolve);
      });
    });
  }

  read(node: SimNode, key: string): Promise<number> {
    const { world, random } = this.sim;
    return new Promise((resolve) => {
      world.schedule(0.2 + random() * 5, node, `${node.label} disk read ${key}`, () => resolve(this.durable.get(key) ?? 0));
    });
  }
}

interface Connection {
  readonly node: SimNode;
}

/** A client of one volume: writes (one at a time per page) and reads, reconnecting when cut off. */
interface Client {
  readonly index: number;
  readonly guid: string;
  /** 'address': bound to its home node's address (QEMU reconnect); 'multipath': any node. */
  readonly mode: 'address' | 'multipath';
  connection: Connection | null;
  inFlight: number;
  readonly writing: Set<number>;
  /** Per page: the highest acknowledged value. */
  readonly floor: number[];
  reconnecting: boolean;
}

class OwnershipSimulation {
  readonly world: TimedWorld;
  readonly random: () => number;
  readonly leaseMs: number;
  readonly nodeIds: number[];
  readonly guids: string[];
  readonly leaseDisk: SimLeaseDisk;
  readonly disk: SimDisks;
  readonly record = new Map<string, number>();
  readonly current: Array<SimNode | null>;
  readonly stats: OwnershipSimStats;
  private readonly trace: string[] = [];
  private failure: string | undefined;
  private readonly faultMs: number;
  private readonly endMs: number;
  private readonly clientsUntil: number;
  private readonly cuts = new Map<string, number>();
  private readonly slowLeaseUntil: number[];
  private slowDiskUntil = 0;
  private readonly borrowers: Array<{ node: SimNode; wanted: () => boolean } | null>;
  private readonly clients: Client[] = [];
  private readonly sameHost: boolean;
  private nextValue = 1;
  private readonly pageOfValue = new Map<number, number>();
  private readonly generations: number[];
  /** Faults that may each cost a node its memory overlap: data may be lost, so only safety and liveness are checked. */
  readonly storm: boolean;
  private healthySince: number | null = null;

  constructor(
    readonly seed: number,
    readonly options: OwnershipSimOptions,
  ) {
    this.random = seededRandom(seed);
    const count = options.nodes ?? 2 + randomInt(this.random, 2);
    this.leaseMs = options.leaseMs ?? 1000;
    this.faultMs = options.faultMs ?? 25 * this.leaseMs;
    this.endMs = this.faultMs + (options.quietMs ?? 15 * this.leaseMs);
    this.clientsUntil = this.endMs - 4 * this.leaseMs;
    this.nodeIds = Array.from({ length: count }, (_, index) => index);
    this.guids = this.nodeIds.map((index) => `0000000${index}-0000-4000-8000-00000000000${index}`);
    this.world = new TimedWorld(count);
    if (options.trace) this.world.onEvent = (event) => event.label !== 'timer' && !event.label.endsWith('heartbeat') && this.note(event.label);
    this.current = this.nodeIds.map(() => null);
    this.generations = this.nodeIds.map(() => 0);
    this.slowLeaseUntil = this.nodeIds.map(() => 0);
    this.borrowers = this.nodeIds.map(() => null);
    this.sameHost = this.random() < 0.5;
    this.storm = options.storm ?? this.random() < 0.25;
    this.stats = { nodes: count, crashes: 0, pauses: 0, cuts: 0, slowLeaseSpells: 0, fenced: 0, arrayTakeovers: 0, volumeTakeovers: 0, failbacks: 0, warmPages: 0, adoptedPages: 0, writesAcked: 0, writesFailed: 0, readsChecked: 0, reconnects: 0 };
    this.leaseDisk = new SimLeaseDisk(this.world, count, this.random, (writer, lease) => this.leaseWrite(writer, lease), (line) => this.note(line));
    this.disk = new SimDisks(this);
  }

  async run(): Promise<OwnershipSimResult> {
    for (const id of this.nodeIds) this.world.schedule(this.random() * 300, null, `n${id} boots`, () => this.start(id));
    this.world.schedule(2 * this.leaseMs + this.random() * this.leaseMs, null, 'fault', () => this.injectFault());
    this.world.schedule(200, null, 'dial', () => this.dial());
    for (const [index, guid] of this.guids.entries()) {
      const client: Client = { index, guid, mode: this.random() < 0.5 ? 'address' : 'multipath', connection: null, inFlight: 0, writing: new Set(), floor: Array.from({ length: PAGES }, () => 0), reconnecting: false };
      this.clients.push(client);
      this.world.schedule(1500 + this.random() * 1000, null, `client ${index} connects`, () => this.reconnect(client));
      this.world.schedule(1600, null, `client ${index} works`, () => this.work(client));
    }
    const ended = await this.world.run(this.endMs, STEP_LIMIT, () => {
      this.trackHealth();
      this.checkExclusive();
      return this.failure === undefined;
    });
    if (ended === 'step-limit') this.fail(`more than ${STEP_LIMIT} steps`);
    if (this.failure === undefined) await this.finalCheck();
    return { seed: this.seed, ok: this.failure === undefined, failure: this.failure, steps: this.world.steps, stats: this.stats, trace: this.trace };
  }

  note(line: string): void {
    if (!this.options.trace) return;
    this.trace.push(`${this.world.now.toFixed(1).padStart(9)} ${line}`);
    if (this.trace.length > TRACE_LINES) this.trace.shift();
  }

  fail(why: string): void {
    this.failure ??= `seed ${this.seed} at ${this.world.now.toFixed(1)} ms: ${why}`;
    this.note(`FAILED: ${why}`);
  }

  hostOf(node: number): string {
    return this.sameHost ? 'host' : `host${node}`;
  }

  /** lease-files.ts's processGone: on the same host, /proc tells whether the lease's process lives. */
  processGone(observer: SimNode, lease: Lease): boolean | null {
    if (!this.sameHost || lease.host !== this.hostOf(observer.node)) return null;
    const inc = this.current[lease.slot];
    const alive = !!inc && inc.alive && inc.generation === lease.processStart;
    return !alive;
  }

  isCut(a: number, b: number): boolean {
    return (this.cuts.get(pairKey(a, b)) ?? 0) > this.world.now;
  }

  slowDisk(): boolean {
    return this.slowDiskUntil > this.world.now;
  }

  loggerFor(node: SimNode): Logger {
    const log =
      (level: string) =>
      (message: string): void => {
        this.note(`${node.label} ${level}: ${message}`);
        if (/took over volume/.test(message)) this.stats.volumeTakeovers++;
        if (/holds the shared array now/.test(message)) this.stats.arrayTakeovers++;
        if (/is served by node .* again/.test(message)) this.stats.failbacks++;
        // Giving way ends in a fence: a loss of this node's memory already under way.
        if (/giving way/.test(message)) node.yielded = true;
      };
    return { error: log('error'), warn: log('warn'), info: log('info'), debug: () => undefined } as unknown as Logger;
  }

  private leaseWrite(writer: Actor, _lease: Lease): LeaseWriteDraw {
    const { random } = this;
    if (this.slowLeaseUntil[writer.node] as number > this.world.now) {
      const fails = random() < 0.3;
      return { latencyMs: random() * 0.6 * this.leaseMs, fails, lands: !fails || random() < 0.4 };
    }
    return { latencyMs: 0.5 + random() * 15, fails: false, lands: true };
  }

  // ——— processes ———

  private start(node: number): void {
    const inc = new SimNode(this, node, this.generations[node]++ as number);
    this.current[node] = inc;
    this.note(`${inc.label} starts`);
    void inc.boot();
  }

  /** A crash (SIGKILL): nothing more runs; the kernel closes its links a moment later. */
  crash(inc: SimNode): void {
    this.stats.crashes++;
    this.stop(inc, 'crash', 1 + this.random() * 4);
  }

  fence(inc: SimNode, reason: string): void {
    if (!inc.alive) return;
    this.stats.fenced++;
    this.note(`${inc.label} fenced: ${reason}`);
    // node.fence: the ownership loop and the lease stop, clients are cut, the process exits 75 and
    // `ftvm up` starts it again 3 s later.
    this.stop(inc, `fenced: ${reason}`, 0);
  }

  stop(inc: SimNode, why: string, linkCloseMs = 0): void {
    if (!inc.alive) return;
    inc.alive = false;
    inc.keeper.abandon();
    inc.authority.stop();
    this.world.drop(inc);
    this.note(`${inc.label} stops (${why})`);
    for (const end of inc.links.values()) end.link.close(`${inc.label} gone`, linkCloseMs);
    for (const client of this.clients) if (client.connection?.node === inc) this.disconnect(client);
    this.world.schedule(1000 + this.random() * 2500, null, `n${inc.node} restarts`, () => this.start(inc.node));
  }

  borrow(dead: number, node: SimNode, wanted: () => boolean): void {
    this.borrowers[dead] = { node, wanted };
  }

  giveBack(dead: number, node: SimNode): void {
    if (this.borrowers[dead]?.node === node) this.borrowers[dead] = null;
  }

  /** Partner links: each pair of running processes is dialled again while it has no link. */
  private dial(): void {
    for (const a of this.current) {
      for (const b of this.current) {
        if (!a || !b || a.node >= b.node || !a.alive || !b.alive || !a.acquired || !b.acquired || a.linkTo(b.node) || b.linkTo(a.node) || this.isCut(a.node, b.node)) continue;
        if (this.world.paused(a.node) || this.world.paused(b.node)) continue;
        this.connect(a, b);
      }
    }
    this.world.schedule(50 + this.random() * 150, null, 'dial', () => this.dial());
  }

  private connect(a: SimNode, b: SimNode): void {
    const link = new SimLink(this, [a, b]);
    const [endA, endB] = link.ends;
    a.links.set(b.node, endA);
    b.links.set(a.node, endB);
    // The hello exchange (link.ts): a hello from an older epoch is refused and its sender fenced;
    // the newer side's partnerUp fences the older one too. Both ends learn when their process runs.
    // The higher id dials (node.ts): its hello from an older epoch is refused and it is fenced
    // (link.ts checkHello); the other way round, the listener adopts the newer epoch (partnerUp).
    const epochA = a.epochAnnounced;
    const epochB = b.epochAnnounced;
    if (epochB < epochA) {
      a.links.delete(b.node);
      b.links.delete(a.node);
      link.closed = true;
      this.world.schedule(1, b, `${b.label} hello refused (stale epoch)`, () => b.fence(`hello refused: epoch ${epochB} is stale`));
      return;
    }
    this.note(`link ${a.label}–${b.label} up (epoch ${epochA})`);
    this.world.schedule(1, a, `${a.label} link up`, () => !link.closed && a.linkUp(endA, epochB));
    this.world.schedule(1, b, `${b.label} link up`, () => !link.closed && b.linkUp(endB, epochA));
  }

  // ——— faults ———

  private injectFault(): void {
    if (this.world.now >= this.faultMs) return;
    const { random } = this;
    this.world.schedule(300 + random() * 1200, null, 'fault', () => this.injectFault());
    const draw = random();
    const live = this.current.filter((inc): inc is SimNode => !!inc && inc.alive && inc.started);
    const pick = (): SimNode | undefined => live[randomInt(random, live.length)];
    // Faults that may cost a node its memory (a crash; a pause, a cut or lease trouble that may fence
    // it) come one at a time: the next only once the cluster is whole again. Harmless ones (short
    // pauses and cuts, slow data disks) come at any time, in the middle of a takeover too.
    const mayLose = this.storm || this.healthyFor() >= HEALTHY_MS;
    if (draw < 0.25) {
      const target = random() < 0.5 ? (this.current.find((inc) => inc?.holding && inc.alive) ?? pick()) : pick();
      if (!target || !mayLose) return;
      this.note(`FAULT crash ${target.label}`);
      this.crash(target);
    } else if (draw < 0.5) {
      const target = pick();
      if (!target) return;
      const kind = random();
      const ms = kind < 0.5 || !mayLose ? random() * this.leaseMs * 0.2 : kind < 0.85 ? this.leaseMs * (0.5 + random() * 1.5) : this.leaseMs * (2 + random() * 2);
      this.stats.pauses++;
      this.note(`FAULT pause ${target.label} for ${ms.toFixed(0)} ms`);
      this.world.pause(target.node, ms);
    } else if (draw < 0.75) {
      const a = randomInt(random, this.nodeIds.length);
      const b = (a + 1 + randomInt(random, this.nodeIds.length - 1)) % this.nodeIds.length;
      const ms = random() < 0.4 || !mayLose ? random() * PARTNER_TIMEOUT_MS * 0.8 : this.leaseMs * (0.5 + random() * 4);
      const key = pairKey(a, b);
      this.cuts.set(key, Math.max(this.cuts.get(key) ?? 0, this.world.now + ms));
      this.stats.cuts++;
      this.note(`FAULT cut n${a}–n${b} for ${ms.toFixed(0)} ms`);
      this.world.schedule(ms + 0.01, null, `n${a}–n${b} mended`, () => {
        if (this.isCut(a, b)) return;
        for (const inc of this.current) for (const end of inc?.links.values() ?? []) if (end.peer.nodeId === (inc?.node === a ? b : a)) end.link.mend();
      });
    } else if (draw < 0.87) {
      if (!mayLose) return;
      const node = randomInt(random, this.nodeIds.length);
      this.slowLeaseUntil[node] = this.world.now + this.leaseMs * (0.5 + random() * 3);
      this.stats.slowLeaseSpells++;
      this.note(`FAULT n${node}'s lease writes slow and failing until ${(this.slowLeaseUntil[node] as number).toFixed(0)}`);
    } else {
      this.slowDiskUntil = this.world.now + this.leaseMs * random() * 2;
      this.note(`FAULT data disks slow until ${this.slowDiskUntil.toFixed(0)}`);
    }
  }

  /**
   * How long the cluster has been whole: every node up and linked to every other, nothing cut,
   * paused or short of lease writes. The design survives the loss of one node's memory at a time.
   */
  private healthyFor(): number {
    return this.healthySince === null ? -1 : this.world.now - this.healthySince;
  }

  private trackHealth(): void {
    const now = this.world.now;
    const all = this.current;
    let whole = all.every((inc) => inc && inc.alive && inc.started && !inc.yielded && !this.world.paused(inc.node) && (this.slowLeaseUntil[inc.node] as number) <= now);
    for (const a of all) for (const b of all) if (whole && a && b && a !== b && !a.linkTo(b.node)) whole = false;
    if (whole && [...this.cuts.values()].some((until) => until > now)) whole = false;
    if (!whole) this.healthySince = null;
    else this.healthySince ??= now;
  }

  // ——— clients ———

  private disconnect(client: Client): void {
    client.connection = null;
    client.inFlight = 0;
    client.writing.clear();
    this.reconnect(client);
  }

  private reconnect(client: Client): void {
    if (client.reconnecting || client.connection) return;
    client.reconnecting = true;
    this.world.schedule(50 + this.random() * 400, null, `client ${client.index} reconnects`, () => {
      client.reconnecting = false;
      const target = this.serverFor(client);
      if (!target) return this.reconnect(client);
      this.stats.reconnects++;
      client.connection = { node: target };
      this.note(`client ${client.index} connects to ${target.label}`);
    });
  }

  /** Who answers a connection: the node itself, a partner serving its borrowed address, or (multipath) any node. */
  private serverFor(client: Client): SimNode | null {
    const up = (inc: SimNode | null | undefined): inc is SimNode => !!inc && inc.alive && inc.started;
    if (client.mode === 'multipath') {
      const live = this.current.filter(up);
      return live[randomInt(this.random, live.length)] ?? null;
    }
    const borrower = this.borrowers[client.index];
    if (borrower && up(borrower.node) && borrower.wanted()) return borrower.node;
    const home = this.current[client.index];
    return up(home) ? home : null;
  }

  private work(client: Client): void {
    if (this.world.now >= this.clientsUntil) return;
    this.world.schedule(3 + this.random() * 40, null, `client ${client.index} works`, () => this.work(client));
    const connection = client.connection;
    if (!connection || client.inFlight >= 2) return;
    const page = randomInt(this.random, PAGES);
    const entry = connection.node.served.get(client.guid);
    if (!entry) return;
    const buffer = Buffer.alloc(PAGE_BYTES);
    client.inFlight++;
    const done = (): boolean => {
      if (client.connection !== connection) return false;
      client.inFlight--;
      return true;
    };
    if (this.random() < 0.6 && !client.writing.has(page)) {
      const value = this.nextValue++;
      this.pageOfValue.set(value, page);
      buffer.writeUInt32LE(value, 0);
      client.writing.add(page);
      this.world.schedule(0.1, connection.node, `client ${client.index} writes page ${page} := ${value} at ${connection.node.label}`, () => {
        entry.switch.write(page * PAGE_BYTES, [buffer], this.random() < 0.1).then(
          () => {
            if (!done()) return;
            client.writing.delete(page);
            if (!connection.node.alive || !connection.node.keeper.holds()) this.fail(`${connection.node.label} acknowledged a write to vol${client.index} without holding its lease`);
            this.stats.writesAcked++;
            client.floor[page] = Math.max(client.floor[page] as number, value);
            this.note(`client ${client.index} write page ${page} := ${value} acknowledged by ${connection.node.label}`);
          },
          (error: Error) => {
            if (!done()) return;
            client.writing.delete(page);
            this.stats.writesFailed++;
            this.note(`client ${client.index} write page ${page} := ${value} failed at ${connection.node.label}: ${error.message}`);
          },
        );
      });
      return;
    }
    const floor = client.floor[page] as number;
    this.world.schedule(0.1, connection.node, `client ${client.index} reads page ${page} at ${connection.node.label}`, () => {
      entry.switch.read(page * PAGE_BYTES, buffer).then(
        () => {
          if (!done()) return;
          this.checkRead(client, page, buffer.readUInt32LE(0), floor, connection.node.label);
        },
        () => void done(),
      );
    });
  }

  private checkRead(client: Client, page: number, value: number, floor: number, where: string): void {
    this.stats.readsChecked++;
    if (value !== 0 && this.pageOfValue.get(value) !== page) this.fail(`vol${client.index} page ${page} read ${value} at ${where}, a value never written there`);
    else if (value < floor && !this.storm) this.fail(`vol${client.index} page ${page} read ${value} at ${where}; the write of ${floor} was acknowledged before the read began (lost)`);
  }

  // ——— checks ———

  private checkExclusive(): void {
    for (const [index, guid] of this.guids.entries()) {
      const serving = this.current.filter((inc): inc is SimNode => !!inc && inc.alive && !!inc.served.get(guid)?.memory && inc.keeper.holds());
      if (serving.length > 1) this.fail(`vol${index} is served from memory by ${serving.map((inc) => inc.label).join(' and ')}, each holding its lease`);
    }
  }

  private async finalCheck(): Promise<void> {
    const live = this.current.filter((inc): inc is SimNode => !!inc && inc.alive && inc.started);
    if (live.length !== this.nodeIds.length) return this.fail(`liveness: after the quiet period only ${live.map((inc) => inc.label).join(', ') || 'no node'} are up`);
    const holders = live.filter((inc) => inc.holding);
    if (holders.length !== 1) return this.fail(`liveness: ${holders.length} nodes hold the array after the quiet period`);
    for (const [index, guid] of this.guids.entries()) {
      const servers = live.filter((inc) => inc.served.get(guid)?.memory);
      if (servers.length !== 1 || servers[0]?.node !== index) return this.fail(`failback: vol${index} is served by ${servers.map((inc) => inc.label).join(', ') || 'nobody'} after the quiet period, not by its home n${index}`);
    }
    let reads = 0;
    const expected = this.clients.length * PAGES;
    const pending = new Set<string>();
    for (const client of this.clients) {
      const reader = live[randomInt(this.random, live.length)] as SimNode;
      const entry = reader.served.get(client.guid) as SimVolume;
      for (let page = 0; page < PAGES; page++) {
        const buffer = Buffer.alloc(PAGE_BYTES);
        const floor = client.floor[page] as number;
        const what = `vol${client.index} page ${page} at ${reader.label}`;
        pending.add(what);
        this.world.schedule(1, reader, `final read vol${client.index} page ${page}`, () => {
          entry.switch.read(page * PAGE_BYTES, buffer).then(
            () => {
              reads++;
              pending.delete(what);
              this.checkRead(client, page, buffer.readUInt32LE(0), floor, `${reader.label} (final)`);
            },
            (error: Error) => this.fail(`final read of vol${client.index} page ${page} at ${reader.label} failed: ${error.message}`),
          );
        });
      }
    }
    await this.world.run(this.endMs + 10_000, STEP_LIMIT, () => this.failure === undefined && reads < expected);
    if (this.failure === undefined && reads < expected) this.fail(`liveness: only ${reads} of ${expected} final reads finished (waiting: ${[...pending].join(', ')})`);
  }
}

function pairKey(a: number, b: number): string {
  return a < b ? `${a}-${b}` : `${b}-${a}`;
}

export function runOwnershipSimulation(seed: number, options: OwnershipSimOptions = {}): Promise<OwnershipSimResult> {
  return new OwnershipSimulation(seed, options).run();
}

export interface OwnershipRunSummary {
  seedsRun: number;
  seconds: number;
  steps: number;
  failed: { seed: number; failure: string } | null;
  totals: Omit<OwnershipSimStats, 'nodes'>;
}

/** Runs seeds start … start+count−1, stopping at the first failure. */
export async function runOwnershipSeeds(start: number, count: number, options: OwnershipSimOptions = {}): Promise<OwnershipRunSummary> {
  const began = performance.now();
  const totals: Omit<OwnershipSimStats, 'nodes'> = { crashes: 0, pauses: 0, cuts: 0, slowLeaseSpells: 0, fenced: 0, arrayTakeovers: 0, volumeTakeovers: 0, failbacks: 0, warmPages: 0, adoptedPages: 0, writesAcked: 0, writesFailed: 0, readsChecked: 0, reconnects: 0 };
  let steps = 0;
  let seedsRun = 0;
  let failed: OwnershipRunSummary['failed'] = null;
  for (let seed = start; seed < start + count; seed++) {
    const result = await runOwnershipSimulation(seed, options);
    seedsRun++;
    steps += result.steps;
    for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += result.stats[key];
    if (!result.ok) {
      failed = { seed, failure: result.failure as string };
      break;
    }
  }
  return { seedsRun, seconds: (performance.now() - began) / 1000, steps, failed, totals };
}
