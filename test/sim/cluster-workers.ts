// Runs cluster-simulation seeds on worker threads, one per core by default: seeds are independent
// and each replays alone, so they split across threads without changing any result.
import os from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { runClusterSimulation, type ClusterRunSummary, type ClusterSimOptions, type ClusterSimStats } from './cluster-sim.js';

interface Job {
  seeds: number[];
  options: ClusterSimOptions;
}

type Report = { kind: 'seed'; seed: number; steps: number; stats: ClusterSimStats; failure?: string } | { kind: 'done' };

/** Seeds start … start+count−1 over `workers` threads; stops at the first failure it hears of. */
export async function runClusterSeedsInWorkers(
  start: number,
  count: number,
  options: ClusterSimOptions,
  workers = Math.max(1, os.availableParallelism()),
  progress: (done: number) => void = () => undefined,
): Promise<ClusterRunSummary> {
  const began = performance.now();
  const totals: ClusterRunSummary['totals'] = { crashes: 0, pauses: 0, cuts: 0, slowLeaseSpells: 0, fenced: 0, arrayTakeovers: 0, volumeTakeovers: 0, failbacks: 0, warmPages: 0, writesAcked: 0, writesFailed: 0, readsChecked: 0 };
  let steps = 0;
  let seedsRun = 0;
  let failed: ClusterRunSummary['failed'] = null;
  const every = Math.max(1, Math.ceil(count / 20));
  const running: Worker[] = [];
  const threads = Array.from({ length: Math.min(workers, count) }, (_, index) => {
    const seeds: number[] = [];
    for (let seed = start + index; seed < start + count; seed += workers) seeds.push(seed);
    const worker = new Worker(new URL(import.meta.url), { workerData: { seeds, options } satisfies Job });
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (report: Report) => {
        if (report.kind === 'done') return resolve();
        seedsRun++;
        steps += report.steps;
        for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += report.stats[key];
        if (report.failure && (!failed || report.seed < failed.seed)) failed = { seed: report.seed, failure: report.failure };
        if (failed) for (const other of running) void other.terminate();
        if (seedsRun % every === 0) progress(seedsRun);
      });
      worker.on('error', reject);
      worker.on('exit', () => resolve());
      running.push(worker);
    });
  });
  await Promise.all(threads);
  return { seedsRun, seconds: (performance.now() - began) / 1000, steps, failed, totals };
}

if (!isMainThread && parentPort) {
  const { seeds, options } = workerData as Job;
  for (const seed of seeds) {
    const result = await runClusterSimulation(seed, options);
    parentPort.postMessage({ kind: 'seed', seed, steps: result.steps, stats: result.stats, failure: result.failure } satisfies Report);
    if (!result.ok) break;
  }
  parentPort.postMessage({ kind: 'done' } satisfies Report);
}
