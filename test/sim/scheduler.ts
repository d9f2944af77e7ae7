// The seeded scheduler: one step runs one ready action, chosen by weight from what every part of the
// simulation offers right now (deliver the next chunk on a link, put the next block on the disk,
// answer a disk read, start a client request), then lets Node run what that action queued.
//
//   gather ready actions ──> pick one by weight (seeded) ──> run it ──> settle: microtasks and the
//                                                                       setImmediate batches of links
//
// There is no clock: a message is "delayed" because other actions were picked before its delivery,
// and it is never reordered because each link direction offers only its oldest chunk. Nothing here
// reads Date.now or Math.random, and nothing does real I/O, so Node's own queues run in the same
// order every time and a seed replays exactly.

export interface Action {
  /** Shown in traces and failure stories. */
  readonly label: string;
  readonly weight: number;
  run(): void;
}

/** Adds the actions one part of the simulation can take now. */
export type ActionSource = (ready: Action[]) => void;

/**
 * Immediate rounds after each action. A link queues its outgoing frames with one setImmediate while
 * microtasks run; the first round runs our own resumption first, the second that link flush. A flush
 * only writes into the simulated network (no further immediates), so two rounds leave Node idle.
 */
const SETTLE_ROUNDS = 2;

export class Scheduler {
  private readonly sources: ActionSource[] = [];
  stepsTaken = 0;
  /** Called with each action before it runs (for traces). */
  onAction: (action: Action) => void = () => undefined;

  constructor(private readonly random: () => number) {}

  addSource(source: ActionSource): void {
    this.sources.push(source);
  }

  /** Runs one step; returns the action taken, or null when nothing is ready. */
  async step(): Promise<Action | null> {
    const ready: Action[] = [];
    for (const source of this.sources) source(ready);
    const action = this.pick(ready);
    if (action === null) return null;
    this.stepsTaken++;
    this.onAction(action);
    action.run();
    await settle();
    return action;
  }

  private pick(ready: readonly Action[]): Action | null {
    let total = 0;
    for (const action of ready) total += action.weight;
    if (total === 0) return null;
    let point = this.random() * total;
    for (const action of ready) {
      point -= action.weight;
      if (point < 0) return action;
    }
    return ready[ready.length - 1] as Action;
  }
}

/** Lets microtasks and queued immediates run until Node has nothing left to do for this step. */
export async function settle(): Promise<void> {
  for (let round = 0; round < SETTLE_ROUNDS; round++) await new Promise<void>((resolve) => setImmediate(resolve));
}
