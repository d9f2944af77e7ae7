// What a node says about itself: the status `ftvm status` prints (control socket), the snapshot a
// metrics scrape reads, and the resync events `ftvm events` streams. Read-only over the node's
// parts: nothing here changes what the node does.
import type { Clock } from '../core/index.js';
import type { ClusterConfig } from '../config/index.js';
import type { MemoryManager, MirrorStore } from '../memory/index.js';
import type { NbdServer } from '../nbd/index.js';
import type { ClusterEvents, NodeSnapshot } from '../observe/index.js';
import type { StorageStack } from '../storage/index.js';
import type { ClusterStatus, RunningOperation } from './control.js';
import type { LeaseKeeper } from './lease.js';
import type { Partners } from './partners.js';
import type { ServedVolumes } from './served-volumes.js';

/** How often a running resync is looked at for its end (only while one runs). */
const RESYNC_POLL_MS = 100;

/** What the report reads of its node; functions where the node's answer changes over time. */
export interface ReportedNode {
  config: ClusterConfig;
  nodeId: number;
  clock: Clock;
  partners: Partners;
  leases: LeaseKeeper;
  mirror: MirrorStore;
  manager: MemoryManager;
  volumes: ServedVolumes;
  server: NbdServer | null;
  events: ClusterEvents;
  name(nodeId: number): string;
  holderId(): number;
  /** The storage stack while this node holds the array (and is not fenced). */
  heldStack(): StorageStack | null;
  operation(): RunningOperation | null;
  /** How far a warm handover's copy of a volume's resident pages is; null when none runs. */
  handoverProgress(guid: string): { sent: number; total: number } | null;
  /** The last round trip to a partner in ms (partner-round-trips.ts); undefined when not measured. */
  roundTripMs(peer: number, linked: boolean): number | undefined;
  /** Stopping or fenced: a watch on a resync ends. */
  ended(): boolean;
}

export class NodeReport {
  /** A resync's end is being looked for (watchResync). */
  private resyncWatched = false;

  constructor(private readonly node: ReportedNode) {}

  /** ' (warm: 120 of 300 resident pages copied)' while a warm handover copies the volume's pages. */
  private copied(guid: string): string {
    const progress = this.node.handoverProgress(guid);
    return progress ? ` (warm: ${progress.sent} of ${progress.total} resident pages copied)` : '';
  }

  status(): ClusterStatus {
    const { config, nodeId, partners, leases, mirror, manager, volumes } = this.node;
    const name = (id: number): string => this.node.name(id);
    const live = new Set(partners.live().map((link) => link.peer.nodeId));
    return {
      cluster: config.cluster,
      node: name(nodeId),
      arrayHolder: name(this.node.holderId()),
      mode: live.size > 0 ? 'mirrored' : 'write-through',
      epoch: leases.epoch,
      leaseRemainingMs: Math.max(0, Math.round(leases.remainingMs())),
      partners: config.nodes.flatMap((node, index) => {
        if (index === nodeId) return [];
        const linked = live.has(index);
        const roundTripMs = this.node.roundTripMs(index, linked);
        return [{ name: node.name, live: linked, ...(roundTripMs !== undefined ? { roundTripMs } : {}) }];
      }),
      volumes: [...volumes.entries.values()].map((entry) => ({
        name: entry.allocation.name,
        owner: name(entry.ownerId),
        home: name(entry.homeId),
        pageBytes: entry.pageBytes,
        state: entry.moving ? `${entry.moving}${this.copied(entry.allocation.guid)}` : entry.ownerId === nodeId ? 'served here' : 'forwarded',
      })),
      residentPages: manager.residentPages,
      dirtyPages: manager.dirtyPages,
      mirroredPages: mirror.mirroredPages,
      resync: manager.resyncState,
    };
  }

  /** What a metrics scrape reads: the status plus the NBD server's, the array's and the cache's counts. */
  metricsSnapshot(): NodeSnapshot {
    const status = this.status();
    const server = this.node.server;
    const stack = this.node.heldStack();
    const arrayStatus = stack?.array.status() ?? null;
    return {
      mode: status.mode,
      holdsArray: stack !== null,
      epoch: status.epoch,
      leaseMs: this.node.leases.leaseMs,
      leaseRemainingMs: this.node.leases.remainingMs(),
      partners: status.partners,
      residentPages: status.residentPages,
      dirtyPages: status.dirtyPages,
      mirroredPages: status.mirroredPages,
      resync: status.resync,
      nbd: server ? { connections: server.connectionCount, requestsInFlight: server.requestsInFlight, bytesInFlight: server.bytesInFlight } : null,
      cache: stack ? { hits: stack.cache.statistics.hits, misses: stack.cache.statistics.misses } : null,
      array: arrayStatus ? { state: arrayStatus.state, members: arrayStatus.members.map((member) => ({ index: member.index, state: member.state, readErrors: member.readErrors })) } : null,
      operation: this.node.operation(),
    };
  }

  /**
   * `ftvm events` hears a partner join's resync start and end. The memory manager keeps only its
   * state, so it is looked at while one runs (cold path: one timer, only then).
   */
  watchResync(): void {
    const { manager, events, clock } = this.node;
    if (this.resyncWatched || manager.resyncState !== 'running') return;
    this.resyncWatched = true;
    events.emit({ kind: 'resync', state: 'running' });
    const look = (): void => {
      const state = manager.resyncState;
      if (state === 'running' && !this.node.ended()) {
        clock.setTimer(RESYNC_POLL_MS, look);
        return;
      }
      this.resyncWatched = false;
      events.emit({ kind: 'resync', state });
    };
    clock.setTimer(RESYNC_POLL_MS, look);
  }
}
