// What `ftvm up` makes sure of before it writes anything: flags in range, a data directory that can
// be created on a real disk with room for the array's metadata, ports nobody else holds; and the
// lock that keeps a second `ftvm up` off a data directory one is running on (it would rewrite the
// running cluster's cluster.json and start a second pair of nodes on the same member files).
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, unlinkSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { formatSize, parseSize, VOLUME_SIZE_ALIGNMENT_BYTES } from '../config/index.js';
import { memberDataBytesFor, processAlive, thisProcess, type ProcessIdentity } from '../storage/index.js';
import { CliError, EXIT, UsageError } from './failure.js';

/** The nodes `ftvm up` runs, in port order. */
export const UP_NODES = ['a', 'b'] as const;
/** Partner link ports sit this far above the NBD ports. */
export const PARTNER_PORT_OFFSET = 100;
/** Metrics endpoints (http://HOST:PORT/metrics) sit this far above the NBD ports. */
export const METRICS_PORT_OFFSET = 200;
export const UP_DEFAULT_SIZE = '1GiB';
/** raid5 over this many member files. */
export const UP_MEMBER_COUNT = 3;
/** Kernel filesystems: a data directory there is never a disk (and /proc/x made `ftvm up` hang). */
const KERNEL_FILESYSTEMS = ['/proc', '/sys', '/dev'];
export const LOCK_FILE = 'up.lock';

export interface UpFlags {
  data: string;
  /** As typed (a string), so an error can quote it. */
  basePort: string | number;
  host: string;
  /** --size as typed; undefined: not given (the default applies when the array is created). */
  size: string | undefined;
}

export interface UpPlan {
  dataDirectory: string;
  basePort: number;
  host: string;
  sizeBytes: number;
  /** Whether --size was given: on an existing data directory it cannot change anything. */
  sizeGiven: boolean;
}

/** Every TCP port `ftvm up` listens on, with what it is for (the config is built from these too). */
export function upPorts(basePort: number): Array<{ node: string; role: 'NBD' | 'partner link' | 'metrics'; port: number }> {
  return UP_NODES.flatMap((node, index) => [
    { node, role: 'NBD' as const, port: basePort + index },
    { node, role: 'partner link' as const, port: basePort + PARTNER_PORT_OFFSET + index },
    { node, role: 'metrics' as const, port: basePort + METRICS_PORT_OFFSET + index },
  ]);
}

/** `P and P+1 (NBD), P+100 and P+101 (partner links), P+200 and P+201 (metrics)` */
function describePorts(): string {
  const ports = upPorts(0);
  const list = (role: string): string => ports.filter((entry) => entry.role === role).map((entry) => (entry.port === 0 ? 'P' : `P+${entry.port}`)).join(' and ');
  return `${list('NBD')} (NBD), ${list('partner link')} (partner links), ${list('metrics')} (metrics)`;
}

/** Checks the flags alone (no disk, no network); throws a UsageError naming the flag. */
export function validateUpFlags(flags: UpFlags): UpPlan {
  if (flags.data.trim() === '') throw new UsageError("--data '': give a directory (an empty path would put the array in the current directory)");
  const highest = Math.max(...upPorts(0).map((entry) => entry.port));
  const basePort = typeof flags.basePort === 'number' ? flags.basePort : /^\s*\d+\s*$/.test(flags.basePort) ? Number(flags.basePort) : NaN;
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + highest > 65535) {
    throw new UsageError(`--base-port ${flags.basePort}: give a whole number from 1 to ${65535 - highest} (ftvm up listens on ${describePorts()})`);
  }
  const host = flags.host.trim();
  if (host === '' || /[\s/[\]]/.test(host)) {
    throw new UsageError(`--host '${flags.host}': give an address or host name to listen on, e.g. 127.0.0.1, ::1 (no brackets), 0.0.0.0`);
  }
  const sizeText = flags.size ?? UP_DEFAULT_SIZE;
  const sizeBytes = parseSize(sizeText);
  if (typeof sizeBytes === 'string') throw new UsageError(`--size: ${sizeBytes}`);
  if (sizeBytes <= 0 || sizeBytes % VOLUME_SIZE_ALIGNMENT_BYTES !== 0) {
    throw new UsageError(`--size ${sizeText}: a volume is a positive whole number of 4 KiB blocks (e.g. 256MiB, 1GiB)`);
  }
  return { dataDirectory: path.resolve(flags.data), basePort, host, sizeBytes, sizeGiven: flags.size !== undefined };
}

export interface DataDirectoryState {
  /** The directory is there already. */
  exists: boolean;
  /** It holds a cluster.json: a data directory of an earlier run. */
  initialised: boolean;
  /** The nearest directory that exists (the data directory itself, or the parent it goes into). */
  existingAncestor: string;
  /** What it holds besides lock files. */
  foreign: string[];
}

/**
 * Checks that the data directory is (or can be made) a directory of this user's on a disk, without
 * writing: not under a kernel filesystem, every existing part a directory, and writable.
 */
export async function inspectDataDirectory(directory: string): Promise<DataDirectoryState> {
  let existing = directory;
  for (;;) {
    try {
      await fs.stat(existing);
      break;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') throw new CliError(`--data ${directory}: a part of that path is a file, not a directory`, EXIT.noInput);
      if (code === 'EACCES') throw new CliError(`--data ${directory}: ${existing} cannot be looked at by this user (EACCES): choose another directory or run as its owner`, EXIT.noPermission);
      if (code !== 'ENOENT') throw error;
      existing = path.dirname(existing);
    }
  }
  // A symlink may lead into /proc: judge the real place.
  const real = path.join(await fs.realpath(existing), path.relative(existing, directory));
  for (const root of KERNEL_FILESYSTEMS) {
    if (real === root || real.startsWith(`${root}/`)) {
      throw new UsageError(`--data ${directory}: ${real} is under ${root}, a kernel filesystem, not a disk: give a directory on a disk`);
    }
  }
  if (!(await fs.stat(existing)).isDirectory()) {
    throw new CliError(`--data ${directory}: ${existing} is a file, not a directory`, existing === directory ? EXIT.cannotCreate : EXIT.noInput);
  }
  try {
    await fs.access(existing, fsConstants.W_OK | fsConstants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const what = existing === directory ? 'is not writable by this user' : `cannot be created: ${existing} is not writable by this user`;
    if (code === 'EROFS') throw new CliError(`--data ${directory}: ${existing} is on a read-only filesystem: give a directory on a writable disk`, EXIT.ioError);
    throw new CliError(`--data ${directory} ${what} (${code}): choose another directory or run as its owner`, EXIT.noPermission);
  }
  if (existing !== directory) return { exists: false, initialised: false, existingAncestor: existing, foreign: [] };
  const entries = await fs.readdir(directory);
  return { exists: true, initialised: entries.includes('cluster.json'), existingAncestor: directory, foreign: entries.filter((entry) => !isLockEntry(entry)) };
}

/**
 * A data directory without cluster.json must be empty: never provision into someone's files (e.g.
 * `--data .`), nor over the remains of a first run that was killed while it created the array.
 * Asked under the lock, so a first run still creating its array is named as in use instead.
 */
export function refuseForeignFiles(directory: string, state: DataDirectoryState): void {
  if (state.initialised || state.foreign.length === 0) return;
  throw new CliError(
    `--data ${directory} holds files but no cluster.json (not an ftvm data directory, or a first run that was cut short): give a new or empty directory, or remove this one`,
    EXIT.cannotCreate,
  );
}

/** The lock and its transient drafts: a data directory holding only these counts as empty. */
export function isLockEntry(name: string): boolean {
  return name === LOCK_FILE || name.startsWith(`.${LOCK_FILE}.`) || name.startsWith(`${LOCK_FILE}.stale.`);
}

/**
 * Refuses a size whose array metadata would not fit on the filesystem now (the checksum table,
 * 1/1024 of each member's data area, is written in full at creation); returns a warning when the
 * volumes, once written, would not fit (member files are sparse and grow as volumes are written).
 */
export async function checkFreeSpace(where: string, sizeBytes: number): Promise<string | null> {
  const memberDataBytes = memberDataBytesFor({ level: 'raid5', memberCount: UP_MEMBER_COUNT, volumeBytes: [sizeBytes, sizeBytes] });
  // Superblocks, bitmap slots and the alignment of the data area: a few MiB per member at most.
  const metadataBytes = UP_MEMBER_COUNT * (Math.ceil(memberDataBytes / 1024) + 4 * 1024 * 1024);
  const fullBytes = UP_MEMBER_COUNT * memberDataBytes + metadataBytes;
  const stats = await fs.statfs(where);
  const freeBytes = stats.bavail * stats.bsize;
  if (metadataBytes > freeBytes) {
    throw new CliError(
      `--size ${formatSize(sizeBytes)}: the array's metadata needs about ${approximately(metadataBytes)} on the filesystem of ${where}, which has ${approximately(freeBytes)} free (ENOSPC): give a smaller --size or another --data`,
      EXIT.ioError,
    );
  }
  if (fullBytes > freeBytes) {
    return `the member files can grow to ${approximately(fullBytes)} as the volumes are written, and ${where} has ${approximately(freeBytes)} free: writes will fail once it is full`;
  }
  return null;
}

/** `307.2 GiB`: free space and estimates read better rounded. */
function approximately(bytes: number): string {
  for (const [unit, factor] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2]] as const) {
    if (bytes >= factor) return `${(bytes / factor).toFixed(1)} ${unit}`;
  }
  return `${Math.ceil(bytes / 1024)} KiB`;
}

/**
 * Binds every port briefly, so a port another process holds stops `ftvm up` before any node
 * starts (a node itself keeps retrying a port in use: during a failback its partner may still hold
 * it for a moment).
 */
export async function checkPortsFree(host: string, basePort: number): Promise<void> {
  for (const { node, role, port } of upPorts(basePort)) {
    const server = net.createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port, host, exclusive: true }, () => resolve());
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') {
        throw new CliError(`port ${port} on ${host} (node ${node}'s ${role}) is in use by another process: stop it, or give another --base-port`, EXIT.unavailable);
      }
      if (code === 'EADDRNOTAVAIL') throw new CliError(`--host ${host}: not an address of this machine (EADDRNOTAVAIL): give one of its addresses, e.g. 127.0.0.1`, EXIT.noHost);
      if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') throw new CliError(`--host ${host}: the name does not resolve (${code}): give an address or a known host name`, EXIT.noHost);
      if (code === 'EACCES') throw new CliError(`port ${port}: ports below 1024 need root: run as root or give --base-port 1024 or above`, EXIT.noPermission);
      throw error;
    } finally {
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    }
  }
}

/** What the lock file says about the `ftvm up` that holds it. */
interface LockHolder extends ProcessIdentity {
  startedAt: string;
  host: string;
  nbdHost: string;
  basePort: number;
}

function parseHolder(text: string): LockHolder | null {
  try {
    const holder = JSON.parse(text) as Partial<LockHolder>;
    return typeof holder.pid === 'number' && typeof holder.processStart === 'number' && typeof holder.host === 'string' ? (holder as LockHolder) : null;
  } catch {
    return null;
  }
}

async function readHolder(file: string): Promise<LockHolder | null> {
  return parseHolder(await fs.readFile(file, 'utf8').catch(() => ''));
}

function sameProcess(x: ProcessIdentity, y: ProcessIdentity): boolean {
  return x.pid === y.pid && x.processStart === y.processStart && x.host === y.host;
}

/**
 * `<data>/up.lock`, naming the `ftvm up` that runs on the directory by pid and process start time.
 * A lock whose process is gone (a SIGKILLed `ftvm up`, its pid maybe reused since) is stale and
 * taken over at once; one written on another host (a shared filesystem) cannot be judged from here
 * and is respected.
 */
export class DataDirectoryLock {
  private released = false;

  private constructor(
    readonly file: string,
    private readonly holder: LockHolder,
  ) {}

  static async acquire(directory: string, about: { nbdHost: string; basePort: number }): Promise<DataDirectoryLock> {
    const file = path.join(directory, LOCK_FILE);
    const holder: LockHolder = { ...thisProcess(), startedAt: new Date().toISOString(), ...about };
    // The lock appears whole or not at all: written aside, then linked into place (link fails if
    // the name exists, which is the atomic test-and-set).
    const draft = path.join(directory, `.${LOCK_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
    await fs.writeFile(draft, `${JSON.stringify(holder)}\n`, { mode: 0o600 });
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          await fs.link(draft, file);
          return new DataDirectoryLock(file, holder);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        }
        const found = await readHolder(file);
        if (found && processAlive(found) !== false) throw lockedBy(directory, file, found);
        // Stale. Move it aside under a name of our own: of several `ftvm up` that found the same
        // stale lock, one moves it, the others find the name gone and try again.
        const aside = `${file}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
        try {
          await fs.rename(file, aside);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw error;
        }
        const moved = await readHolder(aside);
        if (moved && (!found || !sameProcess(moved, found)) && processAlive(moved) !== false) {
          // Between reading and moving, another `ftvm up` took the lock: give it back.
          await fs.link(aside, file).catch(() => undefined);
          await fs.rm(aside, { force: true });
          throw lockedBy(directory, file, moved);
        }
        await fs.rm(aside, { force: true });
      }
      throw new CliError(`--data ${directory}: could not take ${file} (other ftvm up commands keep starting on it)`, EXIT.unavailable);
    } finally {
      await fs.rm(draft, { force: true });
    }
  }

  /** Removes the lock if it is still this process's. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const found = await readHolder(this.file);
    if (found && sameProcess(found, this.holder)) await fs.rm(this.file, { force: true });
  }

  /** The same, for process 'exit' handlers, which cannot wait. */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    try {
      const found = parseHolder(readFileSync(this.file, 'utf8'));
      if (found && sameProcess(found, this.holder)) unlinkSync(this.file);
    } catch {
      // Gone already.
    }
  }
}

function lockedBy(directory: string, file: string, holder: LockHolder): CliError {
  const where = holder.nbdHost && holder.basePort ? `, NBD on ${holder.nbdHost}:${holder.basePort}-${holder.basePort + UP_NODES.length - 1}` : '';
  const local = holder.host === thisProcess().host;
  const who = `ftvm up (pid ${holder.pid}${local ? '' : ` on host ${holder.host}`}, since ${holder.startedAt}${where})`;
  const what = local ? `stop it (Ctrl-C there, or kill ${holder.pid}) or give another --data` : `stop it there, or remove ${file} if that host's ftvm up is gone`;
  return new CliError(`--data ${directory} is in use by ${who}: ${what}`, EXIT.unavailable);
}
