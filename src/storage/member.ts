// One RAID member: a backing file opened by descriptor, with positional asynchronous I/O.
// Every failure becomes a MemberError naming the file, so the array can mark the member failed and
// say why; nothing here retries or decides.
import { StorageError } from '../core/index.js';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { memberIo } from './disk-queue.js';

const openRaw = promisify(fs.open);
const closeRaw = promisify(fs.close);
const fstatRaw = promisify(fs.fstat);

export class MemberError extends StorageError {
  override name = 'MemberError';
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${message}`, options);
  }
}

/**
 * A write or sync this process may not do any more (its node's lease has run out): the member is
 * not at fault, so the array passes it up instead of failing the member.
 */
export class WriteRefusedError extends StorageError {
  override name = 'WriteRefusedError';
}

/** The I/O surface the array needs from a member; tests wrap it to inject faults. */
export interface MemberDevice {
  readonly path: string;
  read(offset: number, into: Buffer): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  /** The pieces one after the other from `offset`, in one system call where the device can. */
  writev?(offset: number, pieces: readonly Buffer[]): Promise<void>;
  sync(): Promise<void>;
  sizeBytes(): Promise<number>;
  close(): Promise<void>;
}

export class FileMember implements MemberDevice {
  private closed = false;
  /**
   * System calls on the descriptor not yet returned. close() waits for them: a descriptor number
   * is reused by the next open, and a call still running on it would reach that file instead.
   */
  private inFlight = 0;
  private idle: (() => void) | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    /** Opened for inspection: writes and syncs are refused here, and the kernel would refuse them too. */
    readonly readOnly = false,
  ) {}

  static async open(path: string): Promise<FileMember> {
    try {
      return new FileMember(path, await openRaw(path, 'r+'));
    } catch (error) {
      throw new MemberError(path, `cannot open: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Opens a member for looking only (`ftvm raid status`, `examine`): the descriptor is O_RDONLY, and
   * write() and sync() reject before any system call, so a code path that would change the member
   * fails loudly instead of writing behind the administrator's back.
   */
  static async openReadOnly(path: string): Promise<FileMember> {
    try {
      return new FileMember(path, await openRaw(path, 'r'), true);
    } catch (error) {
      throw new MemberError(path, `cannot open: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Creates a sparse member file of the given size; refuses to overwrite an existing file. */
  static async create(path: string, sizeBytes: number): Promise<FileMember> {
    let fd: number;
    try {
      fd = await openRaw(path, 'wx+', 0o600);
      await promisify(fs.ftruncate)(fd, sizeBytes);
    } catch (error) {
      throw new MemberError(path, `cannot create: ${(error as Error).message}`, { cause: error });
    }
    return new FileMember(path, fd);
  }

  read(offset: number, into: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.readFrom(offset, into, 0, resolve, reject));
  }

  write(offset: number, data: Buffer): Promise<void> {
    if (this.readOnly) return Promise.reject(new MemberError(this.path, `opened read-only: refusing to write ${data.length} bytes at ${offset}`));
    return new Promise((resolve, reject) => this.writeFrom(offset, data, 0, resolve, reject));
  }

  writev(offset: number, pieces: readonly Buffer[]): Promise<void> {
    if (this.readOnly) return Promise.reject(new MemberError(this.path, `opened read-only: refusing to write at ${offset}`));
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new MemberError(this.path, 'closed'));
      memberIo.submit(() => {
        // As every other call: refused if closed while queued, and waited for by close().
        if (!this.begin(reject)) return;
        fs.writev(this.fd, pieces as Buffer[], offset, (error, written) => {
          this.end();
          if (error) return reject(new MemberError(this.path, `write at ${offset} failed: ${error.message}`, { cause: error }));
          // A short gathered write (rare on a file) finishes piece by piece.
          const rest: Array<Promise<void>> = [];
          let at = offset;
          for (const piece of pieces) {
            const end = at + piece.length;
            if (end > offset + written) rest.push(this.write(Math.max(at, offset + written), piece.subarray(Math.max(0, offset + written - at))));
            at = end;
          }
          if (rest.length === 0) return resolve();
          Promise.all(rest).then(() => resolve(), reject);
        });
      });
    });
  }

  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new MemberError(this.path, 'closed'));
    if (this.readOnly) return Promise.reject(new MemberError(this.path, 'opened read-only: refusing to sync'));
    return new Promise((resolve, reject) =>
      memberIo.submit(() => {
        if (!this.begin(reject)) return;
        fs.fdatasync(this.fd, (error) => {
          this.end();
          if (error) reject(new MemberError(this.path, `sync failed: ${error.message}`, { cause: error }));
          else resolve();
        });
      }),
    );
  }

  async sizeBytes(): Promise<number> {
    if (this.closed) throw new MemberError(this.path, 'closed');
    this.inFlight++;
    try {
      return (await fstatRaw(this.fd)).size;
    } finally {
      this.settled();
    }
  }

  /** Refuses what is still queued; closes the descriptor once what already reached it returned. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    // Every caller waits for the descriptor itself to be closed, not only the first.
    this.closing = (async () => {
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
      await closeRaw(this.fd);
    })();
    return this.closing;
  }

  /**
   * An operation leaves the member queue for the descriptor. The queue may have held it past a
   * close (abandon() while a destage waits for its turn): it must not run then, or it writes to
   * whatever file opened next under the same number (the memory-mirror test's write-through page,
   * overwritten with its stripe neighbour's bytes after a reassembly).
   */
  private begin(reject: (error: Error) => void): boolean {
    if (this.closed) {
      reject(new MemberError(this.path, 'closed'));
      // Not done() from here: it starts the next queued operation in this same call, and a long
      // queue of a closed member's page-ins would recurse once per entry.
      queueMicrotask(() => memberIo.done());
      return false;
    }
    this.inFlight++;
    return true;
  }

  private end(): void {
    memberIo.done();
    this.settled();
  }

  private settled(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.idle) {
      const resume = this.idle;
      this.idle = null;
      resume();
    }
  }

  private readFrom(offset: number, into: Buffer, done: number, resolve: () => void, reject: (error: Error) => void): void {
    if (this.closed) return reject(new MemberError(this.path, 'closed'));
    memberIo.submit(() => this.readNow(offset, into, done, resolve, reject));
  }

  private readNow(offset: number, into: Buffer, done: number, resolve: () => void, reject: (error: Error) => void): void {
    if (!this.begin(reject)) return;
    fs.read(this.fd, into, done, into.length - done, offset + done, (error, bytesRead) => {
      this.end();
      if (error) return reject(new MemberError(this.path, `read at ${offset + done} failed: ${error.message}`, { cause: error }));
      // A truncated member reads short: that is a failure, not zeroes.
      if (bytesRead === 0) return reject(new MemberError(this.path, `read at ${offset + done} is past the end of the file`));
      if (done + bytesRead < into.length) return this.readFrom(offset, into, done + bytesRead, resolve, reject);
      resolve();
    });
  }

  private writeFrom(offset: number, data: Buffer, done: number, resolve: () => void, reject: (error: Error) => void): void {
    if (this.closed) return reject(new MemberError(this.path, 'closed'));
    memberIo.submit(() => this.writeNow(offset, data, done, resolve, reject));
  }

  private writeNow(offset: number, data: Buffer, done: number, resolve: () => void, reject: (error: Error) => void): void {
    if (!this.begin(reject)) return;
    fs.write(this.fd, data, done, data.length - done, offset + done, (error, written) => {
      this.end();
      if (error) return reject(new MemberError(this.path, `write at ${offset + done} failed: ${error.message}`, { cause: error }));
      if (done + written < data.length) return this.writeFrom(offset, data, done + written, resolve, reject);
      resolve();
    });
  }
}
