// The shared array as the memory manager sees it, whichever way this node reaches it now: through
// the array holder over the partner link (RemoteArray), or, after this node took the array over,
// its own storage stack. Page-ins and destages ride over that switch instead of failing:
//
//   a read the holder cannot answer (link gone, holder stopping) waits for switchTo() and retries
//   blocks enqueued while remote are kept until a flush on the same target covers them; a switch
//   re-enqueues them on the new target, so a destage the dead holder never synced is written again
//   (the same bytes at the same offsets: writing them twice is harmless)
//
//   a failed flush has consumed the failures of the writes it covered: the kept blocks are sent
//   again before the next flush attempt, whoever's it is, and an attempt counts only if no flush
//   failed while it ran (cluster simulation, seed 304 of three nodes: a destage refused by a holder
//   still starting was dropped as covered by another caller's flush that never re-sent it, and an
//   acknowledged write was lost when its owner died next)
import type { Clock } from '../core/index.js';
import type { BlockStore } from '../storage/index.js';
import { HolderUnavailableError } from './remote-array.js';

const RETRY_PAUSE_MS = 100;

export class ArrayAccess implements BlockStore {
  private pending: Array<{ sequence: number; offset: number; data: Buffer }> = [];
  private sequence = 0;
  private changed: Array<() => void> = [];
  /** A flush failed since the kept blocks were last sent: send them again before the next attempt. */
  private resendOwed = false;
  /** Failed flush attempts so far: an attempt during which another failed proves nothing. */
  private failures = 0;

  constructor(
    private current: BlockStore,
    /** Whether the current target may go away (a remote holder): only then are blocks kept. */
    private remote: boolean,
    private readonly retryMs: number,
    private readonly clock: Clock,
  ) {}

  switchTo(target: BlockStore, remote: boolean): void {
    this.current = target;
    this.remote = remote;
    this.resendOwed = false;
    for (const block of this.pending) target.enqueueBlocks(block.offset, block.data);
    if (!remote) this.pending = [];
    for (const wake of this.changed.splice(0)) wake();
  }

  async readBlocks(offset: number, into: Buffer): Promise<void> {
    await this.retrying(() => this.current.readBlocks(offset, into));
  }

  readKnown(offset: number, into: Buffer): boolean {
    return this.current.readKnown?.(offset, into) ?? false;
  }

  enqueueBlocks(offset: number, data: Buffer): void {
    if (this.remote) this.pending.push({ sequence: ++this.sequence, offset, data });
    this.current.enqueueBlocks(offset, data);
  }

  async flush(): Promise<void> {
    const covered = this.sequence;
    await this.retrying(async () => {
      if (this.resendOwed) {
        this.resendOwed = false;
        for (const block of this.pending) this.current.enqueueBlocks(block.offset, block.data);
      }
      const target = this.current;
      const failuresBefore = this.failures;
      try {
        await target.flush();
      } catch (error) {
        this.failures++;
        this.resendOwed = true;
        throw error;
      }
      // A switch during the flush re-enqueued everything on the new target: flush that one too.
      if (target !== this.current) throw new HolderUnavailableError('the array changed hands during the flush');
      // Another caller's flush failed meanwhile: it may have consumed failures of blocks this one covers.
      if (this.failures !== failuresBefore) throw new HolderUnavailableError('another flush failed meanwhile');
    });
    let done = 0;
    while (done < this.pending.length && (this.pending[done]?.sequence ?? Infinity) <= covered) done++;
    this.pending.splice(0, done);
  }

  /**
   * The blocks of one range on the array and synced: the local stack's targeted flush; through a
   * remote holder, a whole flush (the holder's link has no targeted one).
   */
  async flushBlocks(offset: number, length: number): Promise<void> {
    const target = this.current;
    if (this.remote || !target.flushBlocks) return this.flush();
    await target.flushBlocks(offset, length);
    // Handed to another target meanwhile: make sure the range is on that one too.
    if (target !== this.current) await this.flushBlocks(offset, length);
  }

  private async retrying(work: () => Promise<void>): Promise<void> {
    const deadline = this.clock.now() + this.retryMs;
    for (;;) {
      try {
        return await work();
      } catch (error) {
        if (!(error instanceof HolderUnavailableError) || this.clock.now() >= deadline) throw error;
      }
      await new Promise<void>((resolve) => {
        const done = (): void => {
          cancel();
          const at = this.changed.indexOf(done);
          if (at >= 0) this.changed.splice(at, 1);
          resolve();
        };
        const cancel = this.clock.setTimer(RETRY_PAUSE_MS, done);
        this.changed.push(done);
      });
    }
  }
}
