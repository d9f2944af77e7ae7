// The one place where operating errors become NBD errno values.
import { NbdErrno } from './constants.js';
import { VolumeError, type VolumeErrorCode } from '../volume/index.js';

const ERRNO_BY_CODE: Record<VolumeErrorCode, NbdErrno> = {
  EIO: NbdErrno.Eio,
  ENOSPC: NbdErrno.Enospc,
  ENOTSUP: NbdErrno.Enotsup,
  EPERM: NbdErrno.Eperm,
  ESHUTDOWN: NbdErrno.Eshutdown,
  ENOMEM: NbdErrno.Enomem,
  EINVAL: NbdErrno.Einval,
};

/** A request refused at the edge, before it reached the volume. */
export class RequestError extends Error {
  override name = 'RequestError';
  constructor(
    readonly errno: NbdErrno,
    message: string,
  ) {
    super(message);
  }
}

/** Maps any failure to an errno; `expected` is false for failures that deserve an error-level log. */
export function nbdErrnoOf(error: unknown): { errno: NbdErrno; expected: boolean } {
  if (error instanceof RequestError) return { errno: error.errno, expected: true };
  if (error instanceof VolumeError) return { errno: ERRNO_BY_CODE[error.code], expected: error.code !== 'EIO' };
  return { errno: NbdErrno.Eio, expected: false };
}
