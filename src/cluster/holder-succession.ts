// Holder succession: who holds the shared array after the holder is gone, and what a member does
// meanwhile. Runs on every node that does not hold the array (and, for the announcements, on the
// holder):
//
//   holder's link gone, its lease expired (or its process proven dead), this node the lowest live one
//      → claim a new epoch, assemble the array here, destage the holder's mirrored pages, tell every
//        partner (holder announcement)
//   holder's link gone but the same process renews its lease, at least YIELD_RENEWALS renewals since
//   (a partition)
//      → stop renewing this node's lease: it runs out, this node is fenced, the holder takes over its
//        volumes; at most one side ever acknowledges for a volume
//   holder's node linked again, but a probe says its new process does not hold the array
//      → the lowest live node opens it, as at a start
//
// Either way only once every other node is linked here or its lease has run out: a node this one
// cannot reach may be taking the array over itself (cluster simulation, seed 392 of five nodes: two
// members cut off from each other both took it over when the holder died). Of two such nodes the
// one with the higher id gives way after BLOCKED_YIELD_LEASES leases, so the other can go on.

import type { Clock } from '../core/index.js';
import { MessageType, Status, type HolderAnnouncement, type Message } from '../partner/index.js';
import type { Lease } from '../storage/index.js';
import { isOk } from './remote-array.js';
import { reply, sameProcess, type LinkWatch, type OwnedVolume, type OwnershipHost } from './ownership.js';

/**
 * Renewals of the holder's slot seen since its link went before this node gives way to it: two may
 * have been in flight when it died (lease.ts overlaps two), and one more may have landed unseen.
 */
const YIELD_RENEWALS = 4;

/** Leases a node waits for an unreachable node that comes first before it gives way to it. */
const BLOCKED_YIELD_LEASES = 2;

export class HolderSuccession<V extends OwnedVolume> {
  private holderLostAt: number | null = null;
  /** The holder's process as its lease slot named it while linked (a restart changes it). */
  private holderProcess: Lease | null = null;
  private holderSequenceAtLoss = 0;
  /** False from a new link to the holder's node until a probe shows it holds the array. */
  private holderConfirmed = true;
  private yielded = false;
  /** Since when a takeover this node should make waits for a node it cannot reach. */
  private blockedSince: number | null = null;
  /** Partners told that this node holds the array (since their link came up). */
  private readonly holderTold = new Set<number>();

  constructor(
    private readonly node: OwnershipHost<V>,
    private readonly links: LinkWatch,
    private readonly clock: Clock,
    /** Called after this node took the array over: what was told about volumes must be told again. */
    private readonly tookArray: () => void,
  ) {}

  partnerUp(peer: number): void {
    this.holderTold.delete(peer);
    // A new link to the holder's node may be to a new process of it, which holds nothing yet.
    if (peer === this.node.holderId && peer !== this.node.nodeId) this.holderConfirmed = false;
  }

  /** One pass on a node that does not hold the array; true when the loop should run again at once. */
  async asMember(): Promise<boolean> {
    const { node } = this;
    const holder = node.holderId;
    if (node.partners.link(holder)) {
      this.holderLostAt = null;
      if (!this.holderConfirmed) {
        if (await node.probeHolder(holder)) this.holderConfirmed = true;
        else {
          // Its process restarted and has not opened the array (ownership simulator, seed 13): the
          // lowest live node opens it, as at a start. Its slot is renewed by the new process, so
          // the claim does not require it to be gone.
          if (!this.lowestLive() || this.waitsForUnreachable(holder)) return false;
          await this.takeArray(holder, 'its process restarted and does not hold it', []);
          return true;
        }
      }
      this.holderProcess = node.leases.leaseOf(holder);
      return false;
    }
    const now = this.clock.now();
    if (this.holderLostAt === null) {
      this.holderLostAt = now;
      this.holderSequenceAtLoss = node.leases.leaseOf(holder)?.sequence ?? 0;
    }
    if (node.leases.expired(holder)) {
      if (!this.lowestLive() || this.waitsForUnreachable(holder)) return false;
      const why = node.leases.leaseOf(holder)?.holder === '' ? 'it released its lease' : this.links.sawDie(holder) ? 'its link closed and its lease is void' : 'its lease expired';
      await this.takeArray(holder, why, [holder]);
      return true;
    }
    // Giving way costs this node its memory, so only for a holder proven to run on: the same process
    // (a restarted one holds nothing yet) renewing since the link went. A dead one's renewals still
    // in flight, or not yet seen here, count for up to YIELD_RENEWALS − 1 (ownership simulator, seed 13).
    const renewing = node.leases.leaseOf(holder);
    const same = !!renewing && !!this.holderProcess && sameProcess(renewing, this.holderProcess);
    const renewals = (renewing?.sequence ?? 0) - this.holderSequenceAtLoss;
    if (!this.yielded && same && renewals >= YIELD_RENEWALS && now - this.holderLostAt >= node.leases.leaseMs && node.leases.renewedWithin(holder, node.leases.leaseMs)) {
      this.yielded = true;
      node.logger.warn(`cut off from node ${node.name(holder)}, which holds the shared array and still renews its lease: giving way (this node's lease runs out, its volumes move there)`);
      node.leases.yieldLease(`cut off from the array holder ${node.name(holder)}`);
    }
    return false;
  }

  /**
   * Tells every live partner not told yet that this node holds the array now, so that members page
   * in and destage here: they may still name a node that is gone or restarted (ownership simulator,
   * three nodes, seed 414). Repeated by the holder's loop for partners a first message missed.
   */
  async announceHolder(previous: number): Promise<void> {
    const { node } = this;
    const message: HolderAnnouncement = { type: MessageType.HolderAnnouncement, requestId: 0, previousNodeId: previous, holderNodeId: node.nodeId, epoch: node.leases.epoch };
    const untold = node.partners.live().filter((link) => !this.holderTold.has(link.peer.nodeId));
    await Promise.all(
      untold.map(async (link) => {
        const answer = await link.request(message).catch(() => null);
        if (answer && isOk(answer)) this.holderTold.add(link.peer.nodeId);
        else if (answer && 'status' in answer && answer.status === Status.StaleEpoch) node.fence(`node ${node.name(link.peer.nodeId)} holds the shared array as well`);
      }),
    );
  }

  /** `holderNodeId` holds the array now: page-in and destage go there (a member that did not take it over). */
  onHolderAnnouncement(message: HolderAnnouncement): Message {
    const { node } = this;
    if (node.holderId === node.nodeId && message.holderNodeId !== node.nodeId) {
      // Two holders: a race the start and succession rules are meant to exclude. The higher node id
      // stops (both sides agree without another message): fenced, its volumes taken over from mirrors.
      if (message.holderNodeId < node.nodeId) {
        node.fence(`node ${node.name(message.holderNodeId)} holds the shared array as well`);
        return reply(message, Status.ShuttingDown);
      }
      node.logger.error(`node ${node.name(message.holderNodeId)} says it holds the shared array, which this node holds: it must stop`);
      return reply(message, Status.StaleEpoch);
    }
    node.holderIs(message.holderNodeId);
    this.holderConfirmed = true;
    this.holderLostAt = null;
    return reply(message, Status.Ok);
  }

  /**
   * Whether a node other than the holder cannot be reached from here and still renews its lease: it
   * may take the array over too, so this node waits; if that node comes first, it gives way once
   * blocked for BLOCKED_YIELD_LEASES leases.
   */
  private waitsForUnreachable(holder: number): boolean {
    const { node } = this;
    const blocking: number[] = [];
    for (let peer = 0; peer < node.nodeCount; peer++) {
      if (peer !== node.nodeId && peer !== holder && !node.partners.link(peer) && !node.leases.expired(peer)) blocking.push(peer);
    }
    if (blocking.length === 0) {
      this.blockedSince = null;
      return false;
    }
    const now = this.clock.now();
    if (this.blockedSince === null) {
      this.blockedSince = now;
      node.logger.warn(`the array holder ${node.name(holder)} is gone, but node ${blocking.map((peer) => node.name(peer)).join(', ')} cannot be reached and still renews its lease: waiting before taking the array over`);
    }
    const first = blocking.find((peer) => peer < node.nodeId);
    if (first !== undefined && !this.yielded && now - this.blockedSince >= BLOCKED_YIELD_LEASES * node.leases.leaseMs) {
      this.yielded = true;
      node.logger.warn(`cut off from node ${node.name(first)}, which comes first to take the shared array over: giving way (this node's lease runs out)`);
      node.leases.yieldLease(`cut off from node ${node.name(first)} while the array had no holder`);
    }
    return true;
  }

  private lowestLive(): boolean {
    const live = this.node.partners.live().map((link) => link.peer.nodeId);
    return Math.min(this.node.nodeId, ...live) === this.node.nodeId;
  }

  private async takeArray(dead: number, why: string, mustBeGone: readonly number[]): Promise<void> {
    const { node } = this;
    node.logger.warn(`node ${node.name(dead)}, the array holder, is gone (${why}): taking over the shared array`);
    // Said at once, before the claim: a node that started meanwhile probed this one while it was
    // still claiming and assembling, heard "not the holder" and opened the array beside it
    // (cluster simulation, seed 79 of two nodes).
    node.openingArray(true);
    let epoch: number;
    try {
      epoch = await node.leases.claimEpoch(node.claimPauseMs(), mustBeGone);
    } catch (error) {
      node.openingArray(false);
      throw error;
    }
    node.setEpoch(epoch);
    await node.holdArray();
    // Enqueued, not waited for: the storage stack answers reads of them until the disks have them,
    // and the takeover of the dead node's volumes (serveFromMirrors) waits for the flush before it
    // announces anything, so no partner drops its own copy of them before they are on the disks.
    // Waiting here kept clients waiting as long as destaging a deep dirty set took (seconds).
    const { pages, onDisks } = node.destageMirrors([...node.served.values()].filter((entry) => entry.ownerId === dead));
    if (pages > 0) {
      void onDisks.then(
        () => node.logger.info(`the ${pages} page(s) node ${node.name(dead)} had mirrored here are on the disks`),
        (error: Error) => node.logger.error(`destage of the page(s) node ${node.name(dead)} had mirrored here failed (retried by the next flush): ${error.message}`),
      );
    }
    await this.announceHolder(dead);
    this.tookArray();
    node.logger.warn(`this node holds the shared array now (epoch ${epoch}); ${pages} page(s) node ${node.name(dead)} had mirrored here are on their way to the disks`);
    node.events?.emit({ kind: 'takeover', what: 'array', from: node.name(dead), epoch });
  }
}

