// A node's Prometheus metrics (docs/operations.md, Metrics), served at http://HOST:PORT/metrics
// when the node's config has `metrics`. Almost everything is read at scrape time from state the
// node keeps anyway (one snapshot per scrape, read by the metrics' collect() callbacks), so an idle
// endpoint costs nothing. The exception is per-request NBD accounting: requestDone is called once
// per reply and only adds to preallocated number arrays (counters and latency buckets), which are
// handed to prom-client at scrape time. prom-client's own Histogram.observe hashes its labels into
// a new string on every call (about 350 ns); the arrays take a few ns and allocate nothing.
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric, type MetricObjectWithValues, type MetricType, type MetricValueWithName } from 'prom-client';
import type { ClusterEvents } from './events.js';

/** NBD command names by command number (NBD_CMD_*); anything else counts as `unknown`. */
export const NBD_COMMAND_NAMES = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status', 'unknown'] as const;
const UNKNOWN_COMMAND = NBD_COMMAND_NAMES.length - 1;

/** Latency buckets in seconds: from a page-cache hit (tens of µs) to a stalled failover (seconds). */
export const REQUEST_DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const NODE_MODES = ['mirrored', 'write-through'] as const;
export const ARRAY_STATES = ['optimal', 'degraded', 'rebuilding', 'failed'] as const;
export const MEMBER_STATES = ['active', 'failed', 'rebuilding', 'missing'] as const;
export const RESYNC_STATES = ['running', 'failed', 'done'] as const;

/** What the node is at the moment of a scrape; built by the node (ClusterNode.metricsSnapshot). */
export interface NodeSnapshot {
  mode: (typeof NODE_MODES)[number];
  holdsArray: boolean;
  epoch: number;
  leaseMs: number;
  /** Negative once run out. */
  leaseRemainingMs: number;
  partners: ReadonlyArray<{ name: string; live: boolean; roundTripMs?: number }>;
  residentPages: number;
  dirtyPages: number;
  mirroredPages: number;
  resync: (typeof RESYNC_STATES)[number];
  nbd: { connections: number; requestsInFlight: number; bytesInFlight: number } | null;
  /** Only on the node that holds the shared array open. */
  cache: { hits: number; misses: number } | null;
  array: { state: string; members: ReadonlyArray<{ index: number; state: string; readErrors: number }> } | null;
  /** The rebuild, replace or scrub running through the control socket, if any. */
  operation: { operation: string; member?: number; doneBytes: number; totalBytes: number } | null;
}

/** Per exported volume, by command number: what requestDone adds to. */
interface VolumeCounts {
  requests: Float64Array;
  bytes: Float64Array;
  errors: Float64Array;
}

export class NodeMetrics {
  readonly registry = new Registry();
  /** Set by the node once it serves; null before (a scrape then has only the NBD counters). */
  source: (() => NodeSnapshot) | null = null;
  private snapshot: NodeSnapshot | null = null;
  private readonly volumes = new Map<string, VolumeCounts>();
  private readonly durations = new LatencyHistogram('ftvm_nbd_request_duration_seconds', 'From an NBD request read off the socket to its reply handed to the socket, by command', REQUEST_DURATION_BUCKETS);
  private server: http.Server | null = null;

  constructor(
    readonly node: string,
    peers: readonly string[],
    events: ClusterEvents,
  ) {
    const registry = this.registry;
    registry.setDefaultLabels({ node });
    collectDefaultMetrics({ register: registry });
    // collect() runs with `this` bound to the metric: the node's side is reached through these.
    const snapshot = (): NodeSnapshot | null => this.snapshot;
    const volumes = this.volumes;
    const perVolume = (name: string, help: string, pick: (counts: VolumeCounts) => Float64Array): void => {
      new Counter({
        name,
        help,
        labelNames: ['volume', 'command'] as const,
        registers: [registry],
        collect() {
          this.reset();
          for (const [volume, counts] of volumes) {
            const values = pick(counts);
            values.forEach((value, command) => {
              if (value > 0) this.inc({ volume, command: NBD_COMMAND_NAMES[command] }, value);
            });
          }
        },
      });
    };
    perVolume('ftvm_nbd_requests_total', 'NBD requests answered, by export and command', (counts) => counts.requests);
    perVolume('ftvm_nbd_request_bytes_total', 'Bytes NBD requests covered (their length field), by export and command', (counts) => counts.bytes);
    perVolume('ftvm_nbd_request_errors_total', 'NBD requests answered with an error, by export and command', (counts) => counts.errors);
    // Not a prom-client class: registered as the plain metric object the registry asks for.
    registry.registerMetric(this.durations as unknown as Metric);
    const labelled = <L extends string>(name: string, help: string, labelNames: L[], fill: (snapshot: NodeSnapshot, set: (labels: Record<L, string | number>, value: number) => void) => void): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          const current = snapshot();
          if (current) fill(current, (labels, value) => this.set(labels, value));
        },
      });
    };
    // One series without labels; none at all while the node has nothing to say (null).
    const gauge = (name: string, help: string, read: (snapshot: NodeSnapshot) => number | null): void =>
      labelled(name, help, [], (current, set) => {
        const value = read(current);
        if (value !== null) set({}, value);
      });
    gauge('ftvm_nbd_connections', 'NBD client connections open', (s) => s.nbd?.connections ?? null);
    gauge('ftvm_nbd_requests_in_flight', 'NBD requests read and not yet answered on the wire', (s) => s.nbd?.requestsInFlight ?? null);
    gauge('ftvm_nbd_bytes_in_flight', 'Bytes of NBD requests read and not yet answered on the wire (the limits.nodeBytesInFlight budget)', (s) => s.nbd?.bytesInFlight ?? null);
    labelled('ftvm_partner_link_up', '1 while the partner link to peer is up, else 0', ['peer'], (s, set) => s.partners.forEach((partner) => set({ peer: partner.name }, partner.live ? 1 : 0)));
    labelled('ftvm_partner_round_trip_seconds', 'The last round trip of a small request to peer over its partner link, queued behind what the link carries (every 2 s); absent while the link is down', ['peer'], (s, set) => {
      for (const partner of s.partners) if (partner.live && partner.roundTripMs !== undefined) set({ peer: partner.name }, partner.roundTripMs / 1000);
    });
    labelled('ftvm_node_mode', '1 for the mode writes are acknowledged in now: mirrored (a live partner holds them) or write-through', ['mode'], (s, set) => NODE_MODES.forEach((mode) => set({ mode }, s.mode === mode ? 1 : 0)));
    gauge('ftvm_node_array_holder', '1 if this node holds the shared array open, else 0', (s) => (s.holdsArray ? 1 : 0));
    gauge('ftvm_node_epoch', 'The cluster epoch this node is at (raised at every takeover)', (s) => s.epoch);
    gauge('ftvm_lease_remaining_seconds', "How long this node's disk lease still protects it without another renewal (negative: run out)", (s) => s.leaseRemainingMs / 1000);
    gauge('ftvm_lease_age_seconds', "Time since the renewal that set this node's lease (leaseMs minus what remains)", (s) => Math.max(0, s.leaseMs - s.leaseRemainingMs) / 1000);
    gauge('ftvm_memory_resident_pages', "Pages of this node's volumes in its memory manager", (s) => s.residentPages);
    gauge('ftvm_memory_dirty_pages', 'Modified pages waiting for destage to the array (the destage backlog)', (s) => s.dirtyPages);
    gauge('ftvm_memory_mirrored_pages', "Partners' pages this node holds mirrored for them", (s) => s.mirroredPages);
    labelled('ftvm_memory_resync', '1 for the state of the resync after a partner joined: running, failed (retried at the next join) or done', ['state'], (s, set) => RESYNC_STATES.forEach((state) => set({ state }, s.resync === state ? 1 : 0)));
    const cacheCounter = (name: string, help: string, read: (cache: NonNullable<NodeSnapshot['cache']>) => number): void => {
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          const cache = snapshot()?.cache;
          if (cache) this.inc(read(cache));
        },
      });
    };
    cacheCounter('ftvm_storage_cache_hits_total', 'Blocks read from the storage cache (array holder only; since the array was opened here)', (cache) => cache.hits);
    cacheCounter('ftvm_storage_cache_misses_total', 'Blocks the storage cache had to read from the members (array holder only; since the array was opened here)', (cache) => cache.misses);
    labelled('ftvm_array_state', '1 for the state of the shared array: optimal, degraded, rebuilding or failed (array holder only)', ['state'], (s, set) => {
      if (s.array) for (const state of ARRAY_STATES) set({ state }, s.array.state === state ? 1 : 0);
    });
    labelled('ftvm_array_member_state', '1 for the state of each RAID member: active, failed, rebuilding or missing (array holder only)', ['member', 'state'], (s, set) => {
      for (const member of s.array?.members ?? []) for (const state of MEMBER_STATES) set({ member: member.index, state }, member.state === state ? 1 : 0);
    });
    labelled('ftvm_array_member_read_errors', 'Blocks of a member that failed their checksum since the array was opened (array holder only)', ['member'], (s, set) => {
      for (const member of s.array?.members ?? []) set({ member: member.index }, member.readErrors);
    });
    labelled('ftvm_array_operation_progress_ratio', 'Progress (0 to 1) of the rebuild, replace or scrub running through the control socket, or of the array resync after an unclean stop (array-resync); absent when none runs', ['operation', 'member'], (s, set) => {
      const running = s.operation;
      if (running) set({ operation: running.operation, member: running.member ?? '' }, running.totalBytes > 0 ? running.doneBytes / running.totalBytes : 0);
    });

    // Counted as the events happen (cold path), so a takeover is seen even if no scrape fell in it.
    const takeovers = new Counter({ name: 'ftvm_takeovers_total', help: 'Takeovers by this node from a dead node: of the shared array, or of a volume', labelNames: ['what'] as const, registers: [registry] });
    const handovers = new Counter({ name: 'ftvm_handovers_total', help: 'Volumes handed between live nodes that this node saw complete (failbacks, assignments)', registers: [registry] });
    const linkDowns = new Counter({ name: 'ftvm_partner_link_down_total', help: 'Times the partner link to peer went down', labelNames: ['peer'] as const, registers: [registry] });
    const memberFailures = new Counter({ name: 'ftvm_array_member_failures_total', help: 'RAID members taken out of service while this node held the array', registers: [registry] });
    // Zero from the start, so rate() and alerts see the series before the first event.
    takeovers.inc({ what: 'array' }, 0);
    takeovers.inc({ what: 'volume' }, 0);
    handovers.inc(0);
    memberFailures.inc(0);
    for (const peer of peers) linkDowns.inc({ peer }, 0);
    events.on((event) => {
      if (event.kind === 'takeover') takeovers.inc({ what: event.what });
      else if (event.kind === 'handover') handovers.inc();
      else if (event.kind === 'link-down') linkDowns.inc({ peer: event.peer });
      else if (event.kind === 'member-failed') memberFailures.inc();
    });
  }

  /**
   * Called by the NBD connection for each reply it hands to the socket (the hot path): adds to
   * plain arrays, no allocation beyond the histogram's observe().
   */
  requestDone(volume: string, command: number, bytes: number, durationMs: number, failed: boolean): void {
    let counts = this.volumes.get(volume);
    if (counts === undefined) {
      counts = { requests: new Float64Array(NBD_COMMAND_NAMES.length), bytes: new Float64Array(NBD_COMMAND_NAMES.length), errors: new Float64Array(NBD_COMMAND_NAMES.length) };
      this.volumes.set(volume, counts);
    }
    const index = command >= 0 && command < UNKNOWN_COMMAND ? command : UNKNOWN_COMMAND;
    counts.requests[index]++;
    counts.bytes[index] += bytes;
    if (failed) counts.errors[index]++;
    this.durations.observe(index, durationMs / 1000);
  }

  /** The exposition text, from one snapshot of the node. */
  async text(): Promise<string> {
    this.snapshot = this.source?.() ?? null;
    try {
      return await this.registry.metrics();
    } finally {
      this.snapshot = null;
    }
  }

  /** Serves GET /metrics; a held address is an error naming it (EADDRINUSE kept as the cause). */
  async listen(address: { host: string; port: number }): Promise<void> {
    const server = http.createServer((request, response) => {
      if (request.method !== 'GET' || (request.url ?? '').split('?')[0] !== '/metrics') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
        return;
      }
      this.text().then(
        (body) => response.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (error: Error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${error.message}\n`),
      );
    });
    try {
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen({ host: address.host, port: address.port, exclusive: true }, () => resolve()));
    } catch (error) {
      throw new Error(`metrics endpoint ${metricsUrl(address)}: ${(error as Error).message}`, { cause: error });
    }
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/**
 * A histogram by NBD command over plain arrays: observe() finds the bucket and adds, nothing else.
 * get() gives the registry what a prom-client Histogram would (cumulative `_bucket` with `le`,
 * `_sum`, `_count`), for the commands seen so far.
 */
class LatencyHistogram {
  /** What the registry prints after # TYPE (prom-client's typings say an enum; its code uses these strings). */
  readonly type = 'histogram' as unknown as MetricType;
  readonly aggregator = 'sum' as const;
  readonly labelNames = ['command'];
  /** Per command: observations per bucket (not cumulative); the last slot is +Inf. */
  private readonly buckets: Float64Array[];
  private readonly sums = new Float64Array(NBD_COMMAND_NAMES.length);
  private readonly counts = new Float64Array(NBD_COMMAND_NAMES.length);

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {
    this.buckets = NBD_COMMAND_NAMES.map(() => new Float64Array(bounds.length + 1));
  }

  observe(command: number, seconds: number): void {
    const bounds = this.bounds;
    let slot = 0;
    while (slot < bounds.length && seconds > (bounds[slot] as number)) slot++;
    (this.buckets[command] as Float64Array)[slot]++;
    this.sums[command] += seconds;
    this.counts[command]++;
  }

  get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: Array<MetricValueWithName<string>> = [];
    NBD_COMMAND_NAMES.forEach((command, index) => {
      if (this.counts[index] === 0) return;
      const buckets = this.buckets[index] as Float64Array;
      let cumulative = 0;
      buckets.forEach((observations, slot) => {
        cumulative += observations;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: slot < this.bounds.length ? (this.bounds[slot] as number) : '+Inf', command }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_sum`, labels: { command }, value: this.sums[index] as number });
      values.push({ metricName: `${this.name}_count`, labels: { command }, value: this.counts[index] as number });
    });
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, collect: () => undefined, values });
  }

  reset(): void {
    for (const buckets of this.buckets) buckets.fill(0);
    this.sums.fill(0);
    this.counts.fill(0);
  }
}

/** `http://127.0.0.1:11009/metrics`, with IPv6 hosts in brackets. */
export function metricsUrl(address: { host: string; port: number }): string {
  return `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}/metrics`;
}
