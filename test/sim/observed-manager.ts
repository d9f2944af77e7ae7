// The real memory manager, watched through its pointer API: every pointer it hands out is entered in
// a lock table, so a page write-locked twice, or read while write-locked, is caught the moment the
// second pointer is granted; every released modification is matched to the client write it belongs
// to, which gives the model the order in which writes were applied to each page.
//
// A pointer counts as held until its release resolves, since the manager keeps the lock while the
// change travels to the partners (the frame must not change under a frame not yet sent).
import { MemoryManager, type PagePointer } from '../../src/memory/index.js';
import type { VolumeModel } from './model.js';

interface Holders {
  readers: number;
  writers: number;
}

export class ObservedMemoryManager extends MemoryManager {
  private readonly holders = new Map<number, Holders>();
  model: VolumeModel | null = null;
  onViolation: (message: string) => void = () => undefined;

  override async obtainReadPointer(guid: string, virtualPage: number): Promise<PagePointer> {
    const pointer = await super.obtainReadPointer(guid, virtualPage);
    const holders = this.holdersOf(virtualPage);
    if (holders.writers > 0) this.onViolation(`page ${virtualPage}: read pointer granted while it is write-locked`);
    holders.readers++;
    return pointer;
  }

  override async obtainWritePointer(guid: string, virtualPage: number, pageIn = true): Promise<PagePointer> {
    const pointer = await super.obtainWritePointer(guid, virtualPage, pageIn);
    this.granted(virtualPage);
    return pointer;
  }

  private granted(virtualPage: number): void {
    const holders = this.holdersOf(virtualPage);
    if (holders.writers > 0) this.onViolation(`page ${virtualPage}: write pointer granted while another write pointer holds it`);
    if (holders.readers > 0) this.onViolation(`page ${virtualPage}: write pointer granted while ${holders.readers} read pointer(s) hold it`);
    holders.writers++;
  }

  override tryObtainWritePointer(guid: string, virtualPage: number, pageIn = true): PagePointer | null {
    const pointer = super.tryObtainWritePointer(guid, virtualPage, pageIn);
    if (pointer) this.granted(virtualPage);
    return pointer;
  }

  override async releasePointer(pointer: PagePointer, modified?: { offset: number; length: number }): Promise<void> {
    // A write pointer's release is a run of one page: the manager calls releaseRun, watched below.
    if (pointer.mode === 'write') return super.releasePointer(pointer, modified);
    try {
      await super.releasePointer(pointer, modified);
    } finally {
      this.holdersOf(pointer.virtualPage).readers--;
    }
  }

  override async releaseRun(pointers: readonly PagePointer[], modified?: { offset: number; length: number }): Promise<void> {
    // Synchronously, before the manager can pass the locks on: the frames hold exactly this write now.
    if (modified && modified.length > 0 && this.model) {
      const pageBytes = (pointers[0] as PagePointer).data.length;
      pointers.forEach((pointer, index) => {
        const from = index === 0 ? modified.offset : 0;
        const to = Math.min(pageBytes, modified.offset + modified.length - index * pageBytes);
        if (!(this.model as VolumeModel).applied(pointer.virtualPage, from, pointer.data.subarray(from, to))) {
          this.onViolation(`page ${pointer.virtualPage}: released a change of ${to - from} bytes at ${from} that no client wrote`);
        }
      });
    }
    try {
      await super.releaseRun(pointers, modified);
    } finally {
      for (const pointer of pointers) this.holdersOf(pointer.virtualPage).writers--;
    }
  }

  /** The resident bytes of a page, or null when it is not resident (or not yet filled). */
  residentBytes(guid: string, virtualPage: number): Buffer | null {
    const page = this.inspectPage(guid, virtualPage);
    return page?.filled ? page.data : null;
  }

  /** Resident with a version not yet on the disks. */
  isDirty(guid: string, virtualPage: number): boolean {
    return this.inspectPage(guid, virtualPage)?.dirty ?? false;
  }

  private holdersOf(virtualPage: number): Holders {
    let holders = this.holders.get(virtualPage);
    if (!holders) {
      holders = { readers: 0, writers: 0 };
      this.holders.set(virtualPage, holders);
    }
    return holders;
  }
}
