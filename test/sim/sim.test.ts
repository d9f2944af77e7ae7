// Proves that the memory manager, link replicator, partner links and mirror stores keep every
// acknowledged write through delays, cuts, crashes and torn disk writes, over FTVM_SIM_SEEDS seeds
// of the simulator (300 unless set); that a seed replays exactly; and that the checks do fail, naming
// the seed, when the replicator or the disk lies.
import { expect } from 'chai';
import type { Replicator } from '../../src/memory/index.js';
import { describeFailure, describeSummary, runSeeds } from './seeds.js';
import { FAULT_KINDS, runSeed } from './simulation.js';

const SEEDS = Number(process.env.FTVM_SIM_SEEDS ?? 300);
const START = Number(process.env.FTVM_SIM_START ?? 1);

/** Says every partner holds the write without sending it anywhere. */
function lyingReplicator(real: Replicator): Replicator {
  return {
    livePartners: () => real.livePartners(),
    writePage: async () => true,
    pageClean: (allocation, virtualPage, version, pageCount) => real.pageClean(allocation, virtualPage, version, pageCount),
  };
}

describe('simulation (seeded: memory manager, links, mirrors, faults)', function () {
  this.timeout(Math.max(120_000, SEEDS * 1_000));

  it(`keeps every acknowledged write over ${SEEDS} seeds from ${START}`, async () => {
    const summary = await runSeeds({ start: START, count: SEEDS });
    if (summary.failed) expect.fail(describeFailure(summary.failed));
    expect(summary.seedsRun).to.equal(SEEDS);
    if (SEEDS >= 100) {
      // Not a quiet run: the faults and the paths they lead to did happen.
      for (const kind of FAULT_KINDS) expect(summary.faults[kind], `${kind} faults\n${describeSummary(summary)}`).to.be.greaterThan(0);
      for (const kind of ['page-in', 'mirror-refusal', 'takeover-page', 'quiet-check'] as const) expect(summary.coverage[kind], `${kind}\n${describeSummary(summary)}`).to.be.greaterThan(0);
    }
  });

  it('replays a seed exactly', async () => {
    const first = await runSeed(START + 6, { trace: true });
    const second = await runSeed(START + 6, { trace: true });
    expect(second.steps).to.equal(first.steps);
    expect(second.faults).to.deep.equal(first.faults);
    expect(second.coverage).to.deep.equal(first.coverage);
    expect(second.trace).to.deep.equal(first.trace);
  });

  it('fails, naming the seed, when the replicator acknowledges writes it never sent', async () => {
    const summary = await runSeeds({ start: 1, count: 50 }, { replicator: lyingReplicator });
    expect(summary.failed, 'a lying replicator went unnoticed').to.not.equal(null);
    const failed = summary.failed as NonNullable<typeof summary.failed>;
    expect(failed.failure).to.match(/lose an acknowledged write|survivors lost an acknowledged write/);
    expect(describeFailure(failed)).to.contain(`npm run sim -- --seed ${failed.seed}`);
  });

  it('fails when the disks acknowledge a flush before the blocks are durable', async () => {
    const summary = await runSeeds({ start: 1, count: 50 }, { lyingDisk: true });
    expect(summary.failed, 'a lying disk went unnoticed').to.not.equal(null);
    expect(summary.failed?.failure).to.match(/acknowledged write/);
  });
});
