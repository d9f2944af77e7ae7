// Readers-writer locks keyed by stripe number. A raid5 stripe update reads old data and parity and
// writes new ones; two updates of one stripe at once would each compute parity from the other's
// old data. Readers share a stripe; a writer has it alone; waiters are served in arrival order so a
// stream of reads cannot starve a write. Entries exist only while a stripe is locked.

interface Entry {
  readers: number;
  writer: boolean;
  queue: Array<{ exclusive: boolean; grant: () => void }>;
}

export class StripeLocks {
  private readonly entries = new Map<number, Entry>();

  get lockedCount(): number {
    return this.entries.size;
  }

  async withShared<T>(stripe: number, work: () => Promise<T>): Promise<T> {
    await this.acquire(stripe, false);
    try {
      return await work();
    } finally {
      this.release(stripe, false);
    }
  }

  async withExclusive<T>(stripe: number, work: () => Promise<T>): Promise<T> {
    await this.acquire(stripe, true);
    try {
      return await work();
    } finally {
      this.release(stripe, true);
    }
  }

  /**
   * Locks several keys exclusively. Every key is queued for synchronously, before any wait: a caller
   * is then behind every earlier caller on every key they share, so callers get overlapping ranges
   * in call order and the waits can never form a cycle.
   */
  async withExclusiveRange<T>(first: number, last: number, work: () => Promise<T>): Promise<T> {
    const grants: Array<Promise<void>> = [];
    for (let stripe = first; stripe <= last; stripe++) grants.push(this.acquire(stripe, true));
    await Promise.all(grants);
    try {
      return await work();
    } finally {
      for (let stripe = first; stripe <= last; stripe++) this.release(stripe, true);
    }
  }

  private acquire(stripe: number, exclusive: boolean): Promise<void> {
    let entry = this.entries.get(stripe);
    if (!entry) {
      entry = { readers: 0, writer: false, queue: [] };
      this.entries.set(stripe, entry);
    }
    if (entry.queue.length === 0 && canGrant(entry, exclusive)) {
      take(entry, exclusive);
      return Promise.resolve();
    }
    const queued = entry;
    return new Promise((grant) => queued.queue.push({ exclusive, grant }));
  }

  private release(stripe: number, exclusive: boolean): void {
    const entry = this.entries.get(stripe);
    if (!entry) throw new Error(`stripe ${stripe} released but not locked`);
    if (exclusive) entry.writer = false;
    else entry.readers--;
    while (entry.queue.length > 0 && canGrant(entry, (entry.queue[0] as { exclusive: boolean }).exclusive)) {
      const next = entry.queue.shift() as { exclusive: boolean; grant: () => void };
      take(entry, next.exclusive);
      next.grant();
    }
    if (!entry.writer && entry.readers === 0 && entry.queue.length === 0) this.entries.delete(stripe);
  }
}

function canGrant(entry: Entry, exclusive: boolean): boolean {
  return exclusive ? !entry.writer && entry.readers === 0 : !entry.writer;
}

function take(entry: Entry, exclusive: boolean): void {
  if (exclusive) entry.writer = true;
  else entry.readers++;
}
