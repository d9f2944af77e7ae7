// Who serves what: takeover, failback and giving way, decided in one loop.
//
// The array holder is the one authority on volume ownership (it alone writes the cluster record), so
// a node never makes itself the owner of a volume; it is handed one with a takeover message. The
// loop runs every RECONCILE_INTERVAL_MS and at every link change, one pass at a time:
//
//   not the holder, holder's link gone:
//     holder's lease expired (or its process proven dead) and this node is the lowest live one
//        → claim a new epoch, assemble the array here, destage the holder's mirrored pages
//     holder's lease still renewed after leaseMs without a link (a partition)
//        → stop renewing this node's lease: it runs out, this node is fenced, the holder takes
//          over its volumes; at most one side ever acknowledges for a volume
//   the holder, for each volume:
//     owned here, home node live for FAILBACK_SETTLE_MS   → hand it back (failback)
//     owner live, not yet confirmed                        → send it a takeover message (it serves)
//     owner gone and its lease expired (or proven dead)    → take it over: new epoch, its mirrored
//        pages to the disks, served from this node's memory manager, partners told; with
//        `takeoverAddresses`, the dead node's NBD addresses are served here until it is back
import { commandComplete, MessageType, Status, type Message, type Takeover } from '../partner/index.js';
import { claimPauseMs, type ClusterNode, type Served } from './node.js';
import { isOk } from './remote-array.js';

const RECONCILE_INTERVAL_MS = 100;
/** A returning node is given its volumes back once its link has been up this long (no flapping). */
const FAILBACK_SETTLE_MS = 1000;

export class Authority {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private stopped = false;
  private holderLostAt: number | null = null;
  private yielded = false;
  /** Partners whose link was up and then closed: their death was seen, no start-up grace needed. */
  private readonly deathSeen = new Set<number>();
  private readonly upSince = new Map<number, number>();
  /** Volumes whose (other) owner has confirmed it serves them. */
  private readonly confirmed = new Set<string>();
  /** Dead nodes whose NBD addresses this node serves. */
  private readonly borrowed = new Set<number>();
  private readonly startedAt = performance.now();

  constructor(private readonly node: ClusterNode) {}

  start(): void {
    // Links that came up while the node was still being built count as up since now.
    for (const link of this.node.partners.live()) if (!this.upSince.has(link.peer.nodeId)) this.upSince.set(link.peer.nodeId, performance.now());
    this.timer = setInterval(() => this.kick(), RECONCILE_INTERVAL_MS);
    this.timer.unref();
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  partnerUp(peer: number, peerEpoch: number): void {
    this.upSince.set(peer, performance.now());
    this.deathSeen.delete(peer);
    if (peerEpoch > this.node.leases.epoch) {
      this.node.fence(`node ${this.node.name(peer)} is at epoch ${peerEpoch}, this node at ${this.node.leases.epoch}: there was a takeover while this node was cut off`);
      return;
    }
    this.kick();
  }

  partnerDown(peer: number): void {
    if (this.upSince.delete(peer)) this.deathSeen.add(peer);
    for (const entry of this.node.served.values()) if (entry.ownerId === peer) this.confirmed.delete(entry.allocation.guid);
    this.kick();
  }

  /** A takeover message from the holder: `toNodeId` serves the allocation from now on. */
  async onTakeover(message: Takeover): Promise<Message> {
    const node = this.node;
    node.leases.adoptEpoch(message.epoch);
    node.identity.epoch = node.leases.epoch;
    const entry = node.served.get(message.allocation);
    if (!entry) return reply(message, Status.UnknownAllocation);
    if (message.toNodeId === node.nodeId) {
      if (!entry.memory) {
        // Copies of its pages mirrored here are older than what the previous owner put on the disks.
        node.destageMirrors([entry.allocation]);
        node.logger.info(`serving volume ${entry.allocation.name} (handed over by node ${node.name(message.fromNodeId)}, epoch ${message.epoch})`);
      }
      node.own(entry);
      return reply(message, Status.Ok);
    }
    if (entry.memory) {
      node.fence(`the array holder gave volume ${entry.allocation.name}, served here, to node ${node.name(message.toNodeId)}`);
      return reply(message, Status.Ok);
    }
    if (entry.ownerId !== message.toNodeId) node.logger.info(`volume ${entry.allocation.name} is served by node ${node.name(message.toNodeId)} now (epoch ${message.epoch})`);
    node.destageMirrors([entry.allocation]);
    node.forward(entry, message.toNodeId);
    return reply(message, Status.Ok);
  }

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.reconcile();
        } while (this.again && !this.stopped);
      } catch (error) {
        this.node.logger.error(`ownership: ${(error as Error).message}`);
      } finally {
        this.running = false;
      }
    })();
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return;
    if (this.node.holderId === this.node.nodeId) await this.asHolder();
    else await this.asMember();
  }

  private async asMember(): Promise<void> {
    const { node } = this;
    const holder = node.holderId;
    if (node.partners.link(holder)) {
      this.holderLostAt = null;
      return;
    }
    const now = performance.now();
    this.holderLostAt ??= now;
    if (node.leases.expired(holder)) {
      const live = node.partners.live().map((link) => link.peer.nodeId);
      if (Math.min(node.nodeId, ...live) !== node.nodeId) return;
      await this.takeArray(holder);
      this.again = true;
      return;
    }
    if (!this.yielded && now - this.holderLostAt >= node.leases.leaseMs && node.leases.renewedWithin(holder, node.leases.leaseMs)) {
      this.yielded = true;
      node.logger.warn(`cut off from node ${node.name(holder)}, which holds the shared array and still renews its lease: giving way (this node's lease runs out, its volumes move there)`);
      node.leases.yieldLease(`cut off from the array holder ${node.name(holder)}`);
    }
  }

  private async takeArray(dead: number): Promise<void> {
    const { node } = this;
    const why = node.leases.leaseOf(dead)?.holder === '' ? 'it released its lease' : this.deathSeen.has(dead) ? 'its link closed and its lease is void' : 'its lease expired';
    node.logger.warn(`node ${node.name(dead)}, the array holder, is gone (${why}): taking over the shared array`);
    const epoch = await node.leases.claimEpoch(claimPauseMs(node.config, node.leases, node.partners, node.nodeId), [dead]);
    node.identity.epoch = epoch;
    await node.holdArray();
    const pages = node.destageMirrors(node.allocationsOwnedBy(dead));
    await node.stack?.flush();
    node.logger.warn(`this node holds the shared array now (epoch ${epoch}); ${pages} page(s) node ${node.name(dead)} had mirrored here are on the disks`);
  }

  private async asHolder(): Promise<void> {
    const { node } = this;
    for (const entry of node.served.values()) {
      if (this.stopped) return;
      const owner = entry.ownerId;
      if (owner === node.nodeId) {
        if (entry.homeId !== node.nodeId && this.settled(entry.homeId)) await this.handBack(entry);
        continue;
      }
      if (node.partners.link(owner)) {
        if (!this.confirmed.has(entry.allocation.guid) && (await this.assign(entry, owner))) this.confirmed.add(entry.allocation.guid);
        continue;
      }
      if (!node.leases.expired(owner)) continue;
      const inGrace = performance.now() - this.startedAt < node.leases.leaseMs * 2;
      if (!this.deathSeen.has(owner) && inGrace) continue;
      await this.adopt(entry, owner);
    }
    for (const dead of [...this.borrowed]) {
      const stillHere = [...node.served.values()].some((entry) => entry.homeId === dead && entry.ownerId !== dead);
      if (!stillHere && node.partners.link(dead)) {
        this.borrowed.delete(dead);
        node.logger.info(`giving node ${node.name(dead)}'s NBD addresses back to it`);
        // Not awaited: the listeners close at once, but their connections end only when the clients
        // let go, and this loop must go on meanwhile (found by the fio failover campaign: a second
        // death of that node went unhandled while the loop waited here).
        void node.server.closeGroup(`node ${node.name(dead)}`).then(() => node.logger.info(`node ${node.name(dead)}'s clients have left this node`));
      }
    }
  }

  private settled(peer: number): boolean {
    const since = this.upSince.get(peer);
    return since !== undefined && performance.now() - since >= FAILBACK_SETTLE_MS && this.node.partners.link(peer) !== null;
  }

  /** Takes over a volume whose owner is gone: its mirrored pages to the disks, then served here. */
  private async adopt(entry: Served, dead: number): Promise<void> {
    const { node } = this;
    const name = entry.allocation.name;
    entry.moving = 'taking over';
    try {
      const epoch = await node.leases.claimEpoch(claimPauseMs(node.config, node.leases, node.partners, node.nodeId), [dead]);
      node.identity.epoch = epoch;
      const pages = node.destageMirrors([entry.allocation]);
      await node.stack?.flush();
      node.own(entry);
      await node.writeOwners();
      await this.announce(entry, dead, node.nodeId, epoch);
      node.logger.warn(`took over volume ${name} from node ${node.name(dead)} at epoch ${epoch} (${pages} mirrored page(s) destaged); serving it here`);
      if (node.config.takeoverAddresses) this.borrow(dead);
    } finally {
      entry.moving = '';
    }
  }

  /** Failback: the volume's home node is back; flush and release it here, then hand it over. */
  private async handBack(entry: Served): Promise<void> {
    const { node } = this;
    const home = entry.homeId;
    const { guid, name } = entry.allocation;
    entry.moving = `moving to ${node.name(home)}`;
    node.logger.info(`volume ${name}: node ${node.name(home)} is back; handing the volume back to it`);
    const volumeSwitch = entry.switch;
    volumeSwitch.pause();
    try {
      await volumeSwitch.drain();
      node.targets.owned.delete(guid);
      // Fig. 9: every page on the disks and synced, frames freed, partners' structures dismantled.
      await node.manager.releaseAllocation(guid);
      entry.memory = null;
      node.forward(entry, home);
      await node.writeOwners();
      if (await this.assign(entry, home)) {
        this.confirmed.add(guid);
        node.logger.info(`volume ${name} is served by node ${node.name(home)} again`);
        return;
      }
      node.logger.warn(`node ${node.name(home)} did not take volume ${name}; serving it here again`);
      node.own(entry);
      await node.writeOwners();
    } catch (error) {
      // Whatever step failed, the volume is served here again (its pages are on the disks).
      node.own(entry);
      throw error;
    } finally {
      entry.moving = '';
      volumeSwitch.resume();
    }
  }

  /** Tells `to` it serves the volume (and the other partners where to forward); true once `to` agreed. */
  private async assign(entry: Served, to: number): Promise<boolean> {
    const { node } = this;
    const link = node.partners.link(to);
    if (!link) return false;
    const message = takeover(entry, node.nodeId, to, node.leases.epoch);
    let answer: Message;
    try {
      answer = await link.request(message);
    } catch {
      return false;
    }
    if (!isOk(answer)) return false;
    if (entry.ownerId !== to) node.forward(entry, to);
    await this.announce(entry, node.nodeId, to, node.leases.epoch, to);
    return true;
  }

  /** Tells every live partner (but `skip`) who serves the volume now; answers are not waited on for long. */
  private async announce(entry: Served, from: number, to: number, epoch: number, skip = -1): Promise<void> {
    const links = this.node.partners.live().filter((link) => link.peer.nodeId !== skip);
    await Promise.all(links.map((link) => link.request(takeover(entry, from, to, epoch)).catch(() => null)));
  }

  private borrow(dead: number): void {
    const { node } = this;
    if (this.borrowed.has(dead)) return;
    this.borrowed.add(dead);
    const group = `node ${node.name(dead)}`;
    for (const address of node.config.nodes[dead]?.listen ?? []) {
      if ('path' in address) continue;
      void node.listenPersistently(address, group, () => this.borrowed.has(dead)).catch((error: Error) => node.logger.error(`cannot serve node ${node.name(dead)}'s address: ${error.message}`));
    }
  }
}

function takeover(entry: Served, from: number, to: number, epoch: number): Takeover {
  return { type: MessageType.Takeover, requestId: 0, allocation: entry.allocation.guid, fromNodeId: from, toNodeId: to, epoch };
}

function reply(message: Takeover, status: Status): Message {
  return commandComplete(message, status);
}
