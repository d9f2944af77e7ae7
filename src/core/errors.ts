// One tree of errors. Operating errors are what a running system meets and must handle: bad input,
// a failed disk, a partner gone, a refused command; each is typed, so callers (and the NBD layer's
// one errno mapping, nbd/errors.ts) decide by kind, not by message. Programmer errors are broken
// assumptions inside the code: assertions (node:assert), never caught to carry on.
//
//   FtvmError
//   ├─ InputError       what a user, a client or a peer gave is not acceptable (config, flags, frames)
//   ├─ StorageError     the disks: a member, the array, its on-disk formats
//   ├─ ClusterError     partners, leases, ownership: the cluster cannot do this now
//   └─ VolumeError      (volume/volume.ts) what a volume answers a request with; mapped to an errno
export class FtvmError extends Error {
  override name = 'FtvmError';
}

export class InputError extends FtvmError {
  override name = 'InputError';
}

export class StorageError extends FtvmError {
  override name = 'StorageError';
}

export class ClusterError extends FtvmError {
  override name = 'ClusterError';
}
