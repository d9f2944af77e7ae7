// V8's collections in this process, counted as they happen (a 'gc' PerformanceObserver): what a
// benchmark's server child reports per job without a profiler attached.
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

export interface Collections {
  minor: number;
  major: number;
}

/** A live count; the caller resets it between jobs. Entries arrive asynchronously, shortly after each collection. */
export function countCollections(): Collections {
  const counts: Collections = { minor: 0, major: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
      if (entry.detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
      else counts.minor++;
    }
  }).observe({ entryTypes: ['gc'] });
  return counts;
}
