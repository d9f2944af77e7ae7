// Proves that real cluster nodes (ClusterNode with its memory manager, partner links, ownership
// loop, lease keeper and RAID, on simulated time, network and disks), two to five of them under
// seeded crashes, pauses, cut links and failing lease writes, never let two nodes serve a volume
// while both hold their leases, never lose an acknowledged write, and end with every volume back on
// its home node; and that the checks catch a takeover that skips lease expiry or loses mirrored pages.
import { expect } from 'chai';
import { runClusterSeeds, runClusterSimulation, type ClusterSimOptions } from './cluster-sim.js';

const SEEDS = Number(process.env.FTVM_CLUSTER_SIM_SEEDS ?? 40);
const LARGE_SEEDS = Number(process.env.FTVM_CLUSTER_SIM_LARGE_SEEDS ?? 8);

async function story(seed: number, options: ClusterSimOptions): Promise<string> {
  const replay = await runClusterSimulation(seed, { ...options, trace: true });
  return `last steps:\n  ${replay.trace.slice(-80).join('\n  ')}`;
}

async function firstFailure(options: ClusterSimOptions, pattern: RegExp, seeds: number): Promise<string | undefined> {
  for (let seed = 1; seed <= seeds; seed++) {
    const result = await runClusterSimulation(seed, options);
    if (result.failure && pattern.test(result.failure)) return result.failure;
  }
  return undefined;
}

describe('cluster simulation: real nodes under seeded failover, failback, partitions and lease expiry', function () {
  this.timeout(Math.max(300_000, SEEDS * 5000));

  for (const nodes of [2, 3]) {
    it(`keeps every acknowledged write and one serving node per volume over ${SEEDS} seeds of ${nodes} nodes`, async () => {
      const options = { nodes };
      const summary = await runClusterSeeds(1, SEEDS, options);
      if (summary.failed) expect.fail(`${summary.failed.failure}\n${await story(summary.failed.seed, options)}`);
      expect(summary.seedsRun).to.equal(SEEDS);
      // Not a quiet run: every path was taken, many times.
      for (const key of ['crashes', 'pauses', 'cuts', 'fenced', 'arrayTakeovers', 'volumeTakeovers', 'failbacks', 'warmPages', 'writesAcked', 'readsChecked'] as const) {
        expect(summary.totals[key], `${key}: ${JSON.stringify(summary.totals)}`).to.be.greaterThan(SEEDS / 10);
      }
    });
  }

  for (const nodes of [4, 5]) {
    it(`does the same over ${LARGE_SEEDS} seeds of ${nodes} nodes`, async () => {
      const options = { nodes };
      const summary = await runClusterSeeds(1, LARGE_SEEDS, options);
      if (summary.failed) expect.fail(`${summary.failed.failure}\n${await story(summary.failed.seed, options)}`);
      for (const key of ['crashes', 'volumeTakeovers', 'failbacks', 'writesAcked'] as const) {
        expect(summary.totals[key], `${key}: ${JSON.stringify(summary.totals)}`).to.be.greaterThan(0);
      }
    });
  }

  it('replays a seed exactly', async () => {
    const first = await runClusterSimulation(11, { nodes: 3, trace: true });
    const second = await runClusterSimulation(11, { nodes: 3, trace: true });
    expect(second.steps).to.equal(first.steps);
    expect(second.stats).to.deep.equal(first.stats);
    expect(second.trace).to.deep.equal(first.trace);
  });

  it('runs a seed the same with an event-loop turn per event as with a microtask checkpoint', async () => {
    // The array's uuid is drawn at random when the simulation provisions it; nothing depends on it.
    const trace = (lines: string[]): string[] => lines.map((line) => line.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<uuid>'));
    for (const [seed, nodes] of [[11, 3], [20_000, 2]] as const) {
      const checkpoint = await runClusterSimulation(seed, { nodes, trace: true });
      const turns = await runClusterSimulation(seed, { nodes, trace: true, turnPerEvent: true });
      expect(turns.steps).to.equal(checkpoint.steps);
      expect(turns.stats).to.deep.equal(checkpoint.stats);
      expect(trace(turns.trace)).to.deep.equal(trace(checkpoint.trace));
    }
  });

  it('fails, naming the seed, when nodes take over without waiting for leases to expire', async () => {
    const caught = await firstFailure({ nodes: 2, ignoreLeases: true }, /served from memory by .* each holding its lease|acknowledged before the read began|without holding its lease/, SEEDS);
    expect(caught, 'a takeover that ignores leases went unnoticed').to.match(/^seed \d+ at /);
  });

  it('fails, naming the seed, when a takeover drops the mirrored pages instead of destaging them', async () => {
    const caught = await firstFailure({ nodes: 2, dropMirrorsAtTakeover: true, storm: false }, /acknowledged before the read began \(lost\)/, SEEDS);
    expect(caught, 'lost mirrored pages went unnoticed').to.match(/^seed \d+ at /);
  });
});
