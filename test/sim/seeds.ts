// Runs a range of seeds and sums what they did; stops at the first failing seed, which is the one
// to replay.
import { COVERAGE_KINDS, FAULT_KINDS, runSeed, type CoverageCounts, type FaultCounts, type SeedResult, type SimOptions } from './simulation.js';

export interface SeedRange {
  start: number;
  count: number;
}

export interface RunSummary {
  seedsRun: number;
  steps: number;
  requests: number;
  faults: FaultCounts;
  coverage: CoverageCounts;
  /** The first failing seed's result, or null when every seed passed. */
  failed: SeedResult | null;
  seconds: number;
}

export async function runSeeds(range: SeedRange, options: SimOptions = {}, onSeed: (summary: RunSummary) => void = () => undefined): Promise<RunSummary> {
  const started = performance.now();
  const summary: RunSummary = {
    seedsRun: 0,
    steps: 0,
    requests: 0,
    faults: Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as FaultCounts,
    coverage: Object.fromEntries(COVERAGE_KINDS.map((kind) => [kind, 0])) as CoverageCounts,
    failed: null,
    seconds: 0,
  };
  for (let seed = range.start; seed < range.start + range.count; seed++) {
    const result = await runSeed(seed, options);
    summary.seedsRun++;
    summary.steps += result.steps;
    summary.requests += result.requests;
    for (const kind of FAULT_KINDS) summary.faults[kind] += result.faults[kind];
    for (const kind of COVERAGE_KINDS) summary.coverage[kind] += result.coverage[kind];
    summary.seconds = (performance.now() - started) / 1000;
    if (result.failure !== null) summary.failed = result;
    onSeed(summary);
    if (summary.failed) break;
  }
  return summary;
}

export function describeSummary(summary: RunSummary): string {
  const faults = FAULT_KINDS.map((kind) => `${kind} ${summary.faults[kind]}`).join(', ');
  const coverage = COVERAGE_KINDS.map((kind) => `${kind} ${summary.coverage[kind]}`).join(', ');
  return [
    `${summary.seedsRun} seeds, ${summary.steps} steps, ${summary.requests} client requests in ${summary.seconds.toFixed(1)} s`,
    `faults: ${faults}`,
    `exercised: ${coverage}`,
  ].join('\n');
}

/** The failing seed, what broke, and the command that replays it. */
export function describeFailure(result: SeedResult): string {
  return `seed ${result.seed} failed (${result.shape})\n  ${result.failure}\nreplay: npm run sim -- --seed ${result.seed}`;
}
