// Long work yields the event loop at fixed steps, so no client's request keeps timers (partner
// heartbeats, lease renewals) and other sockets waiting for more than a few milliseconds.
//
// Counted, not timed: a loop that copies pages yields every PAGES_PER_TURN pages, a framer admits at
// most REQUESTS_PER_TURN requests per socket read. Counts make the bound the same on every machine
// and every run (a 1 MiB read of 4 KiB pages yields 4 times; a 4 KiB read never does), and the cost
// of one step is known: a page copy is ~10 µs or less, so a turn's share of one request stays well
// under a millisecond. An awaited resolved promise does not yield (microtasks run before anything
// else); setImmediate does: timers and I/O callbacks run before it resumes.

/** Pages one request works on (copies, locks, page-ins started) before it lets the event loop run. */
export const PAGES_PER_TURN = 64;

/** Requests a connection starts from one socket read before the rest wait for the next turn. */
export const REQUESTS_PER_TURN = 32;

/** Resolves after everything already queued for the event loop (timers, I/O) has had its turn. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
