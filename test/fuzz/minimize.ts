// Shrinks a decoder finding's input while the same oracle still breaks: first whole ranges are cut
// (halves, quarters, … single bytes), then bytes are zeroed. Bounded by a time budget, because a
// smaller vector is nice to have, not a verdict.
import type { CaseResult, FuzzTarget } from './fuzz-target.js';

export async function minimize(target: FuzzTarget, seed: number, found: CaseResult, budgetMs: number): Promise<Buffer> {
  let best = found.inputs[0] ?? Buffer.alloc(0);
  const kind = found.problems[0]?.kind;
  if (kind === undefined) return best;
  const stop = performance.now() + budgetMs;
  const reproduces = async (candidate: Buffer): Promise<boolean> => {
    const result = await target.replay([candidate], found.params, seed);
    return result.problems.some((problem) => problem.kind === kind);
  };
  for (let size = Math.max(1, best.length >> 1); size >= 1 && performance.now() < stop; size >>= 1) {
    for (let at = 0; at + size <= best.length && performance.now() < stop; ) {
      const candidate = Buffer.concat([best.subarray(0, at), best.subarray(at + size)]);
      if (await reproduces(candidate)) best = candidate;
      else at += size;
    }
  }
  for (let at = 0; at < best.length && performance.now() < stop; at++) {
    if (best[at] === 0) continue;
    const candidate = Buffer.from(best);
    candidate[at] = 0;
    if (await reproduces(candidate)) best = candidate;
  }
  return best;
}
