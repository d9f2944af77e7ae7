// A clock a test moves by hand: timers fire when advance() passes their time, in time order.
import type { Clock } from '../../src/core/index.js';

export class ManualClock implements Clock {
  private time = 0;
  private timers: Array<{ at: number; work: () => void; live: boolean }> = [];

  now(): number {
    return this.time;
  }

  wallNow(): number {
    return 1_700_000_000_000 + this.time;
  }

  setTimer(ms: number, work: () => void): () => void {
    const timer = { at: this.time + ms, work, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }

  defer(work: () => void): void {
    setImmediate(work);
  }

  /** Moves time on by `ms`, firing every timer due on the way (and those they set, if due). */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((timer) => timer.live && timer.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.time = Math.max(this.time, due.at);
      due.live = false;
      due.work();
    }
    this.time = end;
    this.timers = this.timers.filter((timer) => timer.live);
  }
}
