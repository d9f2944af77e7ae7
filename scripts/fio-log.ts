// What the failover scripts read out of fio: completion times from a latency log, and medians.
import fs from 'node:fs/promises';

/** The completion times (ms since the job started) in a fio latency log, in order. */
export async function completionTimes(logFile: string): Promise<number[]> {
  return (await fs.readFile(logFile, 'utf8'))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => Number(line.split(',')[0]))
    .sort((x, y) => x - y);
}

/** The longest time between two consecutive completions: the pause a client saw. */
export function longestGap(times: readonly number[]): number {
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, (times[i] as number) - (times[i - 1] as number));
  return gap;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
