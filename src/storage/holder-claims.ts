// Holder claims: which processes have a member file open to write it (a node holding the array, or
// an offline `ftvm raid` command), so that two of them never write the same array at once.
//
// Node has no flock, and a lock must survive kill -9 correctly: a dead holder must not block for
// ever, and a live one must never lose its lock to a newcomer. So no single lock file (removing a
// stale one races with a newcomer creating its own: a second stale-remover can unlink the new, live
// lock). Instead every holder writes its own claim file, uniquely named, into `<member>.holders/`:
//
//   claim    write `.NAME.tmp`, rename it to `NAME` (readers never see a half-written claim)
//   check    then list the directory: any other claim whose process may be alive is a conflict
//   stale    a claim of this host whose pid is gone or was reused (pid + start time, /proc) is
//            removed by whoever finds it; being uniquely named, it can only ever be that dead one
//   release  unlink the own claim (stop, abandon, or the command ends)
//
// Claim-then-list makes two simultaneous claimants safe without a lock: whichever lists last sees
// the other's claim (at worst both see each other and both give way). A claim of another host cannot
// be checked here (alive: null); the caller decides with what else it knows (the cluster's leases).
import { StorageError } from '../core/index.js';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../observe/index.js';
import { processAliveAsync, thisHost, thisProcess, type ProcessIdentity } from './process-identity.js';

/** A node that holds (or opens) the array, or an offline administrative command. */
export type HolderKind = 'node' | 'admin';

export interface HolderClaimRecord extends ProcessIdentity {
  /** The member file the claim was found beside. */
  member: string;
  /** The claim file itself. */
  file: string;
  kind: HolderKind;
  /** The node's name, or the command ('ftvm raid rebuild'). */
  name: string;
  /** Wall-clock time of the claim, for humans. */
  sinceMs: number;
  /** true: alive on this host; false: provably gone; null: another host, cannot tell from here. */
  alive: boolean | null;
}

/** A member file is in use by another holder: the command (or node) refuses to touch it. */
export class MemberInUseError extends StorageError {
  override name = 'MemberInUseError';
  constructor(
    readonly member: string,
    message: string,
  ) {
    super(message);
  }
}

export function claimDirectory(member: string): string {
  return `${member}.holders`;
}

/** `node a (pid 4242 on this host)`, `ftvm raid rebuild (pid 17 on host b2)`. */
export function describeHolder(record: Pick<HolderClaimRecord, 'kind' | 'name' | 'pid' | 'host'>): string {
  const where = record.host === thisHost() ? 'this host' : `host ${record.host || '?'}`;
  return `${record.kind === 'node' ? `node ${record.name}` : record.name} (pid ${record.pid} on ${where})`;
}

/** Every claim beside the members, read-only (nothing removed, nothing created). */
export async function listHolderClaims(members: readonly string[]): Promise<HolderClaimRecord[]> {
  const found = await Promise.all(members.map((member) => claimsOf(member)));
  return found.flat();
}

export class HolderClaim {
  private released = false;

  private constructor(
    readonly members: readonly string[],
    /** Own claim files, one per member whose directory took it. */
    private readonly files: string[],
  ) {}

  /**
   * Writes this process's claim beside every member. A member whose directory cannot take it is
   * skipped with a warning (its lease file would be unwritable there too); none at all is an error,
   * since nobody could then see this holder.
   */
  static async create(members: readonly string[], who: { kind: HolderKind; name: string }, logger?: Logger): Promise<HolderClaim> {
    const identity = thisProcess();
    const body = `${JSON.stringify({ kind: who.kind, name: who.name, pid: identity.pid, processStart: identity.processStart, host: identity.host, sinceMs: Date.now() })}\n`;
    const name = `${identity.host.replace(/[^A-Za-z0-9.-]/g, '-')}_${identity.pid}_${identity.processStart}_${randomBytes(4).toString('hex')}`;
    const files: string[] = [];
    const failures: string[] = [];
    for (const member of new Set(members)) {
      const directory = claimDirectory(member);
      const file = path.join(directory, name);
      const temporary = path.join(directory, `.${name}.tmp`);
      try {
        await writeClaim(directory, temporary, file, body);
        files.push(file);
      } catch (error) {
        await fs.unlink(temporary).catch(() => undefined);
        failures.push(`${directory}: ${(error as Error).message}`);
      }
    }
    if (files.length === 0) throw new MemberInUseError(members[0] ?? '', `cannot record this process as holder of the members: ${failures.join('; ')}`);
    for (const failure of failures) logger?.warn(`holder claim not written: ${failure}`);
    return new HolderClaim(members, files);
  }

  /**
   * The other claims on the members. Claims of this host's dead processes (a holder killed with
   * SIGKILL) are removed on the way: they block nobody.
   */
  async others(): Promise<HolderClaimRecord[]> {
    const own = new Set(this.files);
    const all = await listHolderClaims(this.members);
    const others: HolderClaimRecord[] = [];
    for (const record of all) {
      if (own.has(record.file)) continue;
      if (record.alive === false) await fs.unlink(record.file).catch(() => undefined);
      else others.push(record);
    }
    return others;
  }

  /** Removes other holders' claims (`--force`, or another host's holder known gone by its lease). */
  async remove(records: readonly HolderClaimRecord[]): Promise<void> {
    await Promise.all(records.map((record) => fs.unlink(record.file).catch(() => undefined)));
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await Promise.all(this.files.map((file) => fs.unlink(file).catch(() => undefined)));
    // Leaves no empty directory beside the members; one still holding claims stays (ENOTEMPTY).
    await Promise.all(this.files.map((file) => fs.rmdir(path.dirname(file)).catch(() => undefined)));
  }
}

/** The directory may vanish between mkdir and the write (a releaser's rmdir of it empty): try again. */
async function writeClaim(directory: string, temporary: string, file: string, body: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await fs.mkdir(directory, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
      await fs.writeFile(temporary, body, { flag: 'wx', mode: 0o600 });
      await fs.rename(temporary, file);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw error;
    }
  }
}

async function claimsOf(member: string): Promise<HolderClaimRecord[]> {
  const directory = claimDirectory(member);
  let names: string[];
  try {
    names = await fs.readdir(directory);
  } catch {
    return [];
  }
  const records = await Promise.all(
    names
      .filter((name) => !name.startsWith('.'))
      .map(async (name): Promise<HolderClaimRecord | null> => {
        const file = path.join(directory, name);
        let text: string;
        try {
          text = await fs.readFile(file, 'utf8');
        } catch {
          return null; // released meanwhile
        }
        const record = parseClaim(member, file, text);
        return { ...record, alive: await processAliveAsync(record) };
      }),
  );
  return records.filter((record): record is HolderClaimRecord => record !== null);
}

/** A claim that does not parse names nobody that could be checked: it counts as held by an unknown process. */
function parseClaim(member: string, file: string, text: string): Omit<HolderClaimRecord, 'alive'> {
  let fields: Partial<Record<keyof HolderClaimRecord, unknown>> = {};
  try {
    fields = JSON.parse(text) as typeof fields;
  } catch {
    // below: unknown
  }
  const number = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) ? value : 0);
  const identity = { pid: number(fields.pid), processStart: number(fields.processStart), host: typeof fields.host === 'string' ? fields.host : '' };
  return {
    member,
    file,
    kind: fields.kind === 'node' ? 'node' : 'admin',
    name: typeof fields.name === 'string' ? fields.name : `unreadable claim ${path.basename(file)}`,
    ...identity,
    sinceMs: number(fields.sinceMs),
  };
}
