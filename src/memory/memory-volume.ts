// A volume (NBD export) over one allocation of the memory manager: byte ranges become pages, and
// each page is obtain pointer → copy → release pointer. Writes release consecutive pages as runs
// (one replication each); a request never waits for a page while it holds an unreleased run, so
// concurrent requests can never wait on each other in a cycle.
import { nextTurn, PAGES_PER_TURN, VolumeError, type Extent, type PinnedRange, type Volume, type ZeroOptions } from '../volume/index.js';
import { MAX_RUN_BYTES, type MemoryManager, type PagePointer } from './memory-manager.js';

const ZEROES = Buffer.alloc(1024 * 1024);

/**
 * Pages one request reads at once (a window over its range). Every page read in flight is a chain
 * of a dozen pending async frames down to the member read; 600 pipelined 1 MiB reads with 64 pages
 * each in flight kept ~67,000 of them alive, the scavenger copied them at every collection and the
 * loop stalled 400-600 ms. With 8 the same burst ran without a stall, and faster (measured with
 * test/integration/attacks.test.ts's burst against a two-node cluster).
 */
export const PAGES_IN_FLIGHT = 8;
/** What one read copies from resident pages before it lets the event loop run (about 0.2 ms here). */
export const FAST_READ_BYTES = 1024 * 1024;

export class MemoryVolume implements Volume {
  readonly flushCoversAllConnections = true;

  constructor(
    private readonly manager: MemoryManager,
    readonly name: string,
    private readonly allocation: string,
    private readonly pageBytes: number,
    /** Grows with an online resize, after the memory manager's allocation did. */
    public sizeBytes: number,
  ) {}

  async read(offset: number, into: Buffer): Promise<void> {
    // Resident pages are copied in this turn, up to FAST_READ_BYTES per turn (a long read must not
    // hold the loop); the first page that needs a page-in or is being written ends the fast part.
    let done = 0;
    for (;;) {
      const reached = this.copyResidentFrom(offset, into, done);
      const turnFull = reached - done >= FAST_READ_BYTES;
      done = reached;
      if (done === into.length || !turnFull) break;
      await nextTurn();
    }
    if (done === into.length) return;
    const rest = into.subarray(done);
    // What is missing of the rest, paged in by runs (a cold read); the loop below then finds the
    // pages resident or loading.
    const firstPage = Math.floor((offset + done) / this.pageBytes);
    const lastPage = Math.floor((offset + into.length - 1) / this.pageBytes);
    if (lastPage > firstPage) this.manager.prefetch(this.allocation, firstPage, lastPage - firstPage + 1);
    await this.forEachPage(offset + done, rest.length, async (page, inPage, at, length) => {
      const pointer = await this.manager.obtainReadPointer(this.allocation, page);
      try {
        pointer.data.copy(rest, at, inPage, inPage + length);
      } finally {
        await this.manager.releasePointer(pointer);
      }
    });
  }

  readResident(offset: number, into: Buffer): boolean {
    // Bounded as the fast part of read(): a long copy must not hold the loop.
    if (into.length > FAST_READ_BYTES) return false;
    try {
      return this.copyResidentFrom(offset, into, 0) === into.length;
    } catch {
      // An allocation gone or a range outside it: the async read reports it as the request's error.
      // Thrown from here it would reach the partner link's handler and close the link.
      return false;
    }
  }

  /**
   * Copies whole resident pages' worth of the range from byte `done` of `into` on, while each page
   * is resident and not being written, until FAST_READ_BYTES were copied; the new `done`.
   */
  private copyResidentFrom(offset: number, into: Buffer, done: number): number {
    const limit = done + FAST_READ_BYTES;
    while (done < into.length && done < limit) {
      const page = Math.floor((offset + done) / this.pageBytes);
      const inPage = (offset + done) % this.pageBytes;
      const length = Math.min(this.pageBytes - inPage, into.length - done);
      if (!this.manager.copyResident(this.allocation, page, inPage, length, into, done)) break;
      done += length;
    }
    return done;
  }

  /** Fig. 6 without the copy: the pages stay read-locked until the borrower releases them. */
  pinRead(offset: number, lengthBytes: number): PinnedRange | null {
    const firstPage = Math.floor(offset / this.pageBytes);
    const inPage = offset % this.pageBytes;
    let pieces: Buffer[] | null;
    try {
      pieces = this.manager.pinResident(this.allocation, firstPage, inPage, lengthBytes);
    } catch {
      // An allocation gone or a range outside it: the copying read reports it as the request's error.
      return null;
    }
    if (pieces === null) return null;
    const pageCount = Math.ceil((inPage + lengthBytes) / this.pageBytes);
    return { pieces, release: () => this.manager.unpinResident(this.allocation, firstPage, pageCount) };
  }

  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    let length = 0;
    for (const piece of data) length += piece.length;
    await this.update(offset, length, (target, from) => copyPieces(data, from, target));
    if (fua) await this.manager.flush();
  }

  async flush(): Promise<void> {
    await this.manager.flush();
  }

  /** Advisory, and the array keeps no allocation map: nothing to free. */
  async trim(_offset: number, _lengthBytes: number, fua: boolean): Promise<void> {
    if (fua) await this.manager.flush();
  }

  async zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero) throw new VolumeError('ENOTSUP', 'zeroing is no faster than writing zeroes on this volume');
    await this.update(offset, lengthBytes, (target) => {
      for (let done = 0; done < target.length; done += ZEROES.length) ZEROES.copy(target, done, 0, Math.min(ZEROES.length, target.length - done));
    });
    if (options.fua) await this.manager.flush();
  }

  async cache(offset: number, lengthBytes: number): Promise<void> {
    await this.forEachPage(offset, lengthBytes, async (page) => this.manager.releasePointer(await this.manager.obtainReadPointer(this.allocation, page)));
  }

  async blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    return [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {}

  /**
   * Writes a byte range; `fill(target, from)` fills `target` with source bytes from `from` on.
   * Pages are taken in order and collected into runs of consecutive pages (at most MAX_RUN_BYTES),
   * each released, and so replicated, as one. A page that cannot be had at once (locked, not
   * resident and partly written, no frame) first sends the run collected so far on its way, then
   * waits: a request never waits for a page while it holds pages of an unreleased run, so two
   * requests cannot wait on each other's pages in a cycle.
   */
  private async update(offset: number, lengthBytes: number, fill: (target: Buffer, from: number) => void): Promise<void> {
    const maxRunPages = Math.max(1, Math.floor(MAX_RUN_BYTES / this.pageBytes));
    const releases: Array<Promise<void>> = [];
    let run: PagePointer[] = [];
    let runOffset = 0;
    let runLength = 0;
    const release = (): void => {
      if (run.length === 0) return;
      releases.push(this.manager.releaseRun(run, { offset: runOffset, length: runLength }));
      run = [];
      runLength = 0;
    };
    // Before the first page is taken: the destage this may wait for could need a page we held.
    const room = this.manager.dirtyRoom();
    if (room !== null) await room;
    try {
      for (let at = 0; at < lengthBytes; ) {
        const page = Math.floor((offset + at) / this.pageBytes);
        const inPage = (offset + at) % this.pageBytes;
        const length = Math.min(this.pageBytes - inPage, lengthBytes - at);
        const pageIn = !(inPage === 0 && length === this.pageBytes);
        if (run.length === maxRunPages) {
          // A long range (a 32 MiB write, a zeroed gigabyte) lets timers and other clients run
          // after each full run, once that run is on its way: no page stays locked across the pause.
          release();
          await (this.manager.dirtyRoom() ?? nextTurn());
        }
        let pointer = this.manager.tryObtainWritePointer(this.allocation, page, pageIn);
        if (pointer === null) {
          release();
          pointer = await this.manager.obtainWritePointer(this.allocation, page, pageIn);
        }
        try {
          fill(pointer.data.subarray(inPage, inPage + length), at);
        } catch (error) {
          releases.push(this.manager.releaseRun([pointer]));
          throw error;
        }
        if (run.length === 0) runOffset = inPage;
        run.push(pointer);
        runLength += length;
        at += length;
      }
    } finally {
      // Every page in the run is filled, also when taking the next one failed.
      release();
      await Promise.allSettled(releases);
    }
    await Promise.all(releases);
  }

  /**
   * Runs `work` for every page of the range: at most PAGES_IN_FLIGHT at once, and PAGES_PER_TURN
   * started per event-loop turn. The window keeps what one large read holds alive (its pending
   * page-ins and their buffers) small: 64 reads of 1 MiB each with every page in flight made the
   * scavenger copy ~100 MB of live objects per collection, 100 ms each, stalling the node.
   */
  private async forEachPage(offset: number, lengthBytes: number, work: (page: number, inPage: number, at: number, length: number) => Promise<void>): Promise<void> {
    const jobs: Array<Promise<void>> = [];
    try {
      for (let at = 0; at < lengthBytes; ) {
        if (jobs.length >= PAGES_IN_FLIGHT) await jobs[jobs.length - PAGES_IN_FLIGHT];
        if (jobs.length > 0 && jobs.length % PAGES_PER_TURN === 0) await nextTurn();
        const page = Math.floor((offset + at) / this.pageBytes);
        const inPage = (offset + at) % this.pageBytes;
        const length = Math.min(this.pageBytes - inPage, lengthBytes - at);
        jobs.push(work(page, inPage, at, length));
        at += length;
      }
    } finally {
      // Every started page is finished (its lock released) before the request ends, failed or not.
      await Promise.allSettled(jobs);
    }
    await Promise.all(jobs);
  }
}

/** Copies `target.length` bytes of the concatenated pieces, starting at `from`, into `target`. */
function copyPieces(pieces: readonly Buffer[], from: number, target: Buffer): void {
  let skip = from;
  let written = 0;
  for (const piece of pieces) {
    if (written === target.length) return;
    if (skip >= piece.length) {
      skip -= piece.length;
      continue;
    }
    written += piece.copy(target, written, skip, skip + Math.min(piece.length - skip, target.length - written));
    skip = 0;
  }
}
