// Bounded concurrency for a list of asynchronous jobs: a destage batch is thousands of RAID
// updates, and starting them all at once floods the threadpool and the event loop with their
// completions, stalling every acknowledgement behind them.

/**
 * Runs `run` for each item in order, at most `limit` at once. Rejects with the first failure; the
 * jobs already running, and the lanes still going, carry on (as Promise.all over the lanes does).
 */
export async function eachInFlight<T>(items: readonly T[], limit: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await run(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
