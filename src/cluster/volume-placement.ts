// Volume placement: who serves each volume, decided by the array holder (it alone writes the
// cluster record), and carried out on every node by the messages it sends. A node never makes itself
// the owner of a volume; it is handed one.
//
// On the holder, for each volume, every pass:
//   owned here, home node live for FAILBACK_SETTLE_MS   → hand it back (failback): its clean resident
//                                                          pages copied there first (warm handover),
//                                                          then released here and assigned
//   owner live, not yet confirmed                        → volume handover to it (it serves)
//   owned by another node, home node back                → that node releases it, then it goes home
//   owner gone and its lease expired (or proven dead)    → take it over: new epoch, its mirrored pages
//                                                          to the disks and resident here, served here,
//                                                          partners told; with `takeoverAddresses`,
//                                                          the dead node's NBD addresses served here
//   anyone not told who serves it                        → owner notice
//
// On any node, the messages:
//   volume handover   to `to`: serve it (first reclaiming what partners mirrored for this node's
//                     previous process); to its current server: release it and forward; to others:
//                     forward, dropping mirrors older than the new owner's
//   owner notice      forward to the owner (a node told that a volume it serves is another's is fenced)
//   mirror reclaim    what this node mirrors of the volume for the asker's previous process goes to
//                     the disks, synced, before the answer
import type { Clock } from '../core/index.js';
import { MessageType, Status, type Message, type MirrorReclaim, type OwnerNotice, type VolumeHandover } from '../partner/index.js';
import { isOk } from './remote-array.js';
import { reply, UNKNOWN_NODE, type LinkWatch, type OwnedVolume, type OwnershipHost, type OwnershipLink } from './ownership.js';

/** A returning node is given its volumes back once its link has been up this long (no flapping). */
const FAILBACK_SETTLE_MS = 1000;

/** What came of handing a volume to a node: it serves it, it said no, or no answer came. */
type Assigned = 'served' | 'refused' | 'unknown';

export class VolumePlacement<V extends OwnedVolume> {
  /** Volumes whose (other) owner has confirmed it serves them. */
  private readonly confirmed = new Set<string>();
  /** Per volume, the partners told who serves it now (since their link came up). */
  private readonly told = new Map<string, Set<number>>();
  /** Dead nodes whose NBD addresses this node serves. */
  private readonly borrowed = new Set<number>();
  private readonly startedAt: number;
  private stopped = false;

  constructor(
    private readonly node: OwnershipHost<V>,
    private readonly links: LinkWatch,
    private readonly clock: Clock,
  ) {
    this.startedAt = clock.now();
  }

  stop(): void {
    this.stopped = true;
  }

  partnerUp(peer: number): void {
    for (const told of this.told.values()) told.delete(peer);
    // A new link may be to a new process, which serves nothing yet: its volumes are assigned again
    // (ownership simulator, three nodes, seed 95: a handover's answer from the process that then
    // died landed after its link had closed, and its successor was never given the volume).
    this.forgetConfirmed(peer);
  }

  partnerDown(peer: number): void {
    this.forgetConfirmed(peer);
  }

  /** This node took the array over: every partner must be told again who serves what. */
  forgetTold(): void {
    this.told.clear();
  }

  /** One pass on the holder. */
  async asHolder(): Promise<void> {
    const { node } = this;
    for (const entry of node.served.values()) {
      if (this.stopped) return;
      const owner = entry.ownerId;
      if (owner === node.nodeId) {
        if (entry.homeId !== node.nodeId && this.settled(entry.homeId)) await this.handBack(entry);
        else await this.retell(entry);
        continue;
      }
      if (node.partners.link(owner)) {
        if (!this.confirmed.has(entry.allocation.guid)) {
          if ((await this.assign(entry, owner)) === 'served') this.confirmed.add(entry.allocation.guid);
        } else if (entry.homeId !== owner && (entry.homeId === node.nodeId || this.settled(entry.homeId))) await this.moveHome(entry, owner);
        else await this.retell(entry);
        continue;
      }
      if (!node.leases.expired(owner)) continue;
      const inGrace = this.clock.now() - this.startedAt < node.leases.leaseMs * 2;
      if (!this.links.sawDie(owner) && inGrace) continue;
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
        void node.returnAddresses(dead).then(() => node.logger.info(`node ${node.name(dead)}'s clients have left this node`));
      }
    }
  }

  // ---- Messages from other nodes ----

  /** From the holder: `toNodeId` serves the volume from now on. */
  async onVolumeHandover(message: VolumeHandover): Promise<Message> {
    const { node } = this;
    const entry = node.served.get(message.allocation);
    if (!entry) return reply(message, Status.UnknownAllocation);
    if (message.toNodeId === node.nodeId) return this.serveHere(entry, message, message.fromNodeId);
    return this.servedElsewhere(entry, message, message.fromNodeId, message.toNodeId);
  }

  /** From the holder, repeated: the owner serves the volume (who had it before is not said). */
  async onOwnerNotice(message: OwnerNotice): Promise<Message> {
    const entry = this.node.served.get(message.allocation);
    if (!entry) return reply(message, Status.UnknownAllocation);
    if (message.ownerNodeId === this.node.nodeId) return this.serveHere(entry, message, UNKNOWN_NODE);
    return this.servedElsewhere(entry, message, UNKNOWN_NODE, message.ownerNodeId);
  }

  /**
   * A node is about to serve a volume, from a fresh start (it holds the array) or handed over:
   * the pages of it mirrored here for its previous process are the only copy of what that process
   * acknowledged last. They go to the disks (through the holder), synced, before it is answered.
   */
  async onMirrorReclaim(message: MirrorReclaim): Promise<Message> {
    const { node } = this;
    if (message.nodeId === node.nodeId) return reply(message, Status.Invalid);
    const entry = node.served.get(message.allocation);
    if (!entry) return reply(message, Status.UnknownAllocation);
    // Served here: the asker must not serve it (it learns so from the status), nor is this fenced.
    if (entry.memory) return reply(message, Status.Locked);
    const pages = await node.destageMirrorsToArray([entry]).catch((error: Error) => {
      node.logger.error(`volume ${entry.allocation.name}: putting node ${node.name(message.nodeId)}'s mirrored pages on the disks failed: ${error.message}`);
      return -1;
    });
    if (pages < 0) return reply(message, Status.IoError);
    if (pages > 0) node.logger.warn(`volume ${entry.allocation.name}: ${pages} page(s) node ${node.name(message.nodeId)} had mirrored here before it restarted are on the disks`);
    node.forward(entry, message.nodeId);
    return reply(message, Status.Ok);
  }

  /**
   * Before this node serves `entries` (at start as the holder, or handed over): every live partner
   * puts the pages of them it mirrored for this node's previous process on the disks (through the
   * holder), synced. A partner that cannot is logged; the volume is served with what the disks hold.
   */
  async reclaim(entries: readonly V[]): Promise<void> {
    const { node } = this;
    const links = node.partners.live();
    await Promise.all(
      entries.flatMap((entry) =>
        links.map(async (link) => {
          const message: MirrorReclaim = { type: MessageType.MirrorReclaim, requestId: 0, allocation: entry.allocation.guid, nodeId: node.nodeId, epoch: node.leases.epoch };
          const answer = await link.request(message).catch((error: Error) => error);
          if (answer instanceof Error || !isOk(answer)) {
            node.logger.error(`volume ${entry.allocation.name}: node ${node.name(link.peer.nodeId)} could not put its mirrored pages on the disks (${answer instanceof Error ? answer.message : 'refused'})`);
          }
        }),
      ),
    );
  }

  /** This node serves the volume from now on (handed over by `from`, if known). */
  private async serveHere(entry: V, message: VolumeHandover | OwnerNotice, from: number): Promise<Message> {
    const { node } = this;
    if (!entry.memory) {
      // Copies of its pages mirrored here are older than what the previous owner put on the disks.
      node.destageMirrors([entry]);
      // Partners may hold what this node's previous process acknowledged last (it died before the
      // disks had it): on the disks first (ownership simulator, seed 3237).
      await this.reclaim([entry]);
      node.logger.info(`serving volume ${entry.allocation.name} (handed over by node ${node.name(from)}, epoch ${message.epoch})`);
      node.events?.emit({ kind: 'handover', volume: entry.allocation.name, from: node.name(from), to: node.name(node.nodeId) });
    }
    node.own(entry, message.epoch);
    return reply(message, Status.Ok);
  }

  /** The volume is served by `to`, another node: release it if it is served here, else forward. */
  private async servedElsewhere(entry: V, message: VolumeHandover | OwnerNotice, from: number, to: number): Promise<Message> {
    const { node } = this;
    if (entry.memory) {
      // Only the owner itself may be asked to move a volume it serves (`from` names it); a message
      // that moves it away from another node means the holder thinks this node has lost it.
      if (from !== node.nodeId) {
        node.fence(`the array holder gave volume ${entry.allocation.name}, served here, to node ${node.name(to)}`);
        return reply(message, Status.Ok);
      }
      node.logger.info(`volume ${entry.allocation.name}: the array holder moves it to node ${node.name(to)}`);
      try {
        await this.giveUp(entry, to);
      } catch (error) {
        node.logger.warn(`volume ${entry.allocation.name} stays here: ${(error as Error).message}`);
        return reply(message, Status.IoError);
      }
      return reply(message, Status.Ok);
    }
    if (entry.ownerId !== to) node.logger.info(`volume ${entry.allocation.name} is served by node ${node.name(to)} now (epoch ${message.epoch})`);
    // Mirrors the new owner wrote are its protection; any other's are older than the disks now.
    // (Dropping them all lost the new owner's when this node's view of the owner was stale:
    // ownership simulator, three nodes.)
    node.dropMirrorsExcept(entry, to);
    node.forward(entry, to);
    return reply(message, Status.Ok);
  }

  // ---- The holder's moves ----

  private settled(peer: number): boolean {
    return this.links.upFor(peer, FAILBACK_SETTLE_MS) && this.node.partners.link(peer) !== null;
  }

  /** Takes over a volume whose owner is gone: its mirrored pages to the disks, then served here. */
  private async adopt(entry: V, dead: number): Promise<void> {
    const { node } = this;
    const name = entry.allocation.name;
    entry.moving = 'taking over';
    try {
      const epoch = await node.leases.claimEpoch(node.claimPauseMs(), [dead]);
      node.setEpoch(epoch);
      const pages = await node.serveFromMirrors(entry);
      await node.writeOwners();
      await this.announce(entry, dead, node.nodeId, epoch);
      node.logger.warn(`took over volume ${name} from node ${node.name(dead)} at epoch ${epoch} (${pages} mirrored page(s) destaged and kept resident); serving it here`);
      node.events?.emit({ kind: 'takeover', what: 'volume', volume: name, from: node.name(dead), epoch });
      if (node.takeoverAddresses) this.borrow(dead);
    } finally {
      entry.moving = '';
    }
  }

  /** Failback: the volume's home node is back; flush and release it here, then hand it over. */
  private async handBack(entry: V): Promise<void> {
    const { node } = this;
    const home = entry.homeId;
    const { guid, name } = entry.allocation;
    node.logger.info(`volume ${name}: node ${node.name(home)} is back; handing the volume back to it`);
    await this.giveUp(entry, home, async () => {
      await node.writeOwners();
      const assigned = await this.assign(entry, home);
      if (assigned === 'served') {
        this.confirmed.add(guid);
        node.logger.info(`volume ${name} is served by node ${node.name(home)} again`);
        node.events?.emit({ kind: 'handover', volume: name, from: node.name(node.nodeId), to: node.name(home) });
        return;
      }
      if (assigned === 'unknown') {
        // It may serve the volume now (ownership simulator, seed 292: the answer was lost with the
        // link). Left with it: asked again when it is back, taken over once its lease runs out.
        node.logger.warn(`no answer from node ${node.name(home)} about volume ${name}: it stays with that node until it answers or its lease runs out`);
        return;
      }
      node.logger.warn(`node ${node.name(home)} did not take volume ${name}; serving it here again`);
      node.own(entry);
      await node.writeOwners();
    });
  }

  /**
   * Failback of a volume another node serves (the cluster record named it as the owner when this
   * node started holding the array, or it was adopted there): that node releases it, then it goes home.
   */
  private async moveHome(entry: V, owner: number): Promise<void> {
    const { node } = this;
    const home = entry.homeId;
    const { guid, name } = entry.allocation;
    const link = node.partners.link(owner);
    if (!link) return;
    node.logger.info(`volume ${name}: node ${node.name(home)} is back; moving the volume there from node ${node.name(owner)}`);
    entry.moving = `moving to ${node.name(home)}`;
    try {
      let answer: Message;
      try {
        answer = await link.request(handover(entry, owner, home, node.leases.epoch));
      } catch {
        return;
      }
      if (!isOk(answer)) return;
      // Released there (Fig. 9: its pages are on the disks); nobody serves it until `home` does.
      this.confirmed.delete(guid);
      if (home === node.nodeId) {
        node.destageMirrors([entry]);
        node.own(entry, node.leases.epoch);
      } else node.forward(entry, home);
      await node.writeOwners();
      if (home === node.nodeId) await this.announce(entry, owner, home, node.leases.epoch);
      else if ((await this.assign(entry, home)) === 'served') this.confirmed.add(guid);
      node.logger.info(`volume ${name} is served by node ${node.name(home)} again`);
      node.events?.emit({ kind: 'handover', volume: name, from: node.name(owner), to: node.name(home) });
    } finally {
      entry.moving = '';
    }
  }

  /**
   * Stops serving a volume here: new requests wait at the switch, running ones finish, its clean
   * resident pages go to `to` (copyResident), Fig. 9 (every page on the disks and synced, frames
   * freed, partners' structures dismantled), then requests go to `to`. `then` runs before the
   * switch opens again. Whatever fails, the volume is served here again.
   */
  private async giveUp(entry: V, to: number, then: () => Promise<void> = async () => undefined): Promise<void> {
    const { node } = this;
    entry.moving = `moving to ${node.name(to)}`;
    const volumeSwitch = entry.switch;
    const began = this.clock.now();
    const live = await node.copyResident(entry, to, 'live');
    volumeSwitch.pause();
    const paused = this.clock.now();
    try {
      await volumeSwitch.drain();
      const copied = await node.copyResident(entry, to, 'paused');
      if (copied > 0) node.logger.info(`volume ${entry.allocation.name}: ${copied} resident page(s) copied to node ${node.name(to)} (${live} in ${Math.round(paused - began)} ms while serving, ${copied - live} in ${Math.round(this.clock.now() - paused)} ms paused)`);
      await node.releaseVolume(entry);
      node.forward(entry, to);
      await then();
    } catch (error) {
      // Its pages are on the disks, or still here: either way it is served here again.
      node.own(entry);
      throw error;
    } finally {
      entry.moving = '';
      volumeSwitch.resume();
    }
  }

  /** Tells `to` it serves the volume (and the other partners where to forward). */
  private async assign(entry: V, to: number): Promise<Assigned> {
    const { node } = this;
    const link = node.partners.link(to);
    if (!link) return 'unknown';
    let answer: Message;
    try {
      answer = await link.request(handover(entry, node.nodeId, to, node.leases.epoch));
    } catch {
      // The link went with the question or the answer: `to` may serve the volume now.
      return 'unknown';
    }
    if (!isOk(answer)) return 'refused';
    if (entry.ownerId !== to) node.forward(entry, to);
    await this.announce(entry, node.nodeId, to, node.leases.epoch, to);
    return 'served';
  }

  /** Tells every live partner (but `skip`) who serves the volume now. */
  private async announce(entry: V, from: number, to: number, epoch: number, skip = -1): Promise<void> {
    const told = new Set<number>();
    this.told.set(entry.allocation.guid, told);
    if (skip >= 0) told.add(skip);
    const links = this.node.partners.live().filter((link) => link.peer.nodeId !== skip);
    await this.tell(links, told, () => handover(entry, from, to, epoch));
  }

  /**
   * The holder tells every live partner not told yet who serves the volume: an announcement lost
   * with a link, or sent by a holder that died, left a member forwarding to a node that does not
   * serve it (ownership simulator, three nodes, seed 493).
   */
  private async retell(entry: V): Promise<void> {
    const told = this.told.get(entry.allocation.guid) ?? new Set<number>();
    this.told.set(entry.allocation.guid, told);
    const owner = entry.ownerId;
    told.add(owner);
    const untold = this.node.partners.live().filter((link) => !told.has(link.peer.nodeId));
    if (untold.length === 0) return;
    const notice: OwnerNotice = { type: MessageType.OwnerNotice, requestId: 0, allocation: entry.allocation.guid, ownerNodeId: owner, epoch: this.node.leases.epoch };
    await this.tell(untold, told, () => notice);
  }

  private async tell(links: readonly OwnershipLink[], told: Set<number>, message: () => Message): Promise<void> {
    await Promise.all(
      links.map(async (link) => {
        const answer = await link.request(message()).catch(() => null);
        if (answer && isOk(answer)) told.add(link.peer.nodeId);
      }),
    );
  }

  private borrow(dead: number): void {
    if (this.borrowed.has(dead)) return;
    this.borrowed.add(dead);
    this.node.borrowAddresses(dead, () => this.borrowed.has(dead));
  }

  private forgetConfirmed(peer: number): void {
    for (const entry of this.node.served.values()) if (entry.ownerId === peer) this.confirmed.delete(entry.allocation.guid);
  }
}

function handover(entry: OwnedVolume, from: number, to: number, epoch: number): VolumeHandover {
  return { type: MessageType.VolumeHandover, requestId: 0, allocation: entry.allocation.guid, fromNodeId: from, toNodeId: to, epoch };
}
