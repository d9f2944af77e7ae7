// Runs targets round-robin in time slices until a budget is spent, counting iterations and
// collecting findings (one per target and kind of problem, with the first seed that showed it).
import { signature, type Finding } from './findings.js';
import type { FuzzTarget, TargetName } from './fuzz-target.js';
import { iterationSeed } from './random.js';

export interface CampaignOptions {
  budgetMs: number;
  baseSeed: number;
  /** Time one target gets before the next one's turn. */
  sliceMs: number;
  /** Called once for each new kind of finding. */
  onFinding?: (finding: Finding) => Promise<void> | void;
  /** Called before each case (progress output). */
  onCase?: (target: TargetName, seed: number) => void;
}

export interface TargetStats {
  iterations: number;
  elapsedMs: number;
  /** Seeds that broke an oracle, by finding signature. */
  hits: Map<string, number[]>;
}

/** Each target gets its own seed sequence, so adding a target does not change another's cases. */
function targetBase(baseSeed: number, name: TargetName): number {
  let hash = baseSeed >>> 0;
  for (const char of name) hash = (Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0);
  return hash;
}

export async function runCampaign(targets: readonly FuzzTarget[], options: CampaignOptions): Promise<Map<TargetName, TargetStats>> {
  const stats = new Map<TargetName, TargetStats>(targets.map((target) => [target.name, { iterations: 0, elapsedMs: 0, hits: new Map() }]));
  const end = performance.now() + options.budgetMs;
  while (performance.now() < end) {
    for (const target of targets) {
      const own = stats.get(target.name) as TargetStats;
      const sliceEnd = Math.min(end, performance.now() + options.sliceMs);
      const started = performance.now();
      do {
        const seed = iterationSeed(targetBase(options.baseSeed, target.name), own.iterations);
        options.onCase?.(target.name, seed);
        const result = await target.runCase(seed);
        own.iterations++;
        if (result.problems.length === 0) continue;
        const key = signature(target.name, result);
        const seeds = own.hits.get(key) ?? [];
        seeds.push(seed);
        own.hits.set(key, seeds);
        if (seeds.length === 1) await options.onFinding?.({ target: target.name, seed, result });
      } while (performance.now() < sliceEnd);
      own.elapsedMs += performance.now() - started;
      if (performance.now() >= end) break;
    }
  }
  return stats;
}
