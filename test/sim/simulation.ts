// One seed of the simulation: an owner node and one or two partners in this process, the real
// memory manager, volume, link replicator, partner links (codec and framer included) and mirror
// stores, over a simulated network and disk, driven step by step by the seeded scheduler.
//
//   client requests ──> MemoryVolume ──> ObservedMemoryManager ──> SimDisk (shared)
//                                              │ LinkReplicator
//                                              └── PartnerLink ══ SimNetwork ══ PartnerLink ──> MirrorStore
//
// Faults, drawn before every step: a link direction stalls (delay), a link is cut (the partner then
// takes over what it mirrors: it hands those pages to the disk, as a cluster node does when it loses
// an owner; the owner carries on, write-through while no partner is left), a partner crashes, the
// owner crashes (its waiting disk blocks land, vanish or tear; the seed ends with a check of what
// the survivors hold). The owner crashes only while a crash of it is survivable: no partner crashed
// yet, or one partner has been linked all along (the design tolerates the loss of one node's memory).
//
// Checks (see model.ts for "allowed"):
//   after every step   what survives an owner crash now (durable disk, the survivors' waiting blocks,
//                      the newest page any linked partner mirrors) holds every acknowledged write;
//                      checked on the pages that changed
//   pointer API        no page write-locked twice, or read while write-locked (observed-manager.ts)
//   every read         returns allowed bytes
//   every flush / FUA  the disks alone hold every write acknowledged before it began
//   when quiet         resident pages equal the model; every page a linked partner mirrors equals
//                      the owner's resident page, or the disk when not resident
//   always             requests finish (no deadlock), links close only when the simulation says so,
//                      a block handed to the disk does not change before it lands (disk.ts)
//   when quiet         partners mirror only pages the owner holds dirty; with no partner left, the disks alone hold every acknowledged write
import { systemClock } from '../../src/core/index.js';
import { FramePool, LinkReplicator, MemoryVolume, MirrorStore, type Replicator } from '../../src/memory/index.js';
import type { Logger } from '../../src/observe/index.js';
import { MessageFramer, MessageType, PartnerLink, Status, type Message } from '../../src/partner/index.js';
import { randomBytes, randomInt, seededRandom } from '../support/seeded-random.js';
import { SimDisk } from './disk.js';
import { VolumeModel, type WriteRecord } from './model.js';
import { SimNetwork, type SimSocket } from './network.js';
import { ObservedMemoryManager } from './observed-manager.js';
import { Scheduler, settle, type Action } from './scheduler.js';

const OWNER = 0;
const GUID = '5a1e0000-0000-4000-8000-000000000001';
const CLUSTER = '5a1e0000-0000-4000-8000-0000000000c1';
const MiB = 1024 * 1024;
const VOLUME_BYTES = MiB;
/** Every node's frame pool; part of it is held back so that pages must be replaced. */
const POOL_BYTES = MiB;
const PAGE_SIZES_BYTES = [4096, 16384, 65536];
/** A seed that has not ended by then is stuck in a loop (its requests keep the scheduler busy). */
export const STEPS_MAX = 60_000;
const TRACE_LINES = 80;

/** Stalls, cuts and crashes are drawn; lost and torn blocks are what crashes did to waiting disk writes. */
export const FAULT_KINDS = ['stall', 'cut', 'partner-crash', 'owner-crash', 'lost-block', 'torn-block'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
export type FaultCounts = Record<FaultKind, number>;

/** What a seed exercised, so a summary shows that the interesting paths were taken. */
export const COVERAGE_KINDS = ['page-in', 'block-written', 'mirror-write', 'mirror-refusal', 'takeover-page', 'survivor-page-check', 'quiet-check'] as const;
export type CoverageKind = (typeof COVERAGE_KINDS)[number];
export type CoverageCounts = Record<CoverageKind, number>;

export interface SimOptions {
  /** Keep the last steps as a story for a failure report (slower; for replays). */
  trace?: boolean;
  /** Wraps the owner's replicator: a test swaps in a broken one to prove the checks fail. */
  replicator?: (real: Replicator) => Replicator;
  /** The disk's flush resolves before the blocks are durable. */
  lyingDisk?: boolean;
  /**
   * Accepted and ignored: the checks it once switched on (partners mirror only dirty pages when
   * quiet; with no partner left the disks alone hold every acknowledged write) always run now.
   */
  strict?: boolean;
}

export interface SeedResult {
  seed: number;
  shape: string;
  steps: number;
  requests: number;
  faults: FaultCounts;
  coverage: CoverageCounts;
  failure: string | null;
  trace: string[];
}

/** Everything a seed draws before its first step. */
interface Shape {
  nodes: number;
  pageBytes: number;
  ownerFrames: number;
  partnerFrames: number[];
  highWatermarkPages: number;
  lowWatermarkPages: number;
  requests: number;
  concurrency: number;
  /** Requests aimed at the first `hotPages` pages, so that they meet on page locks. */
  hotChance: number;
  hotPages: number;
  splitChance: number;
  /** Per-step fault chances. */
  faults: { stall: number; cut: number; partnerCrash: number; ownerCrash: number };
  finalRead: boolean;
}

interface Partner {
  id: number;
  mirror: MirrorStore;
  /** The owner's end of the link, and the partner's. */
  ownerSocket: SimSocket;
  partnerSocket: SimSocket;
  /** Linked means linked all along: a cut link is not mended. */
  state: 'linked' | 'cut' | 'crashed';
}

export async function runSeed(seed: number, options: SimOptions = {}): Promise<SeedResult> {
  return new Simulation(seed, options).run();
}

function chooseShape(random: () => number): Shape {
  const nodes = 2 + randomInt(random, 2);
  const pageBytes = PAGE_SIZES_BYTES[randomInt(random, PAGE_SIZES_BYTES.length)] as number;
  const volumePages = VOLUME_BYTES / pageBytes;
  const highWatermarkPages = 1 + randomInt(random, 8);
  const intensity = [0, 1, 1, 4][randomInt(random, 4)] as number;
  return {
    nodes,
    pageBytes,
    ownerFrames: 1 + randomInt(random, Math.min(16, volumePages)),
    partnerFrames: [...Array(nodes - 1)].map(() => (random() < 0.3 ? POOL_BYTES / pageBytes : 1 + randomInt(random, 12))),
    highWatermarkPages,
    lowWatermarkPages: randomInt(random, highWatermarkPages),
    requests: 15 + randomInt(random, 45),
    concurrency: 1 + randomInt(random, 6),
    hotChance: random() * 0.8,
    hotPages: 1 + randomInt(random, 4),
    splitChance: random() * 0.5,
    faults: { stall: 0.01 * intensity, cut: 0.0015 * intensity, partnerCrash: 0.001 * intensity, ownerCrash: 0.001 * intensity },
    finalRead: random() < 0.25,
  };
}

function describeShape(shape: Shape): string {
  const { faults } = shape;
  return (
    `${shape.nodes} nodes, ${shape.pageBytes / 1024} KiB pages, owner frames ${shape.ownerFrames}, partner frames ${shape.partnerFrames.join('/')}, ` +
    `watermarks ${shape.highWatermarkPages}/${shape.lowWatermarkPages}, ${shape.requests} requests × ${shape.concurrency}, ` +
    `faults per step: stall ${faults.stall}, cut ${faults.cut}, partner crash ${faults.partnerCrash}, owner crash ${faults.ownerCrash}`
  );
}

/** A frame pool of POOL_BYTES of which only `pages` pages are free: the rest is held by others. */
function poolWithRoomFor(pages: number, pageBytes: number): FramePool {
  const pool = new FramePool(POOL_BYTES);
  while (pool.freeBytes > pages * pageBytes) pool.allocate(pageBytes);
  return pool;
}

class Simulation {
  private readonly random: () => number;
  private readonly shape: Shape;
  private readonly scheduler: Scheduler;
  private readonly network: SimNetwork;
  private readonly disk: SimDisk;
  private readonly model: VolumeModel;
  private readonly manager: ObservedMemoryManager;
  private readonly volume: MemoryVolume;
  private readonly partners: Partner[] = [];
  private readonly faults = Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as FaultCounts;
  private readonly coverage = Object.fromEntries(COVERAGE_KINDS.map((kind) => [kind, 0])) as CoverageCounts;
  private readonly trace: string[] = [];
  private readonly logger: Logger;
  private failure: string | null = null;
  private requestsStarted = 0;
  private readonly requestsInFlight = new Map<number, string>();
  private finalReadStarted = false;
  /** Pages whose survivor view may have changed since the last check. */
  private readonly changedPages = new Set<number>();
  private wasQuiet = false;
  private ownerCrashed = false;
  private readonly scratch: Buffer;

  constructor(
    private readonly seed: number,
    private readonly options: SimOptions,
  ) {
    this.random = seededRandom(seed);
    this.shape = chooseShape(this.random);
    const { pageBytes } = this.shape;
    this.scratch = Buffer.alloc(pageBytes);
    this.logger = this.simLogger();
    this.scheduler = new Scheduler(this.random);
    if (options.trace) this.scheduler.onAction = (action) => this.note(action.label);
    this.network = new SimNetwork(this.random, { splitChance: this.shape.splitChance, deliverWeight: 6 }, () => this.scheduler.stepsTaken);
    this.disk = new SimDisk(VOLUME_BYTES, { applyWeight: 4, readWeight: 4 });
    this.disk.flushLies = options.lyingDisk ?? false;
    this.disk.onDurable = (offset, length) => this.pagesChanged(offset, length);
    this.disk.onContractBroken = (message) => this.fail(message);
    this.model = new VolumeModel(VOLUME_BYTES, pageBytes);
    const links = new LinkReplicator();
    const replicator = options.replicator?.(links) ?? links;
    const { highWatermarkPages, lowWatermarkPages } = this.shape;
    this.manager = new ObservedMemoryManager(poolWithRoomFor(this.shape.ownerFrames, pageBytes), this.disk.storeFor(OWNER), replicator, { highWatermarkPages, lowWatermarkPages });
    this.manager.model = this.model;
    this.manager.onViolation = (message) => this.fail(message);
    this.manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: VOLUME_BYTES, pageBytes });
    this.volume = new MemoryVolume(this.manager, 'sim', GUID, pageBytes, VOLUME_BYTES);
    for (let id = 1; id < this.shape.nodes; id++) this.partners.push(this.linkPartner(id, links));
    this.scheduler.addSource(this.network.source);
    this.scheduler.addSource(this.disk.source);
    this.scheduler.addSource((ready) => this.offerRequest(ready));
  }

  async run(): Promise<SeedResult> {
    while (this.failure === null && !this.ownerCrashed) {
      if (this.scheduler.stepsTaken >= STEPS_MAX) {
        this.fail(`no end after ${STEPS_MAX} steps; requests in flight: ${this.describeInFlight()}`);
        break;
      }
      if (this.injectFaults()) {
        await settle();
        this.afterStep();
        continue;
      }
      const action = await this.scheduler.step();
      if (action === null) {
        if (this.network.nextUnstallStep() !== null) {
          this.network.unstallAll();
          continue;
        }
        if (this.requestsInFlight.size > 0) this.fail(`stuck: nothing can move, requests in flight: ${this.describeInFlight()}`);
        break;
      }
      this.afterStep();
    }
    if (this.failure === null && !this.ownerCrashed && this.armed() && this.random() < 0.2) this.crashOwner();
    // Whatever a link or the manager still has queued goes nowhere once the seed is over.
    this.network.crash(OWNER);
    for (const partner of this.partners) this.network.crash(partner.id);
    await settle();
    return {
      seed: this.seed,
      shape: describeShape(this.shape),
      steps: this.scheduler.stepsTaken,
      requests: this.requestsStarted,
      faults: this.faults,
      coverage: { ...this.coverage, 'page-in': this.disk.readsDone, 'block-written': this.disk.blocksWritten },
      failure: this.failure,
      trace: this.trace,
    };
  }

  // ---- Nodes ----

  private linkPartner(id: number, links: LinkReplicator): Partner {
    const [ownerSocket, partnerSocket] = this.network.connect(OWNER, id);
    const mirror = new MirrorStore(poolWithRoomFor(this.shape.partnerFrames[id - 1] as number, this.shape.pageBytes));
    const partner: Partner = { id, mirror, ownerSocket, partnerSocket, state: 'linked' };
    const identity = (nodeId: number): { clusterId: string; nodeId: number; epoch: number } => ({ clusterId: CLUSTER, nodeId, epoch: 1 });
    // The partner's responder is its mirror store, as in a cluster node; the owner answers nothing.
    const partnerEnd = new PartnerLink(partnerSocket.asNetSocket(), new MessageFramer(), identity(OWNER), (message) => this.mirrorHandles(partner, message), this.logger, () => true, systemClock);
    const ownerEnd = new PartnerLink(ownerSocket.asNetSocket(), new MessageFramer(), identity(id), () => null, this.logger, () => true, systemClock);
    partnerEnd.onClose = (reason) => this.partnerLostOwner(partner, reason);
    ownerEnd.onClose = (reason) => {
      if (partner.state === 'linked') this.fail(`the owner's link to node ${id} closed unasked: ${reason}`);
      // What the cluster node does when a link closes.
      else this.manager.partnerLost();
    };
    links.add(ownerEnd);
    return partner;
  }

  private mirrorHandles(partner: Partner, message: Message): Message | null {
    const reply = partner.mirror.handle(message);
    // A write page may name a run of pages, and a page clean several: every page they touch is checked.
    if (message.type === MessageType.WritePage) {
      const pages = Math.max(1, Math.ceil((message.offset + message.length) / message.pageBytes));
      for (let index = 0; index < pages; index++) this.changedPages.add(message.virtualPage + index);
    }
    if (message.type === MessageType.PageClean) for (let index = 0; index < message.pageCount; index++) this.changedPages.add(message.virtualPage + index);
    if (message.type === MessageType.WritePage) {
      this.coverage['mirror-write']++;
      const status = reply?.type === MessageType.CommandComplete ? reply.status : null;
      if (status !== Status.Ok) this.coverage['mirror-refusal']++;
      this.note(`node ${partner.id} mirror: write page ${message.virtualPage} v${message.version} [${message.offset}, +${message.length}) → status ${status}`);
    } else if (message.type === MessageType.PageClean) {
      this.note(`node ${partner.id} mirror: page clean ${message.virtualPage}${message.pageCount > 1 ? `+${message.pageCount}` : ''} v${message.version}`);
    }
    return reply;
  }

  /** A partner cut off from the owner takes over what it mirrors: to the disks, behind what is queued. */
  private partnerLostOwner(partner: Partner, reason: string): void {
    if (partner.state === 'linked') {
      this.fail(`node ${partner.id}'s link to the owner closed unasked: ${reason}`);
      return;
    }
    if (partner.state !== 'cut') return;
    const pages = partner.mirror.takeAllocation(GUID);
    for (const page of pages) {
      this.disk.enqueue(partner.id, page.virtualPage * this.shape.pageBytes, page.data);
      this.changedPages.add(page.virtualPage);
      this.coverage['takeover-page']++;
    }
    // The frames are lent to the disk queue: back to the pool once they are durable, as the cluster's
    // takeover does (the disk reports a frame reused too early as a broken contract).
    if (pages.length > 0) {
      void this.disk
        .storeFor(partner.id)
        .flush()
        .then(() => partner.mirror.returnFrames(pages.map((page) => page.frame)));
    }
    this.note(`node ${partner.id} takes over ${pages.length} mirrored page(s) to the disks`);
  }

  // ---- Faults ----

  /** Draws this step's faults; true if one happened. */
  private injectFaults(): boolean {
    const chance = this.shape.faults;
    const linked = this.partners.filter((partner) => partner.state === 'linked');
    let injected = false;
    if (this.random() < chance.stall && linked.length > 0) {
      const partner = linked[randomInt(this.random, linked.length)] as Partner;
      const steps = 5 + randomInt(this.random, 200);
      const towardsPartner = this.random() < 0.5;
      const socket = towardsPartner ? partner.ownerSocket : partner.partnerSocket;
      this.network.stall(socket, steps);
      this.count('stall', `link ${towardsPartner ? `0→${partner.id}` : `${partner.id}→0`} stalls for ${steps} steps`);
      injected = true;
    }
    if (this.random() < chance.cut && linked.length > 0) {
      const partner = linked[randomInt(this.random, linked.length)] as Partner;
      partner.state = 'cut';
      this.count('cut', `link 0–${partner.id} cut`);
      this.network.cut(partner.ownerSocket);
      this.allPagesChanged();
      injected = true;
    }
    const alive = this.partners.filter((partner) => partner.state !== 'crashed');
    if (this.random() < chance.partnerCrash && alive.length > 0) {
      const partner = alive[randomInt(this.random, alive.length)] as Partner;
      partner.state = 'crashed';
      this.network.crash(partner.id);
      this.count('partner-crash', `node ${partner.id} crashes${this.tear(partner.id)}`);
      this.allPagesChanged();
      injected = true;
    }
    if (this.random() < chance.ownerCrash && this.armed()) {
      this.crashOwner();
      injected = true;
    }
    return injected;
  }

  /** What a crash of `nodeId` does to its waiting disk blocks; returns the story. */
  private tear(nodeId: number): string {
    const { lost, torn } = this.disk.crash(nodeId, this.random);
    this.faults['lost-block'] += lost;
    this.faults['torn-block'] += torn;
    return lost + torn > 0 ? ` (of its waiting disk blocks ${lost} lost, ${torn} torn)` : '';
  }

  /** Whether the owner may crash now: its loss would be the first loss of a node's memory, or a partner has been linked all along. */
  private armed(): boolean {
    return this.partners.every((partner) => partner.state !== 'crashed') || this.partners.some((partner) => partner.state === 'linked');
  }

  /** The owner dies: its disk blocks land or not, the survivors' land, and what they hold must be every acknowledged write. */
  private crashOwner(): void {
    this.ownerCrashed = true;
    this.network.crash(OWNER);
    this.count('owner-crash', `owner crashes${this.tear(OWNER)}`);
    const mirrors = this.linkedMirrors();
    for (let page = 0; page < VOLUME_BYTES / this.shape.pageBytes; page++) {
      const wrong = this.model.explainWrong(page * this.shape.pageBytes, this.survivorView(page, mirrors, false), this.model.acknowledgements);
      if (wrong) return this.fail(`after the owner crashed, the survivors lost an acknowledged write: ${wrong}`);
    }
  }

  // ---- Client requests ----

  private offerRequest(ready: Action[]): void {
    if (this.requestsStarted < this.shape.requests) {
      if (this.requestsInFlight.size < this.shape.concurrency) ready.push({ label: 'client request', weight: 2, run: () => this.startRequest() });
      return;
    }
    if (this.shape.finalRead && !this.finalReadStarted && this.requestsInFlight.size === 0) {
      ready.push({
        label: 'client reads the whole volume',
        weight: 2,
        run: () => {
          this.finalReadStarted = true;
          this.startRead(0, VOLUME_BYTES);
        },
      });
    }
  }

  private startRequest(): void {
    const roll = this.random();
    if (roll < 0.55) {
      const { offset, length } = this.chooseRange();
      this.startWrite(offset, randomBytes(this.random, length), this.random() < 0.2);
    } else if (roll < 0.9) {
      const { offset, length } = this.chooseRange();
      this.startRead(offset, length);
    } else {
      this.startFlush();
    }
  }

  /** Mostly small and unaligned, sometimes across pages, sometimes whole aligned pages (no page-in). */
  private chooseRange(): { offset: number; length: number } {
    const { pageBytes } = this.shape;
    const regionBytes = (this.random() < this.shape.hotChance ? this.shape.hotPages : VOLUME_BYTES / pageBytes) * pageBytes;
    const kind = this.random();
    if (kind >= 0.85) {
      const pages = Math.min(1 + randomInt(this.random, 2), regionBytes / pageBytes);
      return { offset: randomInt(this.random, regionBytes / pageBytes - pages + 1) * pageBytes, length: pages * pageBytes };
    }
    const longest = kind < 0.35 ? 64 : kind < 0.7 ? pageBytes : (5 * pageBytes) / 2;
    const length = Math.min(1 + randomInt(this.random, longest), regionBytes);
    return { offset: randomInt(this.random, regionBytes - length + 1), length };
  }

  private startWrite(offset: number, data: Buffer, fua: boolean): void {
    const record = this.model.begin(offset, data, fua);
    const since = this.model.acknowledgements;
    const name = `write #${record.id} [${offset}, +${data.length})${fua ? ' FUA' : ''}`;
    const request = this.begin(name);
    this.volume.write(offset, [data], fua).then(
      () => this.writeAcknowledged(request, name, record, since),
      (error: Error) => this.fail(`${name} failed: ${error.message}`),
    );
  }

  private writeAcknowledged(request: number, name: string, record: WriteRecord, since: number): void {
    if (!this.end(request, name)) return;
    const error = this.model.acknowledged(record);
    if (error) return this.fail(error);
    this.pagesChanged(record.offset, record.data.length);
    if (record.fua) this.checkDurable(`after ${name}`, since, record);
  }

  private startRead(offset: number, length: number): void {
    const since = this.model.acknowledgements;
    const into = Buffer.alloc(length);
    const name = `read [${offset}, +${length})`;
    const request = this.begin(name);
    this.volume.read(offset, into).then(
      () => {
        if (!this.end(request, name)) return;
        const wrong = this.model.explainWrong(offset, into, since);
        if (wrong) this.fail(`${name} returned bytes no write left there: ${wrong}`);
      },
      (error: Error) => this.fail(`${name} failed: ${error.message}`),
    );
  }

  private startFlush(): void {
    const since = this.model.acknowledgements;
    const name = `flush after ${since} acknowledgements`;
    const request = this.begin(name);
    this.volume.flush().then(
      () => {
        if (this.end(request, name)) this.checkDurable(`after ${name}`, since);
      },
      (error: Error) => this.fail(`${name} failed: ${error.message}`),
    );
  }

  /** Puts a request on the in-flight list; returns its number. */
  private begin(name: string): number {
    this.requestsStarted++;
    this.requestsInFlight.set(this.requestsStarted, name);
    this.note(`${name} starts`);
    return this.requestsStarted;
  }

  /** Takes the request off the in-flight list; false when the seed is over (owner crashed) and it must be ignored. */
  private end(request: number, name: string): boolean {
    this.requestsInFlight.delete(request);
    if (this.ownerCrashed) return false;
    this.note(`${name} done`);
    return true;
  }

  // ---- Checks ----

  private afterStep(): void {
    if (this.failure !== null || this.ownerCrashed) return;
    if (this.changedPages.size > 0 && this.armed()) {
      const mirrors = this.linkedMirrors();
      for (const page of this.changedPages) {
        this.coverage['survivor-page-check']++;
        const wrong = this.model.explainWrong(page * this.shape.pageBytes, this.survivorView(page, mirrors, true), this.model.acknowledgements);
        if (wrong) return this.fail(`an owner crash now would lose an acknowledged write: ${wrong}`);
      }
    }
    this.changedPages.clear();
    const quiet = this.requestsInFlight.size === 0 && !this.network.busy && !this.disk.busy;
    if (quiet && !this.wasQuiet) this.checkQuiet();
    this.wasQuiet = quiet;
  }

  /** Nothing in flight: the owner's pages are the model's, and every linked partner's mirror is the owner's page. */
  private checkQuiet(): void {
    const { pageBytes } = this.shape;
    this.coverage['quiet-check']++;
    for (let page = 0; page < VOLUME_BYTES / pageBytes; page++) {
      const resident = this.manager.residentBytes(GUID, page);
      if (resident && !resident.equals(this.model.floor.subarray(page * pageBytes, (page + 1) * pageBytes))) {
        const wrong = this.model.explainWrong(page * pageBytes, resident, this.model.acknowledgements);
        return this.fail(`quiet, the owner's resident page ${page} differs from the acknowledged writes: ${wrong ?? 'an older write shows'}`);
      }
    }
    for (const partner of this.partners) {
      if (partner.state !== 'linked') continue;
      for (const [page, mirrored] of partner.mirror.pagesOf(GUID)) {
        const owner = this.manager.residentBytes(GUID, page) ?? this.disk.durable.subarray(page * pageBytes, (page + 1) * pageBytes);
        if (!mirrored.data.equals(owner)) return this.fail(`quiet, node ${partner.id} mirrors page ${page} (version ${mirrored.version}) unlike the owner's`);
        if (!this.manager.isDirty(GUID, page)) {
          return this.fail(`quiet, node ${partner.id} still mirrors page ${page} (version ${mirrored.version}), which the owner holds clean or not at all`);
        }
      }
    }
    if (this.partners.every((partner) => partner.state !== 'linked')) {
      this.checkDurable('quiet with no partner left', this.model.acknowledgements);
    }
  }

  /** The disks alone hold every write acknowledged before acknowledgement count `since` (and `required`). */
  private checkDurable(what: string, since: number, required?: WriteRecord): void {
    const wrong = this.model.explainWrong(0, this.disk.durable, since, required);
    if (wrong) this.fail(`${what}, the disks lack an acknowledged write: ${wrong}`);
  }

  private linkedMirrors(): Array<Map<number, { version: number; data: Buffer }>> {
    return this.partners.filter((partner) => partner.state === 'linked').map((partner) => partner.mirror.pagesOf(GUID));
  }

  /** What survivors read for a page: the disk with their blocks (and, unless `ownerBlocksLost`, the owner's), then the newest mirror. */
  private survivorView(page: number, mirrors: ReadonlyArray<Map<number, { version: number; data: Buffer }>>, ownerBlocksLost: boolean): Buffer {
    let newest: { version: number; data: Buffer } | null = null;
    for (const pages of mirrors) {
      const mirrored = pages.get(page);
      if (mirrored && (newest === null || mirrored.version > newest.version)) newest = mirrored;
    }
    if (newest) return newest.data;
    this.disk.survivorBytes(page * this.shape.pageBytes, this.scratch, ownerBlocksLost ? (block) => block.writer === OWNER : undefined);
    return this.scratch;
  }

  // ---- Bookkeeping ----

  private pagesChanged(offset: number, length: number): void {
    const { pageBytes } = this.shape;
    for (let page = Math.floor(offset / pageBytes); page * pageBytes < offset + length; page++) this.changedPages.add(page);
  }

  private allPagesChanged(): void {
    this.pagesChanged(0, VOLUME_BYTES);
  }

  private describeInFlight(): string {
    return [...this.requestsInFlight.values()].join('; ') || 'none';
  }

  private count(kind: FaultKind, story: string): void {
    this.faults[kind]++;
    this.note(`FAULT ${story}`);
  }

  private fail(message: string): void {
    if (this.failure !== null) return;
    this.failure = `step ${this.scheduler.stepsTaken}: ${message}`;
    this.note(`FAILURE ${message}`);
  }

  private note(line: string): void {
    if (!this.options.trace) return;
    this.trace.push(`${this.scheduler.stepsTaken}: ${line}`);
    if (this.trace.length > TRACE_LINES) this.trace.shift();
  }

  /** Link errors are failures: nothing in the fault model corrupts a byte stream. */
  private simLogger(): Logger {
    const quiet = (): void => undefined;
    return { error: (message: string) => this.fail(`link error: ${message}`), warn: quiet, info: quiet, debug: quiet } as unknown as Logger;
  }
}
