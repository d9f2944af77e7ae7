// Simulated time for the timer-driven parts (leases, the ownership loop, volume switches): one
// clock in milliseconds, events run in time order (ties in the order they were queued), every
// event owned by the node incarnation whose process runs it, or by nobody (the kernel, the disks,
// the network). A paused node (SIGSTOP) runs nothing of its own until it resumes, while time, and
// so every lease, runs on; a dead incarnation's events are dropped.
//
// Work a node defers (Clock.defer: a link's batched send) runs right after the event that deferred
// it and that event's microtasks, in the same step, as setImmediate runs after a turn; a paused
// process's waits as an event of its own until it resumes.
//
// Nothing of the simulation waits for Node's event loop: timers, I/O completions and deferred work
// are all run here. So a seed runs in one macrotask, draining
// the microtasks (promise continuations) after each event with V8's microtask checkpoint, about
// ten times cheaper than an event-loop turn per event. Where that is not available (or with
// FTVM_SIM_DRAIN=turn, or turnPerEvent) each event gets its own turn instead; the two give the same
// run. One difference: Node reports a promise rejected without a handler at the end of a turn, so
// only a turn per event notices a handler attached a turn late.
import v8 from 'node:v8';
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
  /** Events waiting: the kernel's, the disks' and the network's (nobody's) in [0], node n's in [n + 1]. */
  private readonly queues: EventHeap[];
  /** Deferred by the event running now (Clock.defer). */
  private deferred: Array<{ owner: Actor; work: () => void }> = [];
  private readonly pausedUntil: number[];
  /** Told of each event as it runs (a trace). */
  onEvent: ((event: TimedEvent) => void) | null = null;

  constructor(
    nodes: number,
    /** An event-loop turn after each event instead of a microtask checkpoint (the same run, slower). */
    private readonly turnPerEvent = process.env.FTVM_SIM_DRAIN === 'turn',
  ) {
    this.pausedUntil = Array.from({ length: nodes }, () => 0);
    this.queues = Array.from({ length: nodes + 1 }, () => new EventHeap());
  }

  schedule(delayMs: number, owner: Actor | null, label: string, run: () => void): TimedEvent {
    const event: TimedEvent = { at: this.now + Math.max(0, delayMs), order: this.order++, owner, label, run, cancelled: false };
    (this.queues[owner ? owner.node + 1 : 0] as EventHeap).push(event);
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
      defer: (work) => void this.deferred.push({ owner, work }),
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
    (this.queues[owner.node + 1] as EventHeap).remove((event) => event.owner === owner);
  }

  /**
   * Runs events until `endMs`, the queue is empty, `after` returns false, or `stepLimit` steps. Each
   * event's microtasks (promise continuations) run before the next event: the disks, links, timers
   * and deferred work are all events, so nothing else is pending once the microtask queue drains.
   */
  run(endMs: number, stepLimit: number, after: (event: TimedEvent) => boolean): Promise<RunEnd> {
    const drain = this.turnPerEvent ? null : microtaskCheckpoint();
    if (!drain) return this.runTurns(endMs, stepLimit, after);
    // From a macrotask of its own: a checkpoint inside a microtask would do nothing.
    return new Promise((resolve, reject) => {
      setImmediate(() => {
        try {
          let drained = false;
          queueMicrotask(() => (drained = true));
          drain();
          if (!drained) {
            checkpoint = null;
            this.runTurns(endMs, stepLimit, after).then(resolve, reject);
            return;
          }
          const ended = withoutEventLoop(() => this.runNow(endMs, stepLimit, after, drain));
          resolve(ended);
        } catch (error) {
          reject(error as Error);
        }
      });
    });
  }

  private runNow(endMs: number, stepLimit: number, after: (event: TimedEvent) => boolean, drain: () => void): RunEnd {
    for (;;) {
      while (this.deferred.length > 0) {
        this.nextDeferred()?.();
        drain();
      }
      const event = this.take(endMs);
      if (typeof event === 'string') return event;
      if (++this.steps > stepLimit) return 'step-limit';
      this.onEvent?.(event);
      event.run();
      drain();
      while (this.deferred.length > 0) {
        this.nextDeferred()?.();
        drain();
      }
      if (!after(event)) return 'stopped';
    }
  }

  /** The same run with an event-loop turn after each event. */
  private async runTurns(endMs: number, stepLimit: number, after: (event: TimedEvent) => boolean): Promise<RunEnd> {
    const turn = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));
    for (;;) {
      while (this.deferred.length > 0) {
        this.nextDeferred()?.();
        await turn();
      }
      const event = this.take(endMs);
      if (typeof event === 'string') return event;
      if (++this.steps > stepLimit) return 'step-limit';
      this.onEvent?.(event);
      event.run();
      await turn();
      while (this.deferred.length > 0) {
        this.nextDeferred()?.();
        await turn();
      }
      if (!after(event)) return 'stopped';
    }
  }

  /** The next deferred work to run now; null if its process is dead, or paused (then it waits as an event). */
  private nextDeferred(): (() => void) | null {
    const { owner, work } = this.deferred.shift() as { owner: Actor; work: () => void };
    if (!owner.alive) return null;
    if (this.paused(owner.node)) {
      this.schedule(0, owner, 'deferred', work);
      return null;
    }
    return work;
  }

  /** The next event to run, time moved to it; or why there is none before `endMs`. */
  private take(endMs: number): TimedEvent | 'end' | 'empty' {
    for (;;) {
      const queue = this.next();
      if (!queue) return 'empty';
      const event = queue.peek() as TimedEvent;
      const at = this.effectiveAt(event);
      if (at > endMs) {
        this.now = endMs;
        return 'end';
      }
      queue.pop();
      if (event.cancelled || (event.owner && !event.owner.alive)) continue;
      this.now = Math.max(this.now, at);
      return event;
    }
  }

  private effectiveAt(event: TimedEvent): number {
    return event.owner ? Math.max(event.at, this.pausedUntil[event.owner.node] as number) : event.at;
  }

  /**
   * The queue whose first event runs next: events run in the order of when they may run (a paused
   * node's once it resumes), then when they were due, then when they were queued. Within one queue
   * that is the order of when they were due and queued, so only the queues' first events compete.
   */
  private next(): EventHeap | null {
    let best: EventHeap | null = null;
    let bestEvent: TimedEvent | null = null;
    let bestAt = Infinity;
    for (const queue of this.queues) {
      const event = queue.peek();
      if (!event) continue;
      const at = this.effectiveAt(event);
      if (at < bestAt || (at === bestAt && bestEvent !== null && (event.at < bestEvent.at || (event.at === bestEvent.at && event.order < bestEvent.order)))) {
        best = queue;
        bestEvent = event;
        bestAt = at;
      }
    }
    return best;
  }
}

/** Events by when they are due, then by when they were queued (a binary heap). */
class EventHeap {
  private items: TimedEvent[] = [];

  peek(): TimedEvent | undefined {
    return this.items[0];
  }

  push(event: TimedEvent): void {
    const { items } = this;
    let at = items.length;
    items.push(event);
    while (at > 0) {
      const parent = (at - 1) >> 1;
      const above = items[parent] as TimedEvent;
      if (!earlier(event, above)) break;
      items[at] = above;
      at = parent;
    }
    items[at] = event;
  }

  pop(): void {
    const { items } = this;
    const last = items.pop() as TimedEvent;
    if (items.length === 0) return;
    let at = 0;
    for (;;) {
      const left = 2 * at + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child = right < items.length && earlier(items[right] as TimedEvent, items[left] as TimedEvent) ? right : left;
      if (!earlier(items[child] as TimedEvent, last)) break;
      items[at] = items[child] as TimedEvent;
      at = child;
    }
    items[at] = last;
  }

  remove(which: (event: TimedEvent) => boolean): void {
    const kept = this.items.filter((event) => !which(event));
    this.items = [];
    for (const event of kept) this.push(event);
  }
}

function earlier(a: TimedEvent, b: TimedEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

let checkpoint: (() => void) | null | undefined;

/** Runs every pending microtask now, from a macrotask (V8's %PerformMicrotaskCheckpoint); null where unavailable. */
function microtaskCheckpoint(): (() => void) | null {
  if (checkpoint !== undefined) return checkpoint;
  checkpoint = null;
  try {
    // Lets this process parse V8's intrinsics (`%Name()`); valid JavaScript means what it meant.
    v8.setFlagsFromString('--allow-natives-syntax');
    checkpoint = new Function('%PerformMicrotaskCheckpoint()') as () => void;
  } catch {
    checkpoint = null;
  }
  return checkpoint;
}

/**
 * Runs `work` with the event loop's queues closed to it: work the simulated nodes put there (a real
 * setImmediate, timer or nextTick) would run only after the whole run, so its result would differ
 * from the turn-per-event run. Such work must go through the simulated Clock (Clock.defer).
 */
function withoutEventLoop<T>(work: () => T): T {
  const saved = { setImmediate: globalThis.setImmediate, setTimeout: globalThis.setTimeout, setInterval: globalThis.setInterval, nextTick: process.nextTick };
  let used: string | null = null;
  const refuse = (name: string) =>
    function refused(): never {
      used ??= `${name} (${(new Error().stack ?? '').split('\n').slice(2, 5).map((line) => line.trim()).join(', ')})`;
      throw new Error(`the simulation runs nodes on simulated time: ${name} goes through their Clock`);
    };
  globalThis.setImmediate = refuse('setImmediate') as unknown as typeof setImmediate;
  globalThis.setTimeout = refuse('setTimeout') as unknown as typeof setTimeout;
  globalThis.setInterval = refuse('setInterval') as unknown as typeof setInterval;
  process.nextTick = refuse('process.nextTick');
  let result: T;
  try {
    result = work();
  } finally {
    globalThis.setImmediate = saved.setImmediate;
    globalThis.setTimeout = saved.setTimeout;
    globalThis.setInterval = saved.setInterval;
    process.nextTick = saved.nextTick;
  }
  if (used) throw new Error(`the simulated nodes used ${used}`);
  return result;
}
