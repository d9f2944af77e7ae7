// Runs cluster-simulation seeds on worker threads, one per core by default: seeds are independent
// and each replays alone, so they spread across threads without changing any result. Each thread
// asks for its next seed when it finishes one (seeds take from 0.05 to over 1 s): no thread sits
// idle at the end while another still has a share of seeds to run.
import os from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { runClusterSimulation, type ClusterRunSummary, type ClusterSimOptions, type ClusterSimStats } from './cluster-sim.js';

/** From the main thread: the next seed to run, or no more. */
type Job = { kind: 'seed'; seed: number } | { kind: 'stop' };

/** From a worker: ready for its first seed, or one seed's result (ready for the next). */
type Report = { kind: 'ready' } | { kind: 'seed'; seed: number; steps: number; stats: ClusterSimStats; failure?: string };

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
  let next = start;
  const every = Math.max(1, Math.ceil(count / 20));
  const running: Worker[] = [];
  const threads = Array.from({ length: Math.min(workers, count) }, () => {
    const worker = new Worker(new URL(import.meta.url), { workerData: options });
    const give = (): void => worker.postMessage((failed || next >= start + count ? { kind: 'stop' } : { kind: 'seed', seed: next++ }) satisfies Job);
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (report: Report) => {
        if (report.kind === 'seed') {
          seedsRun++;
          steps += report.steps;
          for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += report.stats[key];
          if (report.failure && (!failed || report.seed < failed.seed)) failed = { seed: report.seed, failure: report.failure };
          if (failed) for (const other of running) if (other !== worker) void other.terminate();
          if (seedsRun % every === 0) progress(seedsRun);
        }
        give();
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
  const port = parentPort;
  const options = workerData as ClusterSimOptions;
  port.on('message', (job: Job) => {
    if (job.kind === 'stop') return port.close();
    void runClusterSimulation(job.seed, options).then((result) => port.postMessage({ kind: 'seed', seed: job.seed, steps: result.steps, stats: result.stats, failure: result.failure } satisfies Report));
  });
  port.postMessage({ kind: 'ready' } satisfies Report);
}
