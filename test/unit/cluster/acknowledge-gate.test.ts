// Proves who must hold a copy before a write is acknowledged: a member needs the holder linked, the
// holder every other node linked or its lease run out, a write-through also every partner resynced;
// a closed gate opens once that is true, on the clock it was given.
import { expect } from 'chai';
import { AcknowledgeGate, type GateView } from '../../../src/cluster/acknowledge-gate.js';
import { ManualClock } from '../../support/manual-clock.js';

function view(over: Partial<GateView> & { links?: number[]; expired?: number[] }): GateView {
  const links = new Set(over.links ?? []);
  const expired = new Set(over.expired ?? []);
  return {
    nodeCount: 3,
    nodeId: over.nodeId ?? 0,
    holderId: over.holderId ?? (() => 0),
    linked: (peer) => links.has(peer),
    leaseExpired: (peer) => expired.has(peer),
    resynced: over.resynced ?? (() => true),
  };
}

describe('AcknowledgeGate', () => {
  it('lets the holder acknowledge once every other node is linked or its lease has run out', () => {
    const clock = new ManualClock();
    expect(new AcknowledgeGate(view({ links: [1, 2] }), clock).check(false)).to.equal(null);
    expect(new AcknowledgeGate(view({ links: [1], expired: [2] }), clock).check(false)).to.equal(null);
    expect(new AcknowledgeGate(view({ links: [1] }), clock).check(false), 'node 2 cut off, lease live').to.be.instanceOf(Promise);
  });

  it('lets a member acknowledge a mirrored write once the holder is linked, whatever the others', () => {
    const clock = new ManualClock();
    expect(new AcknowledgeGate(view({ nodeId: 1, holderId: () => 0, links: [0] }), clock).check(false)).to.equal(null);
    expect(new AcknowledgeGate(view({ nodeId: 1, holderId: () => 0, links: [2] }), clock).check(false)).to.be.instanceOf(Promise);
  });

  it('holds a write-through until every joined partner is resynced, and opens on the clock once it is', async () => {
    const clock = new ManualClock();
    let resynced = false;
    const gate = new AcknowledgeGate(view({ nodeId: 1, links: [0, 2], resynced: () => resynced }), clock);
    const waiting = gate.check(true);
    expect(waiting).to.be.instanceOf(Promise);
    let opened = false;
    void waiting?.then(() => (opened = true));
    clock.advance(100);
    await Promise.resolve();
    expect(opened).to.equal(false);
    resynced = true;
    clock.advance(25);
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).to.equal(true);
  });
});
