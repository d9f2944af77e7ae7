// The lease area on the shared disks: one small file beside each RAID member (`<member>.lease`),
// holding the 16 lease slots of docs/storage.md §4.2, slot i copy c at (2i + c) × 4096.
//
// Why beside the members and not inside the array: every node must renew its lease whether or not it
// can reach the array holder (the one process that writes the RAID), so a lease write cannot go
// through the RAID. Each slot has exactly one writer, its node; a write counts once a majority of the
// files hold it, and a reader takes the newest copy over all files, so any reader's majority meets
// any writer's.
import fs from 'node:fs';
import { promisify } from 'node:util';
import { FormatError, LEASE_COPY_BYTES, LEASE_SLOT_COUNT, encodeLease, newestLease, processAlive, thisProcess as storageProcess, type Lease } from '../storage/index.js';
import type { LeaseDisk, ProcessIdentity } from './lease.js';
import { LeaseFileThread } from './lease-file-thread.js';

const open = promisify(fs.open);
const close = promisify(fs.close);
const read = promisify(fs.read);
const ftruncate = promisify(fs.ftruncate);
const fstat = promisify(fs.fstat);

export const LEASE_FILE_BYTES = LEASE_SLOT_COUNT * 2 * LEASE_COPY_BYTES;

export function leaseFilePath(memberPath: string): string {
  return `${memberPath}.lease`;
}

interface LeaseFile {
  path: string;
  fd: number;
  /** Reads and writes go through it, not libuv's threadpool (lease-file-thread.ts). */
  thread: LeaseFileThread;
}

export class LeaseFiles implements LeaseDisk {
  private constructor(private readonly files: LeaseFile[]) {}

  /** Opens (creating where missing) the lease file of every member; needs a majority. */
  static async open(memberPaths: readonly string[]): Promise<LeaseFiles> {
    const files: LeaseFile[] = [];
    const failures: string[] = [];
    for (const member of memberPaths) {
      const path = leaseFilePath(member);
      try {
        const fd = await open(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
        if ((await fstat(fd)).size < LEASE_FILE_BYTES) await ftruncate(fd, LEASE_FILE_BYTES);
        let thread: LeaseFileThread;
        try {
          thread = await LeaseFileThread.start(fd, path);
        } catch (error) {
          await close(fd).catch(() => undefined);
          throw error;
        }
        files.push({ path, fd, thread });
      } catch (error) {
        failures.push(`${path}: ${(error as Error).message}`);
      }
    }
    if (files.length < majority(memberPaths.length)) {
      for (const file of files) await closeFile(file);
      throw new Error(`cannot open a majority of the lease files: ${failures.join('; ')}`);
    }
    return new LeaseFiles(files);
  }

  async readAll(): Promise<Array<Lease | null>> {
    const perFile = await Promise.all(this.files.map((file) => file.thread.read(LEASE_FILE_BYTES).catch(() => null)));
    const slots: Array<Lease | null> = [];
    for (let slot = 0; slot < LEASE_SLOT_COUNT; slot++) {
      let newest: Lease | null = null;
      for (const area of perFile) {
        if (!area) continue;
        const lease = decodeSlot(area, slot);
        if (lease && (!newest || lease.sequence > newest.sequence)) newest = lease;
      }
      slots.push(newest);
    }
    return slots;
  }

  async write(lease: Lease): Promise<void> {
    const bytes = encodeLease(lease);
    const at = (lease.slot * 2 + (lease.sequence % 2)) * LEASE_COPY_BYTES;
    const results = await Promise.allSettled(
      this.files.map((file) => file.thread.write(bytes, at)),
    );
    const written = results.filter((result) => result.status === 'fulfilled').length;
    if (written < majority(this.files.length)) {
      const reasons = results.flatMap((result, index) => (result.status === 'rejected' ? [`${this.files[index]?.path}: ${(result.reason as Error).message}`] : []));
      throw new Error(`lease written to ${written} of ${this.files.length} lease files: ${reasons.join('; ')}`);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.files.splice(0).map(closeFile));
  }
}

/** A descriptor whose thread did not stop stays open: closing it under a blocked write could aim that write at a reused number. */
async function closeFile(file: LeaseFile): Promise<void> {
  if (await file.thread.close()) await close(file.fd).catch(() => undefined);
}

function majority(count: number): number {
  return Math.floor(count / 2) + 1;
}

async function readFile(fd: number): Promise<Buffer> {
  const area = Buffer.alloc(LEASE_FILE_BYTES);
  const { bytesRead } = await read(fd, area, 0, LEASE_FILE_BYTES, 0);
  if (bytesRead < LEASE_FILE_BYTES) area.fill(0, bytesRead);
  return area;
}

function decodeSlot(area: Buffer, slot: number): Lease | null {
  const at = slot * 2 * LEASE_COPY_BYTES;
  try {
    return newestLease(area.subarray(at, at + LEASE_COPY_BYTES), area.subarray(at + LEASE_COPY_BYTES, at + 2 * LEASE_COPY_BYTES));
  } catch (error) {
    if (error instanceof FormatError) return null;
    throw error;
  }
}

/** This process, as written into its lease. */
export function thisProcess(): ProcessIdentity {
  return storageProcess();
}

/**
 * Proof of death for a lease written on this host: its pid is gone, or now belongs to a process
 * that started at another time. Another host's lease can only run out (null: cannot tell).
 */
export function processGone(lease: Lease): boolean | null {
  const alive = processAlive(lease);
  return alive === null ? null : !alive;
}

/** The lease slots as one lease file holds them (index = slot), read without writing anything. */
export interface LeaseFileView {
  path: string;
  /** Why the file could not be read ('' if it was); a missing file is not an error: no lease there. */
  problem: string;
  slots: Array<Lease | null>;
}

/**
 * Reads the lease files of `memberPaths` read-only: opened 'r', never created or extended, so an
 * offline inspection leaves the lease area exactly as it found it (LeaseFiles.open would create and
 * size missing files).
 */
export async function readLeaseFiles(memberPaths: readonly string[]): Promise<LeaseFileView[]> {
  return Promise.all(
    memberPaths.map(async (member) => {
      const path = leaseFilePath(member);
      let fd: number;
      try {
        fd = await open(path, 'r');
      } catch (error) {
        const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
        return { path, problem: missing ? '' : (error as Error).message, slots: [] };
      }
      try {
        const area = await readFile(fd);
        return { path, problem: '', slots: [...Array(LEASE_SLOT_COUNT).keys()].map((slot) => decodeSlot(area, slot)) };
      } catch (error) {
        return { path, problem: (error as Error).message, slots: [] };
      } finally {
        await close(fd).catch(() => undefined);
      }
    }),
  );
}
