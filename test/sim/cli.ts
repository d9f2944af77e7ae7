// The simulator's command line:
//   npm run sim -- --seeds N [--start S]    runs seeds S … S+N-1, stops at the first failure
//   npm run sim -- --seed S                 replays one seed and prints its last steps
//   npm run sim -- --lease-seeds N [--start S]  the lease simulation (lease-sim.ts) instead
//   npm run sim -- --cluster-seeds N [--start S] [--nodes 2-5] [--workers W]
//                                           real nodes under failover and failback (cluster-sim.ts),
//                                           W worker threads sharing the seeds (default: one per core)
//   npm run sim -- --cluster-seed S [--nodes 2-5]  replays one, printing its last steps
// Exit code 1 when a seed fails; the output ends with the command that replays it.
import { describeFailure, describeSummary, runSeeds, type RunSummary } from './seeds.js';
import { runSeed, type SimOptions } from './simulation.js';
import { runLeaseSeeds } from './lease-sim.js';
import { runClusterSimulation } from './cluster-sim.js';
import { runClusterSeedsInWorkers } from './cluster-workers.js';

interface Arguments {
  seeds: number;
  start: number;
  seed: number | null;
  leaseSeeds: number | null;
  clusterSeeds: number | null;
  clusterSeed: number | null;
  nodes: number | undefined;
  workers: number | undefined;
  strict: boolean;
}

const USAGE = 'usage: npm run sim -- [--seeds N] [--start S] [--seed S] [--lease-seeds N] [--cluster-seeds N] [--cluster-seed S] [--nodes 2-5] [--workers W]';

function parseArguments(argv: readonly string[]): Arguments {
  const parsed: Arguments = { seeds: 100, start: 1, seed: null, leaseSeeds: null, clusterSeeds: null, clusterSeed: null, nodes: undefined, workers: undefined, strict: false };
  for (let index = 0; index < argv.length; index++) {
    const name = argv[index] as string;
    if (name === '--strict') {
      parsed.strict = true;
      continue;
    }
    const value = Number(argv[++index]);
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} needs a whole number\n${USAGE}`);
    if (name === '--seeds') parsed.seeds = value;
    else if (name === '--start') parsed.start = value;
    else if (name === '--seed') parsed.seed = value;
    else if (name === '--lease-seeds') parsed.leaseSeeds = value;
    else if (name === '--cluster-seeds') parsed.clusterSeeds = value;
    else if (name === '--cluster-seed') parsed.clusterSeed = value;
    else if (name === '--workers') parsed.workers = Math.max(1, value);
    else if (name === '--nodes') {
      if (value < 2 || value > 5) throw new Error(`--nodes is 2 to 5\n${USAGE}`);
      parsed.nodes = value;
    }
    else throw new Error(`unknown option ${name}\n${USAGE}`);
  }
  return parsed;
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseArguments(argv);
  if (args.clusterSeed !== null) {
    const result = await runClusterSimulation(args.clusterSeed, { nodes: args.nodes, trace: true });
    process.stdout.write(`${indent(result.trace)}\n${JSON.stringify(result.stats)}\n${result.ok ? 'passed' : `FAILED: ${result.failure}`}\n`);
    return result.ok ? 0 : 1;
  }
  if (args.clusterSeeds !== null) {
    const summary = await runClusterSeedsInWorkers(args.start, args.clusterSeeds, { nodes: args.nodes }, args.workers, (done) => process.stdout.write(`  ${done}/${args.clusterSeeds} seeds\n`));
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    if (summary.failed) process.stdout.write(`replay: npm run sim -- --cluster-seed ${summary.failed.seed}${args.nodes ? ` --nodes ${args.nodes}` : ''}\n`);
    return summary.failed ? 1 : 0;
  }
  if (args.leaseSeeds !== null) {
    const summary = await runLeaseSeeds(args.start, args.leaseSeeds);
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return summary.failed ? 1 : 0;
  }
  const options: SimOptions = { strict: args.strict };
  if (args.seed !== null) return replay(args.seed, options);
  const progressEvery = Math.max(1, Math.ceil(args.seeds / 10));
  const summary = await runSeeds({ start: args.start, count: args.seeds }, options, (sofar: RunSummary) => {
    if (sofar.seedsRun % progressEvery === 0 && !sofar.failed) process.stdout.write(`  ${sofar.seedsRun}/${args.seeds} seeds passed (${sofar.seconds.toFixed(1)} s)\n`);
  });
  process.stdout.write(`${describeSummary(summary)}\n`);
  if (!summary.failed) return 0;
  // Replayed with a trace: the same seed takes the same steps, so its story is the failure's.
  const traced = await runSeed(summary.failed.seed, { ...options, trace: true });
  process.stdout.write(`\nlast steps of the failing seed:\n${indent(traced.trace)}\n\nFAILED: ${describeFailure(summary.failed)}\n`);
  return 1;
}

async function replay(seed: number, options: SimOptions): Promise<number> {
  const result = await runSeed(seed, { ...options, trace: true });
  process.stdout.write(`seed ${seed} (${result.shape}): ${result.steps} steps, ${result.requests} client requests; last steps:\n${indent(result.trace)}\n`);
  process.stdout.write(result.failure === null ? `seed ${seed} passed\n` : `FAILED: ${describeFailure(result)}\n`);
  return result.failure === null ? 0 : 1;
}

function indent(lines: readonly string[]): string {
  return lines.map((line) => `  ${line}`).join('\n');
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exitCode = 2;
}
