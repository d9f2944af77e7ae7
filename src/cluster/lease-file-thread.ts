// One lease file's reads and writes on a thread of its own, outside libuv's threadpool.
//
// Why: member reads and writes fill the threadpool, and its queue is first come, first served. A
// renewal queued behind them once waited 900 ms and the node lost its lease; keeping threads of the
// pool free for leases cost every member operation instead (sixteen threads on two cores: a 4 KiB
// read cost the process 14 µs of CPU, against 7 µs with four, docs/benchmarks.md). On a thread of
// its own, a renewal never waits for member I/O, and a lease file whose disk hangs holds up only
// its own thread: the other files still make the majority.
//
// The thread (lease-file-worker.ts) runs the blocking calls one after another, in the order they
// were asked for; the file descriptor is the opener's (descriptors belong to the process).
import { Worker } from 'node:worker_threads';
import type { LeaseThreadReply as Reply, LeaseThreadRequest as Request } from './lease-file-worker.js';

/** How long close() waits for the thread to stop. */
const CLOSE_WAIT_MS = 2000;

/** Reads and syncs of one lease file, each a promise, run on the file's own thread. */
export class LeaseFileThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (reply: Reply) => void; reject: (error: Error) => void }>();
  private nextId = 1;
  private failure: Error | null = null;

  /**
   * The thread, once it has loaded: loading reads its module through the threadpool, so a thread
   * started but not yet loaded would still wait for member I/O.
   */
  static async start(fd: number, path: string): Promise<LeaseFileThread> {
    const thread = new LeaseFileThread(fd, path);
    try {
      await new Promise<Reply>((resolve, reject) => thread.pending.set(0, { resolve, reject }));
    } catch (error) {
      await thread.close();
      throw error;
    }
    return thread;
  }

  private constructor(
    private readonly fd: number,
    private readonly path: string,
  ) {
    this.worker = new Worker(new URL('./lease-file-worker.js', import.meta.url));
    // The thread keeps the process alive only while a call waits for it (its start included), as a
    // pending fs call would.
    this.worker.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (this.pending.size === 0) this.worker.unref();
      waiter?.resolve(reply);
    });
    const fail = (error: Error): void => {
      this.failure ??= error;
      for (const waiter of this.pending.values()) waiter.reject(this.failure);
      this.pending.clear();
    };
    this.worker.on('error', (error) => fail(new Error(`${this.path}: lease thread failed: ${error.message}`)));
    this.worker.on('exit', () => fail(new Error(`${this.path}: lease thread stopped`)));
  }

  /** The whole area (`length` bytes from 0); bytes past the end of a short file read as zeroes. */
  async read(length: number): Promise<Buffer> {
    const reply = await this.ask({ id: 0, op: 'read', fd: this.fd, length });
    const area = Buffer.from((reply.bytes as Uint8Array).buffer, (reply.bytes as Uint8Array).byteOffset, length);
    if ((reply.bytesRead as number) < length) area.fill(0, reply.bytesRead);
    return area;
  }

  /** `bytes` at `at`, then fdatasync: resolves once both are done. */
  async write(bytes: Buffer, at: number): Promise<void> {
    await this.ask({ id: 0, op: 'write', fd: this.fd, at, bytes });
  }

  /**
   * Ends the thread. True once it stopped; false if it did not within `waitMs` (a call blocked in a
   * hung disk): the caller must then leave the descriptor open, or the call, once it returns, could
   * write into whatever file is opened next under the same number.
   */
  async close(waitMs = CLOSE_WAIT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([
      this.worker.terminate().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), waitMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
    return stopped;
  }

  private ask(request: Request): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (reply) => (reply.error === null ? resolve(reply) : reject(new Error(reply.error))),
        reject,
      });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ ...request, id });
    });
  }
}
