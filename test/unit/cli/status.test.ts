// Proves `ftvm status` says how far a rebuild got, how fast it goes and when it ends, and the
// array's state with the members that are not active.
import { expect } from 'chai';
import type { ClusterStatus } from '../../../src/cluster/index.js';
import { describeOperation, formatStatus } from '../../../src/cli/status.js';
import type { ArrayStatus } from '../../../src/storage/index.js';

const MiB = 1024 * 1024;

const cluster: ClusterStatus = {
  cluster: 'c',
  node: 'a',
  arrayHolder: 'a',
  mode: 'mirrored',
  epoch: 2,
  leaseRemainingMs: 1500,
  partners: [{ name: 'b', live: true }],
  volumes: [{ name: 'vol0', owner: 'a', home: 'a', pageBytes: 4096, state: 'served here' }],
  residentPages: 1,
  dirtyPages: 0,
  mirroredPages: 0,
  resync: 'done',
};

describe('ftvm status: progress, rate and ETA', () => {
  it('a rebuild a quarter done in 10 s: 25.0%, its rate, and 30 s to go', () => {
    expect(describeOperation({ operation: 'rebuild', member: 1, doneBytes: 128 * MiB, totalBytes: 512 * MiB, elapsedMs: 10_000 })).to.equal('rebuild of member 1: 25.0% of 512.0 MiB, 12.8 MiB/s, ETA 30 s');
  });

  it('minutes and hours; a scrub names no member; nothing done yet has no ETA', () => {
    expect(describeOperation({ operation: 'scrub', doneBytes: MiB, totalBytes: 1001 * MiB, elapsedMs: 1000 })).to.equal('scrub: 0.1% of 1001.0 MiB, 1.0 MiB/s, ETA 16 min 40 s');
    expect(describeOperation({ operation: 'replace', member: 0, doneBytes: MiB, totalBytes: 3601 * MiB, elapsedMs: 1000 })).to.match(/ETA 1 h 0 min$/);
    expect(describeOperation({ operation: 'rebuild', member: 2, doneBytes: 0, totalBytes: MiB, elapsedMs: 0 })).to.equal('rebuild of member 2: 0.0% of 1.0 MiB, 0.0 MiB/s, ETA unknown');
    expect(describeOperation({ operation: 'rebuild', member: 2, doneBytes: 0, totalBytes: 0, elapsedMs: 5 })).to.equal('rebuild of member 2: starting');
  });

  it('shows the array and the running operation only when the node has them', () => {
    const array = { state: 'rebuilding', level: 'raid5', members: [{ index: 0, state: 'active' }, { index: 1, state: 'rebuilding' }, { index: 2, state: 'active' }] } as unknown as ArrayStatus;
    const text = formatStatus(cluster, { array, operation: { operation: 'rebuild', member: 1, doneBytes: MiB, totalBytes: 2 * MiB, elapsedMs: 1000 } });
    expect(text).to.include('  array:         rebuilding (raid5, member 1 rebuilding)\n');
    expect(text).to.include('  running:       rebuild of member 1: 50.0% of 2.0 MiB, 1.0 MiB/s, ETA 1 s\n');
    const plain = formatStatus(cluster);
    expect(plain).to.not.include('array:');
    expect(plain).to.not.include('running:');
  });
});
