// What the ownership loop (authority.ts, holder-succession.ts, volume-placement.ts) sees of its node
// and of the cluster. ClusterNode provides it in production; nothing else in the loop touches a
// socket, a disk or a clock of its own.
import type { Clock } from '../core/index.js';
import type { ClusterEvents, Logger } from '../observe/index.js';
import { commandComplete, type Message, type OwnershipMessage, type Status } from '../partner/index.js';
import type { Lease } from '../storage/index.js';
import type { LeaseKeeper } from './lease.js';

/** A volume as the ownership loop sees it on one node. */
export interface OwnedVolume {
  readonly allocation: { readonly guid: string; readonly name: string };
  /** The node that serves it now, as this node knows it. */
  ownerId: number;
  /** The node the config names as its owner: where it goes back to. */
  readonly homeId: number;
  /** Non-null while this node serves it from its memory manager. */
  readonly memory: unknown;
  /** What is happening to it, for status ('', 'taking over', 'moving to b'). */
  moving: string;
  /** The export's gate: a failback pauses new requests and drains running ones. */
  readonly switch: { pause(): void; drain(): Promise<void>; resume(): void };
}

export interface OwnershipLink {
  readonly peer: { readonly nodeId: number };
  request(message: Message): Promise<Message>;
}

export type OwnershipLeases = Pick<LeaseKeeper, 'epoch' | 'leaseMs' | 'expired' | 'renewedWithin' | 'leaseOf' | 'claimEpoch' | 'adoptEpoch' | 'yieldLease'>;

/** What the loop may see and do on its node. */
export interface OwnershipHost<V extends OwnedVolume> {
  readonly nodeId: number;
  /** Nodes in the config: ids 0 … nodeCount − 1. */
  readonly nodeCount: number;
  /** The node that holds the shared array (and so decides ownership). */
  readonly holderId: number;
  readonly leases: OwnershipLeases;
  readonly partners: { link(peer: number): OwnershipLink | null; live(): readonly OwnershipLink[] };
  readonly served: ReadonlyMap<string, V>;
  readonly logger: Logger;
  /** Takeovers and handovers for `ftvm events` and the metrics; absent in the ownership simulator. */
  readonly events?: ClusterEvents;
  /** Whether a dead node's NBD addresses are served here while it is gone. */
  readonly takeoverAddresses: boolean;
  name(nodeId: number): string;
  fence(reason: string): void;
  /** The epoch this node announces on its partner links. */
  setEpoch(epoch: number): void;
  /** How long a claim of a new epoch pauses (claimPauseMs). */
  claimPauseMs(): number;
  /** Partners' mirrored pages of these volumes: to the disks on the holder, dropped elsewhere; the count, and when they are on the disks. */
  destageMirrors(volumes: readonly V[]): { pages: number; onDisks: Promise<void> };
  /** Drops this node's mirrors of the volume written by any node but `writer` (its owner now); the count. */
  dropMirrorsExcept(volume: V, writer: number): number;
  /**
   * Takeover on the holder: the volume's mirrored pages to the disks, synced, then served from this
   * node's memory manager with those pages resident (clean: the disks have them now). The count.
   */
  serveFromMirrors(entry: V): Promise<number>;
  /** Partners' mirrored pages of these volumes to the disks from any node (through the holder), synced; the count. */
  destageMirrorsToArray(volumes: readonly V[]): Promise<number>;
  /** Another node took the array over: this node pages in and destages through it from now on. */
  holderIs(nodeId: number): void;
  /** Whether the partner says it holds the array (or is opening it); false if it cannot be asked. */
  probeHolder(peer: number): Promise<boolean>;
  /**
   * From the decision to take the array over until the claim is lost (or for good once it is held):
   * probes are answered "holds it", so a node starting meanwhile does not open it beside this one.
   */
  openingArray(opening: boolean): void;
  /** Assembles the shared array here: this node becomes the holder. */
  holdArray(): Promise<void>;
  /**
   * Serves the volume from this node's memory manager. `handedOverAt`: the epoch of the handover
   * that gave it here; the pages its giver copied here for it at that epoch (copyResident) start
   * resident, if nothing has made them stale since.
   */
  own(entry: V, handedOverAt?: number): void;
  /**
   * A warm handover: the clean resident pages of a volume served here to the node `to` that serves
   * it next: 'live' while it is still served, then 'paused' once paused and drained. Best effort;
   * the count of pages staged there.
   */
  copyResident(entry: V, to: number, phase: 'live' | 'paused'): Promise<number>;
  /** Requests for the volume go to `ownerId` from now on. */
  forward(entry: V, ownerId: number): void;
  /** Fig. 9 for a volume served here: every page on the disks, frames freed, partners' structures dismantled. */
  releaseVolume(entry: V): Promise<void>;
  /** The owners decided here, into the cluster record (holder only). */
  writeOwners(): Promise<void>;
  /** Serves the dead node's NBD addresses here while `wanted` says so. */
  borrowAddresses(dead: number, wanted: () => boolean): void;
  /** Closes the listeners of a borrowed node's addresses; resolves once its clients have left. */
  returnAddresses(dead: number): Promise<void>;
}

/** A node id that names no node: the previous owner or holder is not known. */
export const UNKNOWN_NODE = 0xffff_ffff;

/** When each partner's link came up, and which ones were seen to die (no start-up grace for those). */
export class LinkWatch {
  private readonly upSince = new Map<number, number>();
  private readonly deathSeen = new Set<number>();

  constructor(private readonly clock: Clock) {}

  up(peer: number): void {
    this.upSince.set(peer, this.clock.now());
    this.deathSeen.delete(peer);
  }

  /** Links that came up before the loop started count as up since now. */
  upIfUnknown(peer: number): void {
    if (!this.upSince.has(peer)) this.upSince.set(peer, this.clock.now());
  }

  down(peer: number): void {
    if (this.upSince.delete(peer)) this.deathSeen.add(peer);
  }

  /** Its link was up and then closed: its death was seen here. */
  sawDie(peer: number): boolean {
    return this.deathSeen.has(peer);
  }

  /** Up for at least `ms`. */
  upFor(peer: number, ms: number): boolean {
    const since = this.upSince.get(peer);
    return since !== undefined && this.clock.now() - since >= ms;
  }
}

export function reply(message: OwnershipMessage, status: Status): Message {
  return commandComplete(message, status);
}

export function sameProcess(a: Lease, b: Lease): boolean {
  return a.pid === b.pid && a.processStart === b.processStart && a.host === b.host;
}
