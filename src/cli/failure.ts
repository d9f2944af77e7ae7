// How the command line ends when something fails: one line on stderr that says what to do, and an
// exit code a script or systemd can act on. Environment errors (a missing file, a port in use, no
// permission, a full disk) get codes of their own from sysexits.h; a stack trace is printed only
// for what ftvm did not expect, which is a bug.

/** Exit codes of every ftvm command (docs/operations.md, "Exit codes"). */
export const EXIT = {
  /** An error ftvm explains: a RAID refusal, a volume that does not fit, a node that did not start. */
  failure: 1,
  /** A bad command line: an unknown option or a value out of range (nothing was touched). */
  usage: 2,
  /** ENOENT, ENOTDIR: a file or directory named (or needed) is not there. */
  noInput: 66,
  /** A host name that does not resolve, or an address this machine does not have. */
  noHost: 68,
  /** Held by another process: a port in use, a data directory another `ftvm up` runs on. */
  unavailable: 69,
  /** An error ftvm did not expect: printed with its stack trace. */
  software: 70,
  /** The system ran out of something: file descriptors, memory, processes. */
  osError: 71,
  /** EEXIST: something ftvm would create is already there. */
  cannotCreate: 73,
  /** ENOSPC, EDQUOT, EIO, EROFS: the disk refused. */
  ioError: 74,
  /** `ftvm serve` only: this node was fenced; starting it again makes it rejoin (systemd restarts it). */
  fenced: 75,
  /** EACCES, EPERM: not allowed to. */
  noPermission: 77,
  /** The config file is invalid (ConfigError and the key and TLS checks of a config). */
  config: 78,
} as const;

/** A failure whose message is already the one line to print. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failure,
  ) {
    super(message);
  }
}

/** A bad flag value: exits like yargs' own usage errors. */
export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** What each system error code means for the person at the terminal, and its exit code. */
const ERRNO: Record<string, { exitCode: number; hint: string }> = {
  ENOENT: { exitCode: EXIT.noInput, hint: 'check the path' },
  ENOTDIR: { exitCode: EXIT.noInput, hint: 'a part of the path is a file, not a directory' },
  EISDIR: { exitCode: EXIT.noInput, hint: 'give a file, not a directory' },
  EEXIST: { exitCode: EXIT.cannotCreate, hint: 'remove it or choose another name' },
  EACCES: { exitCode: EXIT.noPermission, hint: 'run as a user allowed to, or fix the permissions' },
  EPERM: { exitCode: EXIT.noPermission, hint: 'run as a user allowed to, or fix the permissions' },
  EADDRINUSE: { exitCode: EXIT.unavailable, hint: 'another process listens there: stop it or choose other ports' },
  EADDRNOTAVAIL: { exitCode: EXIT.noHost, hint: 'that address is not one of this machine\'s' },
  ENOTFOUND: { exitCode: EXIT.noHost, hint: 'the host name does not resolve' },
  ENOSPC: { exitCode: EXIT.ioError, hint: 'free space on that filesystem or choose another' },
  EDQUOT: { exitCode: EXIT.ioError, hint: 'the disk quota is used up: free space or choose another filesystem' },
  EROFS: { exitCode: EXIT.ioError, hint: 'the filesystem is read-only: choose another' },
  EIO: { exitCode: EXIT.ioError, hint: 'the disk failed a read or write: check the device (dmesg)' },
  EMFILE: { exitCode: EXIT.osError, hint: 'too many open files: raise the limit (ulimit -n, LimitNOFILE=)' },
  ENFILE: { exitCode: EXIT.osError, hint: 'the system\'s open-file table is full' },
  ENOMEM: { exitCode: EXIT.osError, hint: 'out of memory' },
  EAGAIN: { exitCode: EXIT.osError, hint: 'a system resource is exhausted; try again' },
};

/** Built-in error types that only a programming mistake throws. */
const BUG_TYPES: readonly ErrorClass[] = [TypeError, RangeError, ReferenceError, SyntaxError, EvalError, URIError];

function isBug(error: Error): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return BUG_TYPES.some((kind) => error instanceof kind) || error.name === 'AssertionError' || (typeof code === 'string' && code.startsWith('ERR_'));
}

/** An error class, for instanceof. */
export type ErrorClass = abstract new (...args: never[]) => Error;

/** The system error code of an error or of the error it wraps (`cause`), if it is one ftvm knows. */
function errnoOf(error: unknown): string | null {
  for (let current = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code in ERRNO) return code;
  }
  return null;
}

/**
 * The line to print and the exit code for an error that ended a command. `explained` are the
 * error classes whose messages are written for the user (exit 1), `config` those about the config
 * file (exit 78); a system error anywhere below either still gets its own code.
 */
export function describeFailure(error: unknown, kinds: { explained: readonly ErrorClass[]; config: readonly ErrorClass[] }): { line: string; exitCode: number } {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof CliError) return { line: `ftvm: ${message}`, exitCode: error.exitCode };
  const code = errnoOf(error);
  const isKind = (list: readonly ErrorClass[]): boolean => list.some((kind) => error instanceof kind);
  if (isKind(kinds.config) || isKind(kinds.explained)) {
    return { line: `ftvm: ${message}`, exitCode: code ? (ERRNO[code] as { exitCode: number }).exitCode : isKind(kinds.config) ? EXIT.config : EXIT.failure };
  }
  if (code) {
    const known = ERRNO[code] as { exitCode: number; hint: string };
    // Node's messages already name the call and the path ("EACCES: permission denied, mkdir '/x'").
    return { line: `ftvm: ${message.split('\n')[0]}: ${known.hint}`, exitCode: known.exitCode };
  }
  // An Error (or an ftvm error class: AllocationError, SuperblockError, ...) was thrown on purpose
  // with a message for the operator ("the member files hold a raid1 array, the config says raid5",
  // "volume vol1 ... does not fit"); a TypeError, RangeError, AssertionError or one of Node's own
  // ERR_* errors is a mistake in ftvm.
  if (error instanceof Error && !isBug(error)) return { line: `ftvm: ${message}`, exitCode: EXIT.failure };
  const stack = error instanceof Error ? (error.stack ?? message) : message;
  return { line: `ftvm: internal error (a bug: please report it with this trace): ${stack}`, exitCode: EXIT.software };
}
