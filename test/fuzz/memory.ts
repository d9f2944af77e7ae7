// Garbage collection on demand, for memory bounds that mean something. With --expose-gc the
// global gc is used; without it V8's flag is set at run time (it takes effect for new contexts);
// if neither works the callers fall back to their generous bounds.
import v8 from 'node:v8';
import vm from 'node:vm';

let collector: (() => void) | null | undefined;

function findCollector(): (() => void) | null {
  const global = globalThis as { gc?: () => void };
  if (typeof global.gc === 'function') return global.gc;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    return null;
  }
}

/** Runs a full collection; false when this process cannot. */
export function collectGarbage(): boolean {
  if (collector === undefined) collector = findCollector();
  if (!collector) return false;
  collector();
  return true;
}

/**
 * Heap plus Buffer memory of this process, after full collections when they are possible. V8 frees
 * dead Buffers' memory on a background thread after a collection, so this collects, lets the event
 * loop turn, and collects again; `attempts` more rounds (a little later each) keep the lowest
 * reading, since memory that is really retained does not go away by waiting.
 */
export async function settledMemory(attempts = 1): Promise<{ bytes: number; collected: boolean }> {
  let lowest = Number.POSITIVE_INFINITY;
  let collected = false;
  for (let attempt = 0; attempt <= attempts; attempt++) {
    collected = collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, attempt * 20));
    collectGarbage();
    const usage = process.memoryUsage();
    lowest = Math.min(lowest, usage.heapUsed + usage.external);
  }
  return { bytes: lowest, collected };
}
