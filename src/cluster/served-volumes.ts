// The volumes a node exports, and what serves each of them now. Every node exports every volume,
// each behind a VolumeSwitch: the node that owns it serves it from its memory manager (own), the
// others forward each request to that owner (forward), and a handover releases it here (release,
// Fig. 9) before it is forwarded to the next owner.
import { MemoryVolume, type MemoryManager, type ResyncStage } from '../memory/index.js';
import type { Logger } from '../observe/index.js';
import type { PartnerLink } from '../partner/index.js';
import type { Allocation } from '../storage/index.js';
import { ForwardedVolume } from './forwarded-volume.js';
import type { OwnedVolume } from './responder.js';
import { localView, type VolumeSwitch } from './volume-switch.js';

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

export class ServedVolumes {
  /** By allocation GUID. */
  readonly entries = new Map<string, Served>();

  constructor(
    private readonly nodeId: number,
    private readonly manager: MemoryManager,
    private readonly stage: ResyncStage,
    /** What the responder serves to partners' forwarded I/O: the volumes owned here. */
    private readonly owned: Map<string, OwnedVolume>,
    private readonly linkTo: (nodeId: number) => PartnerLink | null,
    private readonly name: (nodeId: number) => string,
    private readonly logger: Logger,
  ) {}

  /** A volume that forwards to `ownerId`, as every export starts (then owned here, maybe). */
  forwarder(entry: Pick<Served, 'allocation'>, ownerId: number): ForwardedVolume {
    const { allocation } = entry;
    return new ForwardedVolume(allocation.name, allocation.guid, allocation.sizeBytes, this.name(ownerId), () => this.linkTo(ownerId));
  }

  /**
   * This node serves `entry` from its memory manager from now on; handed over at epoch
   * `handedOverAt`, with the pages its giver copied here then resident from the start.
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
    const installed = this.stage.take(allocation.guid, created && handedOverAt !== undefined ? handedOverAt : -1, (virtualPage, frame) => this.manager.installCleanFrame(allocation.guid, virtualPage, frame));
    if (installed > 0) this.logger.info(`volume ${allocation.name}: ${installed} page(s) copied by its previous owner are resident here`);
    entry.ownerId = this.nodeId;
    this.owned.set(allocation.guid, { volume: localView(entry.switch, entry.memory), readOnly: entry.readOnly });
    entry.switch.setTarget(entry.memory);
  }

  /**
   * `entry` is served by `ownerId` from now on; requests here are forwarded there, and partners'
   * forwarded I/O for it is no longer served from here (a takeover whose destage the disks refused
   * forwards a volume it owned a moment ago).
   */
  forward(entry: Served, ownerId: number): void {
    this.owned.delete(entry.allocation.guid);
    entry.ownerId = ownerId;
    entry.switch.setTarget(this.forwarder(entry, ownerId));
  }

  /** Fig. 9 for a volume served here: every page on the disks, frames freed, partners' structures dismantled. */
  async release(entry: Served): Promise<void> {
    this.owned.delete(entry.allocation.guid);
    await this.manager.releaseAllocation(entry.allocation.guid);
    entry.memory = null;
  }

  /** The allocations `ownerId` owns now. */
  ownedBy(ownerId: number): Allocation[] {
    return [...this.entries.values()].filter((entry) => entry.ownerId === ownerId).map((entry) => entry.allocation);
  }
}
