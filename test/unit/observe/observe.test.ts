// Proves the metrics' per-request accounting and the event bus on their own: counts per export and
// command, an unknown command kept apart, a scrape reading one snapshot, and a failing subscriber
// that cannot reach the code that emitted an event.
import { expect } from 'chai';
import { ClusterEvents, NodeMetrics, type ClusterEvent, type NodeSnapshot } from '../../../src/observe/index.js';

const snapshot = (overrides: Partial<NodeSnapshot> = {}): NodeSnapshot => ({
  mode: 'mirrored',
  holdsArray: false,
  epoch: 3,
  leaseMs: 2000,
  leaseRemainingMs: 1500,
  partners: [{ name: 'b', live: true }],
  residentPages: 10,
  dirtyPages: 2,
  mirroredPages: 5,
  resync: 'done',
  nbd: null,
  cache: null,
  array: null,
  operation: null,
  ...overrides,
});

describe('NodeMetrics', () => {
  it('counts requests and bytes per export and command, errors apart, and observes each latency once', async () => {
    const metrics = new NodeMetrics('a', ['b'], new ClusterEvents('a'));
    metrics.requestDone('vol0', 1, 4096, 0.2, false);
    metrics.requestDone('vol0', 1, 512, 0.3, false);
    metrics.requestDone('vol1', 0, 8192, 3, true);
    metrics.requestDone('vol1', 99, 1, 0.1, true);
    const text = await metrics.text();
    expect(text).to.include('ftvm_nbd_requests_total{volume="vol0",command="write",node="a"} 2');
    expect(text).to.include('ftvm_nbd_request_bytes_total{volume="vol0",command="write",node="a"} 4608');
    expect(text).to.include('ftvm_nbd_request_errors_total{volume="vol1",command="read",node="a"} 1');
    expect(text).to.include('ftvm_nbd_requests_total{volume="vol1",command="unknown",node="a"} 1');
    expect(text).to.not.include('ftvm_nbd_request_errors_total{volume="vol0"');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_count{command="write",node="a"} 2');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="0.0025",command="read",node="a"} 0');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="0.005",command="read",node="a"} 1');
    // No node state yet (before the node serves): no per-peer or per-member series.
    expect(text).to.not.match(/^ftvm_partner_link_up/m);
    expect(text).to.not.match(/^ftvm_array_member_state/m);
  });

  it('puts a latency equal to a bound in that bound\'s bucket (le), past the last in +Inf; sum and count exact', async () => {
    const metrics = new NodeMetrics('a', [], new ClusterEvents('a'));
    metrics.requestDone('vol0', 3, 0, 1, false);
    metrics.requestDone('vol0', 3, 0, 60_000, false);
    const text = await metrics.text();
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="0.0005",command="flush",node="a"} 0\n');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="0.001",command="flush",node="a"} 1\n');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="10",command="flush",node="a"} 1\n');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_bucket{le="+Inf",command="flush",node="a"} 2\n');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_sum{command="flush",node="a"} 60.001\n');
    expect(text).to.include('ftvm_nbd_request_duration_seconds_count{command="flush",node="a"} 2\n');
    expect(text).to.not.include('command="write"');
  });

  it('reads the node once per scrape, and counts takeovers and link losses from the events', async () => {
    const events = new ClusterEvents('a');
    const metrics = new NodeMetrics('a', ['b'], events);
    let reads = 0;
    metrics.source = () => {
      reads++;
      return snapshot({ mode: 'write-through', partners: [{ name: 'b', live: false }], operation: { operation: 'rebuild', member: 1, doneBytes: 25, totalBytes: 100 } });
    };
    events.emit({ kind: 'link-down', peer: 'b', reason: 'connection closed' });
    events.emit({ kind: 'takeover', what: 'volume', volume: 'vol1', from: 'b', epoch: 4 });
    const text = await metrics.text();
    expect(reads).to.equal(1);
    expect(text).to.include('ftvm_node_mode{mode="write-through",node="a"} 1');
    expect(text).to.include('ftvm_node_mode{mode="mirrored",node="a"} 0');
    expect(text).to.include('ftvm_partner_link_up{peer="b",node="a"} 0');
    expect(text).to.include('ftvm_partner_link_down_total{peer="b",node="a"} 1');
    expect(text).to.include('ftvm_takeovers_total{what="volume",node="a"} 1');
    expect(text).to.include('ftvm_takeovers_total{what="array",node="a"} 0');
    expect(text).to.include('ftvm_lease_age_seconds{node="a"} 0.5');
    expect(text).to.include('ftvm_array_operation_progress_ratio{operation="rebuild",member="1",node="a"} 0.25');
    expect(text).to.not.match(/^ftvm_array_state/m);
  });
});

describe('ClusterEvents', () => {
  it('stamps time and node, reaches every subscriber even when one throws, and stops at unsubscribe', () => {
    const events = new ClusterEvents('b', () => Date.UTC(2026, 11, 6, 12));
    const seen: ClusterEvent[] = [];
    events.on(() => {
      throw new Error('broken subscriber');
    });
    const off = events.on((event) => seen.push(event));
    expect(() => events.emit({ kind: 'mode', mode: 'write-through' })).to.not.throw();
    off();
    events.emit({ kind: 'fenced', reason: 'lease lost' });
    expect(seen).to.deep.equal([{ time: '2026-12-06T12:00:00.000Z', node: 'b', kind: 'mode', mode: 'write-through' }]);
    expect(events.listenerCount).to.equal(1);
  });
});
