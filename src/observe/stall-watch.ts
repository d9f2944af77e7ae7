// A watchdog on the event loop: a timer that should fire every WATCH_INTERVAL_MS and notes how late
// it fired. Everything a node must do on time (partner heartbeats, lease renewals) runs on timers
// of this same loop, so a late watchdog is the first sign that something held the loop too long;
// it says so in the log before a lease runs out.
import type { Logger } from './logger.js';

const WATCH_INTERVAL_MS = 100;
/** Lateness worth a warning: a quarter of the default partner timeout. */
export const STALL_WARNING_MS = 250;

export interface StallWatch {
  /** The longest the loop was held since the watch started, in ms. */
  readonly worstMs: number;
  stop(): void;
}

export function watchEventLoop(logger: Logger, now: () => number = () => performance.now()): StallWatch {
  let expected = now() + WATCH_INTERVAL_MS;
  let worstMs = 0;
  const timer = setInterval(() => {
    const late = now() - expected;
    expected = now() + WATCH_INTERVAL_MS;
    if (late > worstMs) worstMs = late;
    if (late >= STALL_WARNING_MS) logger.warn(`event loop blocked for ${Math.round(late)} ms (heartbeats and lease renewals waited as long)`);
  }, WATCH_INTERVAL_MS);
  timer.unref();
  return {
    get worstMs() {
      return worstMs;
    },
    stop: () => clearInterval(timer),
  };
}
