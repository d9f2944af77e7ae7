// One clock for everything that waits or measures time in the node: leases, the ownership loop,
// partner heartbeats, retries, staged pages. Passed in, never read from globals, so test/sim runs
// whole nodes on simulated time under a seed and every run replays exactly.
export interface Clock {
  /** Monotonic milliseconds: only differences mean anything. */
  now(): number;
  /** Wall-clock milliseconds, only for humans reading a record (a lease slot, a log). */
  wallNow(): number;
  /** Runs `work` once after `ms`; the result cancels it. */
  setTimer(ms: number, work: () => void): () => void;
  /**
   * Runs `work` once, after the current turn: once this turn's promise continuations and the I/O
   * already due have run (setImmediate). Batches work a turn produces (a link's outgoing messages).
   */
  defer(work: () => void): void;
}

/**
 * The process's own clock. Its timers do not keep the process alive by themselves (a node lives
 * while it listens; a finished test or command exits).
 */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(ms, work) {
    const timer = setTimeout(work, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
  defer(work) {
    setImmediate(work);
  },
};

/** Resolves after `ms` on `clock`. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimer(ms, resolve));
}

/** Calls `work` every `ms` until the result is called (each next call counted from the last one's start). */
export function every(clock: Clock, ms: number, work: () => void): () => void {
  let cancel: () => void = () => undefined;
  let stopped = false;
  const tick = (): void => {
    if (stopped) return;
    cancel = clock.setTimer(ms, tick);
    work();
  };
  cancel = clock.setTimer(ms, tick);
  return () => {
    stopped = true;
    cancel();
  };
}
