// Whether a write may be acknowledged now: who must hold a copy of it first.
//
//   a node that is not the array holder    the holder: it is the one that takes over this node's
//                                          volumes, from its own mirrors (ownership simulator,
//                                          three nodes: a write mirrored only to a third node was lost)
//   the array holder, and every write-through
//                                          every other node, or its lease has run out: a node cut off
//                                          from this one holds mirrors as they were at the cut and
//                                          may take the array over (two nodes, seed 1: it put older
//                                          pages on the disks over newer ones written through)
//   a write-through, also                  every joined partner's resync is done (`resynced`)
//
// A node cut off from the holder gives way (the ownership loop), so these waits end once its lease
// runs out. Asked by the memory manager before a mirrored write goes out and before a write-through
// is acknowledged.
import { sleep, type Clock } from '../core/index.js';

/** How often a closed gate is looked at again. */
const GATE_POLL_MS = 25;

export interface GateView {
  /** Node ids of the cluster (config order). */
  readonly nodeCount: number;
  readonly nodeId: number;
  holderId(): number;
  linked(nodeId: number): boolean;
  leaseExpired(nodeId: number): boolean;
  /** Every joined partner's resync is done. */
  resynced(): boolean;
}

export class AcknowledgeGate {
  constructor(
    private readonly view: GateView,
    private readonly clock: Clock,
  ) {}

  /** Null at once when open (the common case allocates nothing), else when it opens. */
  check(writeThrough: boolean): Promise<void> | null {
    if (this.open(writeThrough)) return null;
    return this.wait(writeThrough);
  }

  private open(writeThrough: boolean): boolean {
    if (writeThrough) return this.view.resynced() && this.everyOther();
    const holder = this.view.holderId();
    return holder === this.view.nodeId ? this.everyOther() : this.view.linked(holder);
  }

  private everyOther(): boolean {
    for (let index = 0; index < this.view.nodeCount; index++) {
      if (index !== this.view.nodeId && !this.view.linked(index) && !this.view.leaseExpired(index)) return false;
    }
    return true;
  }

  private async wait(writeThrough: boolean): Promise<void> {
    while (!this.open(writeThrough)) await sleep(this.clock, GATE_POLL_MS);
  }
}
