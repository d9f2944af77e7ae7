// The transitions an operator wants to be told about as they happen (`ftvm events`), emitted by the
// code that logs them, beside the log line: a subscriber gets typed objects, never parsed log text,
// and the log wording stays free to change. Cold path: a few events per failover.

/** What happened; every event also carries `time` (ISO 8601) and `node` (the node that saw it). */
export type ClusterEventBody =
  /** A partner link came up (handshake done: the partner proved it holds the key). */
  | { kind: 'link-up'; peer: string }
  /** A partner link closed: the partner's process is gone, cut off, or silent for partnerTimeoutMs. */
  | { kind: 'link-down'; peer: string; reason: string }
  /** How writes are acknowledged now: mirrored (a live partner holds them) or write-through (on the disks). */
  | { kind: 'mode'; mode: 'mirrored' | 'write-through' }
  /** This node took over from a dead node: the shared array (`what: array`) or one of its volumes. */
  | { kind: 'takeover'; what: 'array' | 'volume'; volume?: string; from: string; epoch: number }
  /** A volume moved between live nodes (failback, or the holder's assignment). */
  | { kind: 'handover'; volume: string; from: string; to: string }
  /** This node lost its lease or saw a newer epoch: it stops serving and must rejoin. */
  | { kind: 'fenced'; reason: string }
  /** The resync after a partner joined (dirty pages flushed, partners' stale mirrors dropped) began or ended. */
  | { kind: 'resync'; state: 'running' | 'done' | 'failed' }
  /** A RAID member was taken out of service (I/O errors, checksums, or an administrator). */
  | { kind: 'member-failed'; member: number; path: string; reason: string }
  /** A volume was made, grown or deleted online (`ftvm volume`), on the array holder. */
  | { kind: 'volume'; action: 'created' | 'resized' | 'deleted'; volume: string; sizeBytes: number }
  /**
   * A rebuild, replace or scrub run through the control socket, or the resync of an array that was
   * not stopped cleanly (`array-resync`, as a node opens it), moved on (at most every 200 ms, and at its end).
   */
  | { kind: 'progress'; operation: 'rebuild' | 'replace' | 'scrub' | 'array-resync'; member?: number; doneBytes: number; totalBytes: number };

export type ClusterEventKind = ClusterEventBody['kind'];
export type ClusterEvent = { time: string; node: string } & ClusterEventBody;
export type ClusterEventListener = (event: ClusterEvent) => void;

export const CLUSTER_EVENT_KINDS: readonly ClusterEventKind[] = ['link-up', 'link-down', 'mode', 'takeover', 'handover', 'fenced', 'resync', 'member-failed', 'volume', 'progress'];

export class ClusterEvents {
  private readonly listeners = new Set<ClusterEventListener>();

  constructor(
    readonly node: string,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** Calls `listener` with every event from now on; returns what unsubscribes it. */
  on(listener: ClusterEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  emit(body: ClusterEventBody): void {
    if (this.listeners.size === 0) return;
    const event = { time: new Date(this.now()).toISOString(), node: this.node, ...body } as ClusterEvent;
    // A subscriber's failure (a control socket that broke mid-write) must not reach the failover
    // code that emitted the event.
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // Dropped: the listener's own business.
      }
    }
  }
}
