// The ownership loop: who holds the shared array and who serves each volume, decided in one loop
// per node. It runs every RECONCILE_INTERVAL_MS and at every link change, one pass at a time:
//
//   on the array holder       announce it holds the array to partners not told yet, then the
//                             placement of every volume (volume-placement.ts)
//   on every other node       holder succession (holder-succession.ts): take the array over when
//                             its holder is gone, give way when cut off from a holder that lives
//
// and answers the ownership messages other nodes send (each carries an epoch, adopted if newer).
// The loop sees its node only through `OwnershipHost` and its time only through a `Clock`.
import type { Clock } from '../core/index.js';
import { MessageType, Status, type Message, type OwnershipMessage } from '../partner/index.js';
import { HolderSuccession } from './holder-succession.js';
import { LinkWatch, reply, UNKNOWN_NODE, type OwnedVolume, type OwnershipHost } from './ownership.js';
import { VolumePlacement } from './volume-placement.js';

export type { OwnedVolume, OwnershipHost, OwnershipLink } from './ownership.js';

const RECONCILE_INTERVAL_MS = 100;

export class Authority<V extends OwnedVolume> {
  private cancelTimer: (() => void) | null = null;
  private running = false;
  private again = false;
  private stopped = false;
  private readonly links: LinkWatch;
  private readonly succession: HolderSuccession<V>;
  private readonly placement: VolumePlacement<V>;

  constructor(
    private readonly node: OwnershipHost<V>,
    private readonly clock: Clock,
  ) {
    this.links = new LinkWatch(clock);
    this.placement = new VolumePlacement(node, this.links, clock);
    this.succession = new HolderSuccession(node, this.links, clock, () => this.placement.forgetTold());
  }

  start(): void {
    // Links that came up while the node was still being built count as up since now.
    for (const link of this.node.partners.live()) this.links.upIfUnknown(link.peer.nodeId);
    const tick = (): void => {
      if (this.stopped) return;
      this.kick();
      this.cancelTimer = this.clock.setTimer(RECONCILE_INTERVAL_MS, tick);
    };
    tick();
  }

  stop(): void {
    this.stopped = true;
    this.placement.stop();
    this.cancelTimer?.();
  }

  partnerUp(peer: number, peerEpoch: number): void {
    const { node } = this;
    this.links.up(peer);
    this.placement.partnerUp(peer);
    this.succession.partnerUp(peer);
    if (peerEpoch > node.leases.epoch) {
      // A takeover this node has not heard of, or a claim under way, or a node that started since
      // and read it from the lease slots. Adopted, not fenced: a takeover of this node's volumes
      // needs its lease to have run out first, and its lease keeper has fenced it by then. Fencing
      // here fenced healthy survivors (ownership simulator, seed 30).
      node.logger.info(`node ${node.name(peer)} is at epoch ${peerEpoch}: this node moves up from ${node.leases.epoch}`);
      node.leases.adoptEpoch(peerEpoch);
      node.setEpoch(node.leases.epoch);
    }
    // Told at once, not when the loop gets to it: the loop may be waiting on a request that waits
    // on this very partner, which destages through whichever node it thinks holds the array
    // (ownership simulator, three nodes, seed 294: a reclaim there waited on a gone holder while
    // the holder's loop waited on the reclaim).
    if (node.holderId === node.nodeId) void this.succession.announceHolder(UNKNOWN_NODE);
    this.kick();
  }

  partnerDown(peer: number): void {
    this.links.down(peer);
    this.placement.partnerDown(peer);
    this.kick();
  }

  /** A message of the ownership loop from another node. */
  async onOwnershipMessage(message: OwnershipMessage): Promise<Message> {
    const { node } = this;
    node.leases.adoptEpoch(message.epoch);
    node.setEpoch(node.leases.epoch);
    switch (message.type) {
      case MessageType.HolderAnnouncement:
        return this.succession.onHolderAnnouncement(message);
      case MessageType.VolumeHandover:
        return this.placement.onVolumeHandover(message);
      case MessageType.OwnerNotice:
        return this.placement.onOwnerNotice(message);
      case MessageType.MirrorReclaim:
        return this.placement.onMirrorReclaim(message);
      default:
        return reply(message, Status.Invalid);
    }
  }

  /** At start, as the holder: every partner learns that this node holds the array. */
  announceHolder(previous: number): Promise<void> {
    return this.succession.announceHolder(previous);
  }

  /** At start, as the holder: partners put what they mirrored for this node's previous process on the disks. */
  reclaim(entries: readonly V[]): Promise<void> {
    return this.placement.reclaim(entries);
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
        // A pass still running when the node stops meets the stopped array: that is the stop, not a fault.
        if (this.stopped) this.node.logger.debug(`ownership: pass ended by the stop: ${(error as Error).message}`);
        else this.node.logger.error(`ownership: ${(error as Error).message}`);
      } finally {
        this.running = false;
      }
    })();
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return;
    if (this.node.holderId === this.node.nodeId) {
      // Again to any partner not told yet: the first one may have been lost with a link (ownership
      // simulator, three nodes, seed 463: a member kept paging in through the previous holder).
      await this.succession.announceHolder(UNKNOWN_NODE);
      await this.placement.asHolder();
    } else if (await this.succession.asMember()) this.again = true;
  }
}
