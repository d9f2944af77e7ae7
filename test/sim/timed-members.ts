// The shared disks of the cluster simulation: every member file of the array in memory, reachable by
// every node, with I/O as events of the TimedWorld. A write lands (its bytes reach the disk) at an
// instant owned by nobody (the kernel and the disk do it, so it lands even if its process is paused
// or dead); its completion, like a read's, is an event of the process that asked. Nothing is cached
// between: what a completed write put there, every later read sees, as after an fsync. Blocks never
// written read as zeroes (sparse files).
import type { MemberDevice } from '../../src/storage/index.js';
import { copyOf, zeroed } from './slabs.js';
import type { Actor, TimedWorld } from './timed-world.js';

const BLOCK = 4096;

class MemberFile {
  readonly blocks = new Map<number, Buffer>();

  constructor(readonly sizeBytes: number) {}

  read(offset: number, into: Buffer): void {
    for (let done = 0; done < into.length; ) {
      const at = offset + done;
      const block = Math.floor(at / BLOCK);
      const within = at % BLOCK;
      const take = Math.min(BLOCK - within, into.length - done);
      const stored = this.blocks.get(block);
      if (stored) stored.copy(into, done, within, within + take);
      else into.fill(0, done, done + take);
      done += take;
    }
  }

  write(offset: number, data: Buffer): void {
    for (let done = 0; done < data.length; ) {
      const at = offset + done;
      const block = Math.floor(at / BLOCK);
      const within = at % BLOCK;
      const take = Math.min(BLOCK - within, data.length - done);
      let stored = this.blocks.get(block);
      if (!stored) this.blocks.set(block, (stored = zeroed(BLOCK)));
      data.copy(stored, within, done, done + take);
      done += take;
    }
  }
}

export interface DiskHooks {
  /** Latency of one operation, in ms (slow-disk spells make it longer). */
  latencyMs(): number;
}

export class TimedMembers {
  private readonly files = new Map<string, MemberFile>();
  /** Before the world runs (provisioning): operations complete at once. */
  instant = true;

  constructor(
    private readonly world: TimedWorld,
    private readonly hooks: DiskHooks,
  ) {}

  /** Creates a member file (provisioning); refuses an existing one, as FileMember.create does. */
  create(path: string, sizeBytes: number): Promise<MemberDevice> {
    if (this.files.has(path)) return Promise.reject(new Error(`${path} exists`));
    this.files.set(path, new MemberFile(sizeBytes));
    return Promise.resolve(this.device(path, null));
  }

  /** Opens a member file for one process. */
  open(path: string, owner: Actor): Promise<MemberDevice> {
    if (!this.files.has(path)) return Promise.reject(new Error(`${path}: no such file`));
    return Promise.resolve(this.device(path, owner));
  }

  private device(path: string, owner: Actor | null): MemberDevice {
    const file = this.files.get(path) as MemberFile;
    let closed = false;
    const complete = <T>(label: string, land: () => T): Promise<T> => {
      if (closed) return Promise.reject(new Error(`${path}: closed`));
      if (this.instant || !owner) return Promise.resolve(land());
      return new Promise((resolve) => {
        const latency = this.hooks.latencyMs();
        const landAt = latency / 2;
        let value: T;
        this.world.schedule(landAt, null, `${label} lands`, () => {
          value = land();
        });
        this.world.schedule(latency, owner, `${label} done`, () => resolve(value));
      });
    };
    return {
      path,
      read: (offset, into) => complete(`read ${path}@${offset}`, () => file.read(offset, into)),
      write: (offset, data) => {
        // The caller may reuse its buffer once the write completes, not before: copied when it lands.
        const copy = copyOf(data);
        return complete(`write ${path}@${offset}`, () => file.write(offset, copy));
      },
      sync: () => complete(`sync ${path}`, () => undefined),
      sizeBytes: () => Promise.resolve(file.sizeBytes),
      close: async () => {
        closed = true;
      },
    };
  }
}
