// A seeded simulation of whole cluster nodes: the real ClusterNode of src/cluster (its memory
// manager, mirror store, responder, authenticated partner links, ownership loop, lease keeper,
// storage stack and RAID), two to five of them in one process, on simulated time (timed-world.ts),
// a simulated network (timed-network.ts), shared member files in memory (timed-members.ts) and
// simulated lease files (lease-disk.ts). Only the environment is simulated (NodeEnvironment):
// nothing of the node is a copy.
//
// Clients write and read every volume throughout, through whichever node they reach, while nodes
// crash, pause (SIGSTOP) and come back, links between hosts are cut and healed, lease writes turn
// slow or fail, and the disks slow down.
//
// Checked after every event, for every volume: at most one live node serves it from memory while
// holding its lease (so at most one can acknowledge). At every acknowledgement: the node holds its
// lease. Every read returns a value allowed by the writes acknowledged before it started and the
// writes submitted. At the end, after a quiet period without faults: every node is up, one holds
// the array, every volume is served by its home node again (failback), and a read of every page
// returns at least the last acknowledged write.
import { ClusterNode, type NodeEnvironment } from '../../src/cluster/index.js';
import { parseConfig, type ClusterConfig } from '../../src/config/index.js';
import type { Logger } from '../../src/observe/index.js';
import { derivePartnerKey, type LinkSecurity } from '../../src/partner/index.js';
import { createArray, memberDataBytesFor, type Lease } from '../../src/storage/index.js';
import { randomInt, seededRandom } from '../support/seeded-random.js';
import { SimLeaseDisk, type LeaseWriteDraw } from './lease-disk.js';
import { TimedMembers } from './timed-members.js';
import { TimedNetwork } from './timed-network.js';
import { TimedWorld, type Actor } from './timed-world.js';

export interface ClusterSimOptions {
  /** 2 to 5; drawn from the seed when not given. */
  nodes?: number;
  leaseMs?: number;
  faultMs?: number;
  quietMs?: number;
  trace?: boolean;
  /** Overlapping faults that may each cost a node its memory: data may be lost, so only safety and liveness are checked. */
  storm?: boolean;
  /** Planted on purpose, to prove the checks fail: every other lease's process counts as proven dead. */
  ignoreLeases?: boolean;
  /** Planted on purpose: a node taking over drops the mirrored pages instead of destaging them. */
  dropMirrorsAtTakeover?: boolean;
  /** An event-loop turn after each event instead of a microtask checkpoint: the same run, slower (timed-world.ts). */
  turnPerEvent?: boolean;
}

export interface ClusterSimStats {
  nodes: number;
  crashes: number;
  pauses: number;
  cuts: number;
  slowLeaseSpells: number;
  fenced: number;
  arrayTakeovers: number;
  volumeTakeovers: number;
  failbacks: number;
  warmPages: number;
  writesAcked: number;
  writesFailed: number;
  readsChecked: number;
}

export interface ClusterSimResult {
  seed: number;
  ok: boolean;
  failure?: string;
  steps: number;
  stats: ClusterSimStats;
  trace: string[];
}

const PAGE_BYTES = 4096;
const PAGES = 8;
/** What a client writes: the first 8 bytes of a page (a partial page: the owner pages it in first). */
const VALUE_BYTES = 8;
const PARTNER_TIMEOUT_MS = 500;
const STEP_LIMIT = 3_000_000;
/** How long the cluster must have been whole before a fault that may cost a node its memory. */
const HEALTHY_MS = 500;
const TRACE_LINES = Number(process.env.CLUSTER_SIM_TRACE_LINES ?? 150);
const SIM_KEY = derivePartnerKey(Buffer.from('the cluster simulation partner key, 32+ bytes'));

interface Incarnation extends Actor {
  readonly generation: number;
  readonly label: string;
  cluster: ClusterNode | null;
  /** ClusterNode.start resolved: it serves. */
  started: boolean;
  yielded: boolean;
}

interface Client {
  readonly index: number;
  readonly volume: string;
  /** 'home': sticks to its volume's home node while it is up; 'multipath': any node. */
  readonly mode: 'home' | 'multipath';
  server: Incarnation | null;
  inFlight: number;
  readonly writing: Set<number>;
  /** Per page: the highest acknowledged value. */
  readonly floor: number[];
}

class ClusterSimulation {
  readonly world: TimedWorld;
  readonly random: () => number;
  readonly count: number;
  readonly leaseMs: number;
  private readonly storm: boolean;
  private readonly faultMs: number;
  private readonly endMs: number;
  private readonly clientsUntil: number;
  private readonly sameHost: boolean;
  private readonly config: ClusterConfig;
  private readonly leaseDisk: SimLeaseDisk;
  private readonly members: TimedMembers;
  private readonly network: TimedNetwork;
  private readonly current: Array<Incarnation | null>;
  private readonly generations: number[];
  private readonly cuts = new Map<string, number>();
  private readonly slowLeaseUntil: number[];
  private slowDiskUntil = 0;
  private readonly clients: Client[] = [];
  /** checkExclusive's count of nodes serving each client's volume. */
  private readonly servers: number[];
  private nextValue = 1;
  private readonly pageOfValue = new Map<number, number>();
  private readonly guidOf = new Map<string, string>();
  private healthySince: number | null = null;
  private failure: string | undefined;
  private readonly trace: string[] = [];
  readonly stats: ClusterSimStats;

  constructor(
    readonly seed: number,
    readonly options: ClusterSimOptions,
  ) {
    this.random = seededRandom(seed);
    this.count = options.nodes ?? 2 + randomInt(this.random, 4);
    this.leaseMs = options.leaseMs ?? 1000;
    this.faultMs = options.faultMs ?? 20 * this.leaseMs;
    this.endMs = this.faultMs + (options.quietMs ?? 15 * this.leaseMs);
    this.clientsUntil = this.endMs - 4 * this.leaseMs;
    this.storm = options.storm ?? this.random() < 0.25;
    this.sameHost = this.random() < 0.5;
    this.world = new TimedWorld(this.count, options.turnPerEvent);
    if (options.trace) this.world.onEvent = (event) => (process.env.SIM_ALL_EVENTS || /crash|pause|cut|fault|boots|restarts|client/.test(event.label)) && this.note(`${event.owner ? `[n${event.owner.node}] ` : ''}${event.label}`);
    this.current = Array.from({ length: this.count }, () => null);
    this.generations = Array.from({ length: this.count }, () => 0);
    this.slowLeaseUntil = Array.from({ length: this.count }, () => 0);
    this.servers = Array.from({ length: this.count }, () => 0);
    this.stats = { nodes: this.count, crashes: 0, pauses: 0, cuts: 0, slowLeaseSpells: 0, fenced: 0, arrayTakeovers: 0, volumeTakeovers: 0, failbacks: 0, warmPages: 0, writesAcked: 0, writesFailed: 0, readsChecked: 0 };
    this.leaseDisk = new SimLeaseDisk(this.world, 16, this.random, (writer) => this.leaseWrite(writer), (line) => this.note(line));
    this.members = new TimedMembers(this.world, { latencyMs: () => (this.slowDiskUntil > this.world.now ? 20 + this.random() * 100 : 0.1 + this.random() * 2) });
    this.network = new TimedNetwork(this.world, this.random, { cutUntil: (a, b) => this.cutUntil(a, b), latencyMs: () => 0.05 + this.random() * 0.5 }, (node) => this.hostOf(node));
    this.config = this.makeConfig();
  }

  async run(): Promise<ClusterSimResult> {
    await this.provision();
    for (let node = 0; node < this.count; node++) this.world.schedule(this.random() * 300, null, `n${node} boots`, () => this.start(node));
    this.world.schedule(3 * this.leaseMs + this.random() * this.leaseMs, null, 'fault', () => this.injectFault());
    for (let index = 0; index < this.count; index++) {
      const client: Client = { index, volume: `vol${index}`, mode: this.random() < 0.5 ? 'home' : 'multipath', server: null, inFlight: 0, writing: new Set(), floor: Array.from({ length: PAGES }, () => 0) };
      this.clients.push(client);
      this.world.schedule(2500 + this.random() * 1000, null, `client ${index} works`, () => this.work(client));
    }
    const ended = await this.world.run(this.endMs, STEP_LIMIT, () => {
      this.trackHealth();
      this.checkExclusive();
      return this.failure === undefined;
    });
    if (ended === 'step-limit') this.fail(`more than ${STEP_LIMIT} steps`);
    if (this.failure === undefined) await this.finalCheck();
    for (const inc of this.current) if (inc) this.kill(inc);
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

  // ---- The cluster's files and config ----

  private hostOf(node: number): string {
    return this.sameHost ? '10.0.0.1' : `10.0.0.${node + 1}`;
  }

  private makeConfig(): ClusterConfig {
    const raw = {
      version: 1,
      cluster: 'sim',
      memory: '1MiB',
      partnerTimeoutMs: PARTNER_TIMEOUT_MS,
      leaseMs: this.leaseMs,
      takeoverAddresses: true,
      warmFailback: true,
      nodes: Array.from({ length: this.count }, (_, node) => ({
        name: `n${node}`,
        listen: [{ host: this.hostOf(node), port: 10_800 + node }],
        partner: { host: this.hostOf(node), port: 10_900 + node },
      })),
      storage: { level: 'raid5', members: ['disk0', 'disk1', 'disk2'], cache: '256KiB', readAhead: 0 },
      volumes: Array.from({ length: this.count }, (_, node) => ({ name: `vol${node}`, size: PAGES * PAGE_BYTES, owner: `n${node}`, pageSize: PAGE_BYTES })),
    };
    return parseConfig(raw, 'cluster-sim', '/sim');
  }

  /** The array, created before time starts (as `ftvm raid create` would have). */
  private async provision(): Promise<void> {
    const memberDataBytes = memberDataBytesFor({ level: 'raid5', memberCount: 3, volumeBytes: this.config.volumes.map((volume) => volume.size) });
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as unknown as Logger;
    const array = await createArray({ level: 'raid5', memberPaths: this.config.storage.members, memberDataBytes }, { logger: quiet, now: () => 1_700_000_000_000 }, (path, size) => this.members.create(path, size));
    await array.stop();
    this.members.instant = false;
  }

  private cutUntil(a: number, b: number): number {
    if (a === b || this.hostOf(a) === this.hostOf(b)) return this.cuts.get(pairKey(a, b)) ?? 0;
    return this.cuts.get(pairKey(a, b)) ?? 0;
  }

  private leaseWrite(writer: Actor): LeaseWriteDraw {
    const { random } = this;
    if ((this.slowLeaseUntil[writer.node] as number) > this.world.now) {
      const fails = random() < 0.3;
      return { latencyMs: random() * 0.6 * this.leaseMs, fails, lands: !fails || random() < 0.4 };
    }
    return { latencyMs: 0.5 + random() * 15, fails: false, lands: true };
  }

  // ---- Processes ----

  private environment(inc: Incarnation): NodeEnvironment {
    const security = (plausibleEpoch: (epoch: number) => boolean): LinkSecurity => ({
      key: SIM_KEY,
      tls: false,
      admits: (nodeId, address) => nodeId >= 0 && nodeId < this.count && address === this.hostOf(nodeId),
      knownAddress: (address) => Array.from({ length: this.count }, (_, node) => this.hostOf(node)).includes(address),
      plausibleEpoch,
    });
    return {
      clock: this.world.clockFor(inc),
      linkSecurity: async (_config, plausibleEpoch) => security(plausibleEpoch),
      transport: () => this.network.transportFor(inc),
      openMember: (path) => this.members.open(path, inc),
      openLeases: async () => ({ ...this.leaseDisk.diskFor(() => inc, () => inc.label), close: async () => undefined }),
      process: { pid: 1000 * (inc.node + 1) + inc.generation, processStart: inc.generation, host: this.hostOf(inc.node) },
      processGone: (lease) => (this.options.ignoreLeases ? true : this.processGone(inc, lease)),
      doors: false,
      claimMembers: false,
      paceMemberIo: () => undefined,
      faults: { dropMirrorsAtTakeover: this.options.dropMirrorsAtTakeover === true },
    };
  }

  /** lease-files.ts's processGone: on the same host, /proc tells whether the lease's process lives. */
  private processGone(observer: Incarnation, lease: Lease): boolean | null {
    if (lease.host !== this.hostOf(observer.node)) return null;
    const inc = this.current[lease.slot];
    return !(inc && inc.alive && inc.generation === lease.processStart);
  }

  private start(node: number): void {
    const generation = this.generations[node]++ as number;
    const inc: Incarnation = { node, alive: true, generation, label: `n${node}.${generation}`, cluster: null, started: false, yielded: false };
    this.current[node] = inc;
    this.note(`${inc.label} starts`);
    const timings = { discoveryMs: 1500, holderWaitMs: 30_000 };
    ClusterNode.start(this.config, `n${node}`, this.loggerFor(inc), timings, this.environment(inc)).then(
      (cluster) => {
        if (!inc.alive) return;
        inc.cluster = cluster;
        inc.started = true;
        cluster.onFenced = (reason) => this.fence(inc, reason);
        this.note(`${inc.label} serves`);
      },
      (error: Error) => {
        if (!inc.alive) return;
        this.note(`${inc.label} failed to start: ${error.message}`);
        this.stop(inc, 'start failed');
      },
    );
  }

  private loggerFor(inc: Incarnation): Logger {
    const log =
      (level: string) =>
      (message: string): void => {
        this.note(`${inc.label} ${level}: ${message}`);
        if (/took over volume/.test(message)) this.stats.volumeTakeovers++;
        if (/holds the shared array now/.test(message)) this.stats.arrayTakeovers++;
        if (/is served by node .* again/.test(message)) this.stats.failbacks++;
        const copied = /(\d+) page\(s\) copied by its previous owner are resident here/.exec(message);
        if (copied) this.stats.warmPages += Number(copied[1]);
        // Giving way ends in a fence: a loss of this node's memory already under way.
        if (/giving way/.test(message)) inc.yielded = true;
      };
    return { error: log('error'), warn: log('warn'), info: log('info'), debug: () => undefined, log: (level: string, message: string) => log(level)(message) } as unknown as Logger;
  }

  /** A crash (SIGKILL): nothing more of it runs; the kernel closes its connections a moment later. */
  private crash(inc: Incarnation): void {
    this.stats.crashes++;
    this.stop(inc, 'crash');
  }

  private fence(inc: Incarnation, reason: string): void {
    if (!inc.alive) return;
    this.stats.fenced++;
    this.note(`${inc.label} fenced: ${reason}`);
    // serve.ts: a fenced node exits (75) and its supervisor starts it again.
    this.stop(inc, `fenced: ${reason}`);
  }

  private stop(inc: Incarnation, why: string): void {
    if (!inc.alive) return;
    this.kill(inc);
    this.note(`${inc.label} stops (${why})`);
    for (const client of this.clients) if (client.server === inc) client.server = null;
    this.world.schedule(1000 + this.random() * 2500, null, `n${inc.node} restarts`, () => this.start(inc.node));
  }

  private kill(inc: Incarnation): void {
    inc.alive = false;
    this.world.drop(inc);
    this.network.kill(inc);
  }

  // ---- Faults ----

  private injectFault(): void {
    if (this.world.now >= this.faultMs) return;
    const { random } = this;
    this.world.schedule(300 + random() * 1200, null, 'fault', () => this.injectFault());
    const draw = random();
    const live = this.current.filter((inc): inc is Incarnation => !!inc && inc.alive && inc.started);
    const pick = (): Incarnation | undefined => live[randomInt(random, live.length)];
    // Faults that may cost a node its memory come one at a time: the next only once the cluster is
    // whole again. Harmless ones (short pauses and cuts, slow data disks) come at any time.
    const mayLose = this.storm || this.healthyFor() >= HEALTHY_MS;
    if (draw < 0.25) {
      const holder = live.find((inc) => inc.cluster?.holdsArray);
      const target = random() < 0.5 ? (holder ?? pick()) : pick();
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
      const a = randomInt(random, this.count);
      const b = (a + 1 + randomInt(random, this.count - 1)) % this.count;
      const ms = random() < 0.4 || !mayLose ? random() * PARTNER_TIMEOUT_MS * 0.8 : this.leaseMs * (0.5 + random() * 4);
      const key = pairKey(a, b);
      this.cuts.set(key, Math.max(this.cuts.get(key) ?? 0, this.world.now + ms));
      this.stats.cuts++;
      this.note(`FAULT cut n${a}–n${b} for ${ms.toFixed(0)} ms`);
    } else if (draw < 0.87) {
      if (!mayLose) return;
      const node = randomInt(random, this.count);
      this.slowLeaseUntil[node] = this.world.now + this.leaseMs * (0.5 + random() * 3);
      this.stats.slowLeaseSpells++;
      this.note(`FAULT n${node}'s lease writes slow and failing until ${(this.slowLeaseUntil[node] as number).toFixed(0)}`);
    } else {
      this.slowDiskUntil = this.world.now + this.leaseMs * random() * 2;
      this.note(`FAULT data disks slow until ${this.slowDiskUntil.toFixed(0)}`);
    }
  }

  private healthyFor(): number {
    return this.healthySince === null ? -1 : this.world.now - this.healthySince;
  }

  /** Whole: every node up and serving, nothing cut, paused or short of lease writes, every pair linked. */
  private trackHealth(): void {
    const now = this.world.now;
    if (this.whole(now)) this.healthySince ??= now;
    else this.healthySince = null;
  }

  // Runs after every event: written without allocating.
  private whole(now: number): boolean {
    for (const inc of this.current) {
      if (!inc || !inc.alive || !inc.started || inc.yielded || this.world.paused(inc.node) || (this.slowLeaseUntil[inc.node] as number) > now) return false;
    }
    for (const until of this.cuts.values()) if (until > now) return false;
    for (const inc of this.current) if ((inc?.cluster?.livePartners ?? 0) < this.count - 1) return false;
    return true;
  }

  // ---- Clients ----

  private serverFor(client: Client): Incarnation | null {
    const up = (inc: Incarnation | null | undefined): inc is Incarnation => !!inc && inc.alive && inc.started;
    if (client.server && up(client.server)) return client.server;
    const home = this.current[client.index];
    if (client.mode === 'home' && up(home)) return home;
    const live = this.current.filter(up);
    return live[randomInt(this.random, live.length)] ?? null;
  }

  /** The export of `volume` at `inc` (a node's exports are keyed by allocation GUID: looked up by the one last found). */
  private entryOf(inc: Incarnation, volume: string) {
    const exports = inc.cluster?.exports;
    if (!exports) return undefined;
    const known = exports.get(this.guidOf.get(volume) ?? '');
    if (known?.allocation.name === volume) return known;
    for (const entry of exports.values()) {
      if (entry.allocation.name !== volume) continue;
      this.guidOf.set(volume, entry.allocation.guid);
      return entry;
    }
    return undefined;
  }

  private work(client: Client): void {
    if (this.world.now >= this.clientsUntil) return;
    this.world.schedule(3 + this.random() * 40, null, `client ${client.index} works`, () => this.work(client));
    const server = this.serverFor(client);
    client.server = server;
    if (!server || client.inFlight >= 2) return;
    const entry = this.entryOf(server, client.volume);
    if (!entry) return;
    const page = randomInt(this.random, PAGES);
    const buffer = Buffer.alloc(VALUE_BYTES);
    client.inFlight++;
    const done = (): boolean => {
      client.inFlight--;
      return server.alive;
    };
    if (this.random() < 0.6 && !client.writing.has(page)) {
      const value = this.nextValue++;
      this.pageOfValue.set(value, page);
      buffer.writeUInt32LE(value, 0);
      client.writing.add(page);
      const fua = this.random() < 0.1;
      this.world.schedule(0.1, server, `client ${client.index} writes ${client.volume} page ${page} := ${value} at ${server.label}`, () => {
        entry.switch.write(page * PAGE_BYTES, [buffer], fua).then(
          () => {
            client.writing.delete(page);
            if (!done()) return;
            if (!server.cluster?.holdsLease) this.fail(`${server.label} acknowledged a write to ${client.volume} without holding its lease`);
            this.stats.writesAcked++;
            client.floor[page] = Math.max(client.floor[page] as number, value);
            this.note(`client ${client.index} write ${client.volume} page ${page} := ${value} acknowledged by ${server.label}`);
          },
          (error: Error) => {
            client.writing.delete(page);
            done();
            this.stats.writesFailed++;
            const status = server.cluster?.status();
            this.note(`client ${client.index} write ${client.volume} page ${page} := ${value} failed at ${server.label}: ${error.message} (lease ${status?.leaseRemainingMs} ms left, epoch ${status?.epoch})`);
          },
        );
      });
      return;
    }
    const floor = client.floor[page] as number;
    const lend = this.random() < 0.3;
    const holdMs = this.random() * 20;
    this.world.schedule(0.1, server, `client ${client.index} reads ${client.volume} page ${page} at ${server.label}`, () => {
      // As a long NBD read does (Connection.completePinned): the page lent, not copied, until the
      // socket took it. Nothing may change it meanwhile, and a handover must wait for the loan.
      const pinned = lend ? entry.switch.pinRead(page * PAGE_BYTES, VALUE_BYTES) : null;
      if (pinned) {
        const lent = (pinned.pieces[0] as Buffer).readUInt32LE(0);
        this.world.schedule(holdMs, server, `client ${client.index} ends its loan of ${client.volume} page ${page} at ${server.label}`, () => {
          const now = (pinned.pieces[0] as Buffer).readUInt32LE(0);
          if (now !== lent) this.fail(`${client.volume} page ${page} lent at ${server.label} changed from ${lent} to ${now} while lent`);
          pinned.release();
          if (done()) this.checkRead(client, page, lent, floor, `${server.label} (lent)`);
        });
        return;
      }
      entry.switch.read(page * PAGE_BYTES, buffer).then(
        () => {
          if (done()) this.checkRead(client, page, buffer.readUInt32LE(0), floor, server.label);
        },
        () => void done(),
      );
    });
  }

  private checkRead(client: Client, page: number, value: number, floor: number, where: string): void {
    this.stats.readsChecked++;
    if (value !== 0 && this.pageOfValue.get(value) !== page) this.fail(`${client.volume} page ${page} read ${value} at ${where}, a value never written there`);
    else if (value < floor && !this.storm) this.fail(`${client.volume} page ${page} read ${value} at ${where}; the write of ${floor} was acknowledged before the read began (lost)`);
  }

  // ---- Checks ----

  private checkExclusive(): void {
    // The array has one writer: two holders would each cache, destage and compute parity over the
    // same members (the array as a whole is lost). Runs after every event: counts first (one pass
    // over the nodes holding their leases), and names the nodes only when it fails.
    let holders = 0;
    const servers = this.servers.fill(0);
    for (const inc of this.current) {
      if (!inc || !inc.alive || !inc.cluster?.holdsLease) continue;
      if (inc.cluster.holdsArray) holders++;
      for (const client of this.clients) if (this.entryOf(inc, client.volume)?.memory) servers[client.index]++;
    }
    if (holders > 1) this.fail(`the shared array is held by ${this.current.filter((inc) => this.holdsArrayNow(inc)).map((inc) => inc?.label).join(' and ')}, each holding its lease`);
    for (const client of this.clients) {
      if ((servers[client.index] as number) > 1) this.fail(`${client.volume} is served from memory by ${this.current.filter((inc) => this.servesNow(inc, client.volume)).map((inc) => inc?.label).join(' and ')}, each holding its lease`);
    }
  }

  /** A live node holding its lease and the shared array. */
  private holdsArrayNow(inc: Incarnation | null): boolean {
    return !!inc && inc.alive && !!inc.cluster?.holdsLease && inc.cluster.holdsArray;
  }

  /** A live node holding its lease and serving `volume` from memory. */
  private servesNow(inc: Incarnation | null, volume: string): boolean {
    return !!inc && inc.alive && !!inc.cluster?.holdsLease && !!this.entryOf(inc, volume)?.memory;
  }

  private async finalCheck(): Promise<void> {
    const live = this.current.filter((inc): inc is Incarnation => !!inc && inc.alive && inc.started);
    if (live.length !== this.count) return this.fail(`liveness: after the quiet period only ${live.map((inc) => inc.label).join(', ') || 'no node'} serve`);
    const holders = live.filter((inc) => inc.cluster?.holdsArray);
    if (holders.length !== 1) return this.fail(`liveness: ${holders.length} nodes hold the array after the quiet period`);
    for (const client of this.clients) {
      const servers = live.filter((inc) => this.entryOf(inc, client.volume)?.memory);
      if (servers.length !== 1 || servers[0] !== this.current[client.index]) {
        return this.fail(`failback: ${client.volume} is served by ${servers.map((inc) => inc.label).join(', ') || 'nobody'} after the quiet period, not by its home n${client.index}`);
      }
    }
    let reads = 0;
    const expected = this.clients.length * PAGES;
    for (const client of this.clients) {
      const reader = live[randomInt(this.random, live.length)] as Incarnation;
      const entry = this.entryOf(reader, client.volume);
      if (!entry) return this.fail(`${reader.label} does not export ${client.volume}`);
      for (let page = 0; page < PAGES; page++) {
        const buffer = Buffer.alloc(VALUE_BYTES);
        const floor = client.floor[page] as number;
        this.world.schedule(1, reader, `final read ${client.volume} page ${page}`, () => {
          entry.switch.read(page * PAGE_BYTES, buffer).then(
            () => {
              reads++;
              this.checkRead(client, page, buffer.readUInt32LE(0), floor, `${reader.label} (final)`);
            },
            (error: Error) => this.fail(`final read of ${client.volume} page ${page} at ${reader.label} failed: ${error.message}`),
          );
        });
      }
    }
    await this.world.run(this.endMs + 10_000, STEP_LIMIT, () => this.failure === undefined && reads < expected);
    if (this.failure === undefined && reads < expected) this.fail(`liveness: only ${reads} of ${expected} final reads finished`);
  }
}

function pairKey(a: number, b: number): string {
  return a < b ? `${a}-${b}` : `${b}-${a}`;
}

export function runClusterSimulation(seed: number, options: ClusterSimOptions = {}): Promise<ClusterSimResult> {
  return new ClusterSimulation(seed, options).run();
}

export interface ClusterRunSummary {
  seedsRun: number;
  seconds: number;
  steps: number;
  failed: { seed: number; failure: string } | null;
  totals: Omit<ClusterSimStats, 'nodes'>;
}

/** Runs seeds start … start+count−1, stopping at the first failure. */
export async function runClusterSeeds(start: number, count: number, options: ClusterSimOptions = {}): Promise<ClusterRunSummary> {
  const began = performance.now();
  const totals: Omit<ClusterSimStats, 'nodes'> = { crashes: 0, pauses: 0, cuts: 0, slowLeaseSpells: 0, fenced: 0, arrayTakeovers: 0, volumeTakeovers: 0, failbacks: 0, warmPages: 0, writesAcked: 0, writesFailed: 0, readsChecked: 0 };
  let steps = 0;
  let seedsRun = 0;
  let failed: ClusterRunSummary['failed'] = null;
  for (let seed = start; seed < start + count; seed++) {
    const result = await runClusterSimulation(seed, options);
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

