// The one place where errors become NBD errno values, by kind (core/errors.ts draws the tree):
//
//   RequestError (refused at the edge)   its errno                     routine: a debug line
//   VolumeError (what a volume answers)  by code (ENOSPC, EPERM, ...)  routine, but EIO is logged
//   StorageError (disks, array, format)  EIO                           an error line: data at risk
//   ClusterError (partners, leases)      EIO                           an error line
//   anything else (a programmer error)   EIO                           an error line, with the stack
import { ClusterError, InputError, StorageError } from '../core/index.js';
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
export class RequestError extends InputError {
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
  if (error instanceof StorageError || error instanceof ClusterError) return { errno: NbdErrno.Eio, expected: false };
  return { errno: NbdErrno.Eio, expected: false };
}

/** Whether an error is a programmer error (not an operating one): its stack belongs in the log. */
export function isProgrammerError(error: unknown): boolean {
  return !(error instanceof InputError || error instanceof StorageError || error instanceof ClusterError || error instanceof VolumeError);
}
