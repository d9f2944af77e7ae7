// How many member reads, writes and syncs are in libuv's threadpool at once.
//
// Node runs every file operation on the threadpool (UV_THREADPOOL_SIZE threads, four by default),
// whose queue is first come, first served. A client burst of page-ins (600 pipelined 1 MiB reads of
// never-written pages) queues tens of thousands of member reads: this queue keeps all but
// MEMBER_IO_IN_FLIGHT of them here, so the rest of the process's file work (a config read, a new
// member's open) waits behind at most that many. Lease I/O does not use the pool at all: each lease
// file has a thread of its own (cluster/lease-file-thread.ts), so a renewal never waits for member I/O.
//
// The pool is kept small and fed deep on purpose. On two cores, sixteen threads taking turns cost a
// 4 KiB read 14 µs of process CPU against 7 µs for four threads with the same 32 reads queued: a
// thread that finds the next operation waiting never sleeps, and none is woken per operation
// (docs/benchmarks.md, "The threadpool").
//
// While a lease renewal runs late, the queue also lets only one member operation at a time reach the
// device (pace): the renewal's sync then waits behind at most one of this process's own writes, not
// a device queue full of resync or destage traffic.
export class DiskQueue {
  private running = 0;
  private limit: number;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly concurrency: number) {
    this.limit = concurrency;
  }

  get queued(): number {
    return this.waiting.length;
  }

  get paced(): boolean {
    return this.limit < this.concurrency;
  }

  /** Starts `operation` now, or once a running one is done; the operation calls done() when it completes. */
  submit(operation: () => void): void {
    if (this.running < this.limit) {
      this.running++;
      operation();
    } else this.waiting.push(operation);
  }

  done(): void {
    if (this.running > this.limit) {
      this.running--;
      return;
    }
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  /** One operation at a time while `on` (a lease renewal is late), the full concurrency again after. */
  pace(on: boolean): void {
    this.limit = on ? 1 : this.concurrency;
    while (this.running < this.limit && this.waiting.length > 0) {
      this.running++;
      (this.waiting.shift() as () => void)();
    }
  }
}

/** Member operations let into the threadpool at once: enough that its threads always find the next one. */
export const MEMBER_IO_IN_FLIGHT = 32;

/** One queue per process: every member file shares the pool. */
export const memberIo = new DiskQueue(MEMBER_IO_IN_FLIGHT);
