// A volume backed by one regular file: the stand-in until the memory manager and RAID sit below
// the NBD layer. Asynchronous positional I/O on one descriptor shared by every connection, so a
// flush (fdatasync) on any connection covers the writes of all of them.
import fs from 'node:fs';
import { promisify } from 'node:util';
import { VolumeError, type Extent, type Volume, type ZeroOptions } from './volume.js';

/** Zeroes are written from one shared buffer, this many bytes per write. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
const ZEROES = Buffer.alloc(ZERO_CHUNK_BYTES);
const openRaw = promisify(fs.open);

export class FileVolume implements Volume {
  readonly flushCoversAllConnections = true;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sizeBytes: number,
  ) {}

  /**
   * Opens an existing backing file. A missing file or one shorter than the volume is an error, never
   * silently created or grown: a wrong path in a config must not look like an empty disk.
   */
  static async open(path: string, sizeBytes: number, readOnly = false): Promise<FileVolume> {
    // A raw descriptor, not a FileHandle: a FileHandle that is garbage-collected closes its fd.
    let fd: number;
    try {
      fd = await openRaw(path, readOnly ? 'r' : 'r+');
    } catch (error) {
      throw new VolumeError('EIO', `cannot open backing file ${path}: ${(error as Error).message}`, { cause: error });
    }
    const stat = await promisify(fs.fstat)(fd);
    const problem = !stat.isFile() && !stat.isBlockDevice()
      ? `backing file ${path} is not a regular file or block device`
      : stat.isFile() && stat.size < sizeBytes
        ? `backing file ${path} holds ${stat.size} bytes, the volume needs ${sizeBytes}`
        : null;
    if (problem !== null) {
      await promisify(fs.close)(fd);
      throw new VolumeError('EIO', problem);
    }
    return new FileVolume(path, fd, sizeBytes);
  }

  /** Creates a sparse file of the given size; refuses to touch an existing file. */
  static async create(path: string, sizeBytes: number): Promise<void> {
    const handle = await fs.promises.open(path, 'wx');
    try {
      await handle.truncate(sizeBytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  read(offset: number, into: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.readFrom(offset, into, 0, resolve, reject));
  }

  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    await new Promise<void>((resolve, reject) => this.writeFrom(offset, data, resolve, reject));
    if (fua) await this.flush();
  }

  flush(): Promise<void> {
    this.assertOpen();
    return new Promise((resolve, reject) =>
      fs.fdatasync(this.fd, (error) => (error ? reject(ioError('flush', this.path, error)) : resolve())),
    );
  }

  /** Plain files cannot punch holes from Node without a native addon; TRIM is advisory, so it is a no-op. */
  async trim(_offset: number, _lengthBytes: number, fua: boolean): Promise<void> {
    this.assertOpen();
    if (fua) await this.flush();
  }

  async zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero) throw new VolumeError('ENOTSUP', 'zeroing a file volume is no faster than writing');
    for (let done = 0; done < lengthBytes; done += ZERO_CHUNK_BYTES) {
      const chunk = Math.min(ZERO_CHUNK_BYTES, lengthBytes - done);
      await this.write(offset + done, [ZEROES.subarray(0, chunk)], false);
    }
    if (options.fua) await this.flush();
  }

  async cache(): Promise<void> {
    this.assertOpen();
  }

  /** A file gives no allocation map without SEEK_DATA; reporting all of it as data is always correct. */
  async blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    this.assertOpen();
    return [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve, reject) => fs.close(this.fd, (error) => (error ? reject(error) : resolve())));
  }

  private assertOpen(): void {
    if (this.closed) throw new VolumeError('ESHUTDOWN', `volume ${this.path} is closed`);
  }

  private readFrom(offset: number, into: Buffer, done: number, resolve: () => void, reject: (e: Error) => void): void {
    if (this.closed) return reject(new VolumeError('ESHUTDOWN', `volume ${this.path} is closed`));
    fs.read(this.fd, into, done, into.length - done, offset + done, (error, bytesRead) => {
      if (error) return reject(ioError('read', this.path, error));
      // Past the end of a short file reads as zeroes, as a sparse tail would.
      if (bytesRead === 0) into.fill(0, done);
      else if (done + bytesRead < into.length) return this.readFrom(offset, into, done + bytesRead, resolve, reject);
      resolve();
    });
  }

  /** One writev for all pieces; a short write (rare on files) continues with what is left. */
  private writeFrom(offset: number, data: readonly Buffer[], resolve: () => void, reject: (e: Error) => void): void {
    if (this.closed) return reject(new VolumeError('ESHUTDOWN', `volume ${this.path} is closed`));
    fs.writev(this.fd, data as Buffer[], offset, (error, written) => {
      if (error) return reject(ioError('write', this.path, error));
      const rest = remainderAfter(data, written);
      if (rest.length > 0) return this.writeFrom(offset + written, rest, resolve, reject);
      resolve();
    });
  }
}

/** The pieces left after the first `bytes` bytes. */
function remainderAfter(data: readonly Buffer[], bytes: number): Buffer[] {
  const rest: Buffer[] = [];
  for (const piece of data) {
    if (bytes >= piece.length) bytes -= piece.length;
    else {
      rest.push(bytes > 0 ? piece.subarray(bytes) : piece);
      bytes = 0;
    }
  }
  return rest;
}

function ioError(operation: string, path: string, error: NodeJS.ErrnoException): VolumeError {
  const code = error.code === 'ENOSPC' ? 'ENOSPC' : 'EIO';
  return new VolumeError(code, `${operation} on ${path} failed: ${error.message}`, { cause: error });
}
