// Data I/O on the member files leaves threads free for the lease files.
//
// Node runs every file operation on libuv's threadpool (UV_THREADPOOL_SIZE threads, bin/ftvm sets
// 16), and the pool's queue is first come, first served. A client burst of page-ins (600 pipelined
// 1 MiB reads of never-written pages queue tens of thousands of member reads) once kept a lease
// renewal waiting behind them for 900 ms, and the node's own lease ran out. So member reads, writes
// and syncs pass through this queue, which never lets more than `concurrency` of them into the
// pool; lease I/O (lease-files.ts) does not, and always finds a free thread.
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

/** Threads kept free of data I/O: the lease files', and anything else Node puts on the pool. */
export const THREADS_KEPT_FREE = 4;

function threadpoolSize(): number {
  const configured = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(configured) && configured > 0 ? configured : 4;
}

/** One queue per process: every member file shares the pool. */
export const memberIo = new DiskQueue(Math.max(1, threadpoolSize() - THREADS_KEPT_FREE));
