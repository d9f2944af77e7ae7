// Proves how a failed command ends: one line and an exit code per kind of failure; a stack trace
// only for an error ftvm did not expect.
import { expect } from 'chai';
import assert from 'node:assert';
import { CliError, describeFailure, EXIT, UsageError } from '../../../src/cli/failure.js';
import { ConfigError } from '../../../src/config/index.js';

class Explained extends Error {}

const kinds = { explained: [Explained], config: [ConfigError] };

function systemError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

describe('describeFailure', () => {
  const cases: Array<[string, string, number, RegExp]> = [
    ['ENOENT', "ENOENT: no such file or directory, open '/x'", EXIT.noInput, /^ftvm: ENOENT: no such file or directory, open '\/x': check the path$/],
    ['EEXIST', "EEXIST: file already exists, open '/x'", EXIT.cannotCreate, /: remove it or choose another name$/],
    ['EACCES', "EACCES: permission denied, mkdir '/x'", EXIT.noPermission, /permission denied, mkdir '\/x': run as a user allowed to/],
    ['EPERM', 'EPERM: operation not permitted, chmod', EXIT.noPermission, /: run as a user allowed to/],
    ['EADDRINUSE', 'listen EADDRINUSE: address already in use 127.0.0.1:10809', EXIT.unavailable, /10809: another process listens there/],
    ['ENOSPC', "ENOSPC: no space left on device, write", EXIT.ioError, /: free space/],
    ['EROFS', 'EROFS: read-only file system, open', EXIT.ioError, /read-only: choose another/],
    ['EMFILE', 'EMFILE: too many open files', EXIT.osError, /ulimit -n/],
  ];
  for (const [code, message, exitCode, line] of cases) {
    it(`${code}: exit ${exitCode}, one line with what to do`, () => {
      const failure = describeFailure(systemError(code, message), kinds);
      expect(failure.exitCode).to.equal(exitCode);
      expect(failure.line).to.match(line);
      expect(failure.line).to.not.include('\n');
    });
  }

  it('keeps the message of an explained error, exit 1, and of a config error, exit 78', () => {
    expect(describeFailure(new Explained('refusing to fail member 2'), kinds)).to.deep.equal({ line: 'ftvm: refusing to fail member 2', exitCode: EXIT.failure });
    expect(describeFailure(new ConfigError('invalid config x.json:\n  a: b'), kinds)).to.deep.equal({ line: 'ftvm: invalid config x.json:\n  a: b', exitCode: EXIT.config });
  });

  it('gives an explained error the exit code of the system error it wraps', () => {
    const error = new ConfigError('cannot read config /x.json: ENOENT', { cause: systemError('ENOENT', 'ENOENT') });
    expect(describeFailure(error, kinds)).to.deep.equal({ line: 'ftvm: cannot read config /x.json: ENOENT', exitCode: EXIT.noInput });
  });

  it('prints CliError and UsageError as they are, with their codes', () => {
    expect(describeFailure(new CliError('port 1 is in use', EXIT.unavailable), kinds)).to.deep.equal({ line: 'ftvm: port 1 is in use', exitCode: EXIT.unavailable });
    expect(describeFailure(new UsageError('--size 0: no'), kinds).exitCode).to.equal(EXIT.usage);
  });

  it('prints a plain Error as its message, exit 1: it was thrown with a message for the operator', () => {
    expect(describeFailure(new Error('the member files hold a raid1 array, the config says raid5'), kinds)).to.deep.equal({
      line: 'ftvm: the member files hold a raid1 array, the config says raid5',
      exitCode: EXIT.failure,
    });
  });

  it('prints an error of an ftvm class as its message, exit 1', () => {
    class AllocationError extends Error {
      override name = 'AllocationError';
    }
    expect(describeFailure(new AllocationError('volume vol1 (1 bytes) does not fit'), kinds)).to.deep.equal({ line: 'ftvm: volume vol1 (1 bytes) does not fit', exitCode: EXIT.failure });
  });

  it('prints the stack of a programming mistake, exit 70: that is a bug', () => {
    let assertion: Error | null = null;
    try {
      assert.equal(1, 2);
    } catch (error) {
      assertion = error as Error;
    }
    for (const error of [new TypeError('x is undefined'), new RangeError('offset out of range'), assertion as Error, Object.assign(new Error('Cannot find module'), { code: 'ERR_MODULE_NOT_FOUND' })]) {
      const failure = describeFailure(error, kinds);
      expect(failure.exitCode).to.equal(EXIT.software);
      expect(failure.line).to.match(/^ftvm: internal error \(a bug: please report it with this trace\): \w*Error[^]*\n\s+at /);
    }
  });

  it('keeps 75 for a fenced node, which systemd restarts', () => {
    expect(EXIT.fenced).to.equal(75);
    const codes = Object.values(EXIT);
    expect(new Set(codes).size, 'every exit code means one thing').to.equal(codes.length);
  });
});
