// The Volume interface: what an NBD export needs from the storage below it.
// The NBD layer validates ranges before calling; a Volume may assume offset + length <= sizeBytes.
import { FtvmError } from '../core/index.js';

export interface Extent {
  lengthBytes: number;
  /** base:allocation flags: 1 = hole, 2 = reads as zeroes. */
  flags: number;
}

export interface ZeroOptions {
  fua: boolean;
  /** The client asked that the range stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  noHole: boolean;
  /** Fail with VolumeError('ENOTSUP') unless the zeroing is cheaper than writing zeroes. */
  fastZero: boolean;
}

/**
 * Reads this long or longer are sent straight from the volume's memory when it can lend them
 * (Volume.pinRead): a copy of 1 MiB into a reply buffer was a fifth of the owner's time in a 1 MiB
 * read. Shorter ones are copied: for 4 KiB the copy is cheaper than a second iovec and the locks
 * held until the socket took the reply.
 */
export const PINNED_READ_MIN_BYTES = 64 * 1024;

/** Bytes of a volume lent without a copy: views that stay valid and unchanged until release(). */
export interface PinnedRange {
  readonly pieces: readonly Buffer[];
  /** Called exactly once, when nothing reads the pieces any more. */
  release(): void;
}

export interface Volume {
  readonly sizeBytes: number;
  /** True when a flush on any connection makes every completed write durable (NBD CAN_MULTI_CONN). */
  readonly flushCoversAllConnections: boolean;
  read(offset: number, into: Buffer): Promise<void>;
  /**
   * The range's bytes lent as views, if that can be done in this synchronous step without waiting
   * (everything in memory, nothing of it being written); else null and nothing changed. What is
   * lent is not written until release(): a reply can go to the socket straight from memory.
   */
  pinRead?(offset: number, lengthBytes: number): PinnedRange | null;
  /**
   * Copies the range into `into` if that can be done in this synchronous step (everything in
   * memory, nothing of it being written) and returns true; else false, and `into` may hold part of
   * the range. For a caller that would otherwise wait on the async read only to copy from memory.
   */
  readResident?(offset: number, into: Buffer): boolean;
  /** `data` is the payload in pieces (as it arrived from the network); their lengths add up to the write. */
  write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, lengthBytes: number, fua: boolean): Promise<void>;
  zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void>;
  /** Advisory: bring the range closer to the client (read it ahead). */
  cache(offset: number, lengthBytes: number): Promise<void>;
  /** Extents covering at least the first byte of the range, in order, none past the range's end. */
  blockStatus(offset: number, lengthBytes: number): Promise<Extent[]>;
  close(): Promise<void>;
}

/** Operating errors a volume may report; the NBD layer maps each code to an NBD errno in one place. */
export type VolumeErrorCode = 'EIO' | 'ENOSPC' | 'ENOTSUP' | 'EPERM' | 'ESHUTDOWN' | 'ENOMEM' | 'EINVAL';

export class VolumeError extends FtvmError {
  override name = 'VolumeError';
  constructor(
    readonly code: VolumeErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
