// Proves the one errno mapping: a refusal keeps its errno, a volume's code maps to its errno, and
// storage, cluster and programmer errors are all EIO and logged as errors (not routine).
import { expect } from 'chai';
import { ClusterError, StorageError } from '../../../src/core/index.js';
import { NbdErrno } from '../../../src/nbd/constants.js';
import { isProgrammerError, nbdErrnoOf, RequestError } from '../../../src/nbd/errors.js';
import { MemberError } from '../../../src/storage/index.js';
import { VolumeError } from '../../../src/volume/index.js';

describe('nbdErrnoOf', () => {
  it('maps each kind of error', () => {
    expect(nbdErrnoOf(new RequestError(NbdErrno.Enospc, 'past the end'))).to.deep.equal({ errno: NbdErrno.Enospc, expected: true });
    expect(nbdErrnoOf(new VolumeError('EPERM', 'read-only'))).to.deep.equal({ errno: NbdErrno.Eperm, expected: true });
    expect(nbdErrnoOf(new VolumeError('EIO', 'failed'))).to.deep.equal({ errno: NbdErrno.Eio, expected: false });
    expect(nbdErrnoOf(new MemberError('/disk0', 'read failed'))).to.deep.equal({ errno: NbdErrno.Eio, expected: false });
    expect(nbdErrnoOf(new ClusterError('no holder'))).to.deep.equal({ errno: NbdErrno.Eio, expected: false });
    expect(nbdErrnoOf(new TypeError('undefined is not a function'))).to.deep.equal({ errno: NbdErrno.Eio, expected: false });
  });

  it('tells programmer errors from operating ones', () => {
    expect(isProgrammerError(new TypeError('x'))).to.equal(true);
    expect(isProgrammerError(new StorageError('x'))).to.equal(false);
    expect(isProgrammerError(new MemberError('/d', 'x'))).to.equal(false);
    expect(isProgrammerError(new VolumeError('EIO', 'x'))).to.equal(false);
  });
});
