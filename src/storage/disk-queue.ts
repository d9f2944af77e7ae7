// Data I/O on the member files leaves threads free for the lease files.
//
// Node runs every file operation on libuv's threadpool (UV_THREADPOOL_SIZE threads, bin/ftvm sets
// 16), and the pool's queue is first come, first served. A client burst of page-ins (600 pipelined
// 1 MiB reads of never-written pages queue tens of thousands of member reads) once kept a lease
// renewal waiting behind them for 900 ms, and the node's own lease ran out. So member reads, writes
// and syncs pass through this queue, which never lets more than `concurrency` of them into the
// pool; lease I/O (lease-files.ts) does not, and always finds a free thread.
export class DiskQueue {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly concurrency: number) {}

  get queued(): number {
    return this.waiting.length;
  }

  /** Starts `operation` now, or once a running one is done; the operation calls done() when it completes. */
  submit(operation: () => void): void {
    if (this.running < this.concurrency) {
      this.running++;
      operation();
    } else this.waiting.push(operation);
  }

  done(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
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
