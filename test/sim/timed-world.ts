// Simulated time for the timer-driven parts (leases, the ownership loop, volume switches): one
// clock in milliseconds, events run in time order (ties in the order they were queued), every
// event owned by the node incarnation whose process runs it, or by nobody (the kernel, the disks,
// the network). A paused node (SIGSTOP) runs nothing of its own until it resumes, while time, and
// so every lease, runs on; a dead incarnation's events are dropped.
import type { Clock } from '../../src/core/index.js';

/** One process: a node's incarnation between a start and a crash, a fence or a stop. */
export interface Actor {
  readonly node: number;
  alive: boolean;
}

export interface TimedEvent {
  readonly at: number;
  readonly order: number;
  readonly owner: Actor | null;
  readonly label: string;
  readonly run: () => void;
  cancelled: boolean;
}

export type RunEnd = 'end' | 'empty' | 'stopped' | 'step-limit';

export class TimedWorld {
  now = 0;
  steps = 0;
  private order = 0;
  private queue: TimedEvent[] = [];
  private readonly pausedUntil: number[];
  /** Told of each event as it runs (a trace). */
  onEvent: ((event: TimedEvent) => void) | null = null;

  constructor(nodes: number) {
    this.pausedUntil = Array.from({ length: nodes }, () => 0);
  }

  schedule(delayMs: number, owner: Actor | null, label: string, run: () => void): TimedEvent {
    const event: TimedEvent = { at: this.now + Math.max(0, delayMs), order: this.order++, owner, label, run, cancelled: false };
    this.queue.push(event);
    return event;
  }

  /** Timers owned by `owner`: held while its node is paused, gone once it is dead. */
  clockFor(owner: Actor, wallBase = 1_700_000_000_000): Clock {
    return {
      now: () => this.now,
      wallNow: () => wallBase + this.now,
      setTimer: (ms, work) => {
        const event = this.schedule(ms, owner, 'timer', work);
        return () => {
          event.cancelled = true;
        };
      },
    };
  }

  pause(node: number, ms: number): void {
    this.pausedUntil[node] = Math.max(this.pausedUntil[node] as number, this.now + ms);
  }

  paused(node: number): boolean {
    return (this.pausedUntil[node] as number) > this.now;
  }

  /** Forgets a dead incarnation's events. */
  drop(owner: Actor): void {
    this.queue = this.queue.filter((event) => event.owner !== owner);
  }

  /**
   * Runs events until `endMs`, the queue is empty, `after` returns false, or `stepLimit` steps. Each
   * event's microtasks (promise continuations) run before the next event: the disks, links and timers
   * are all events, so nothing else is pending once the microtask queue drains.
   */
  async run(endMs: number, stepLimit: number, after: (event: TimedEvent) => boolean): Promise<RunEnd> {
    for (;;) {
      const event = this.next();
      if (!event) return 'empty';
      const at = this.effectiveAt(event);
      if (at > endMs) {
        this.now = endMs;
        return 'end';
      }
      this.queue.splice(this.queue.indexOf(event), 1);
      if (event.cancelled || (event.owner && !event.owner.alive)) continue;
      this.now = Math.max(this.now, at);
      if (++this.steps > stepLimit) return 'step-limit';
      this.onEvent?.(event);
      event.run();
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!after(event)) return 'stopped';
    }
  }

  private effectiveAt(event: TimedEvent): number {
    return event.owner ? Math.max(event.at, this.pausedUntil[event.owner.node] as number) : event.at;
  }

  private next(): TimedEvent | null {
    let best: TimedEvent | null = null;
    let bestAt = Infinity;
    for (const event of this.queue) {
      const at = this.effectiveAt(event);
      if (at < bestAt || (at === bestAt && best !== null && (event.at < best.at || (event.at === best.at && event.order < best.order)))) {
        best = event;
        bestAt = at;
      }
    }
    return best;
  }
}
