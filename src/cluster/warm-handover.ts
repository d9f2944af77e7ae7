// The giving side of a warm handover (failback): a node handing a volume to another sends the
// volume's clean resident pages there as clean write pages, between resync begin and resync end,
// in runs of consecutive pages, so the receiver's first reads take no page-in (the receiving side
// is memory/resync-stage.ts).
//
//   live pass     while the volume is still served: resync begin, then every page clean now, each
//                 under a read lock while its bytes travel (neither replaced nor written meanwhile);
//                 the version each was sent at is remembered
//   paused pass   once paused and drained: everything modified to the disks, then the clean pages
//                 not sent yet or changed since, then resync end (a page written in between was
//                 mirrored to the receiver too, which drops its staged copy)
//
// So the pause covers only what changed during the live pass. Best effort: stops when the receiver
// has no free frame left, and a failure costs the receiver page-ins, nothing more.
import type { MemoryManager, PagePointer } from '../memory/index.js';
import type { Logger } from '../observe/index.js';
import { MAX_PAGE_BYTES, MessageType, Status, type Message, type PartnerLink } from '../partner/index.js';
import { describe, isOk } from './remote-array.js';

/** Write pages of a warm handover in flight at once: enough to keep the link busy, bounded memory. */
const COPY_RUNS_IN_FLIGHT = 8;

/** A handover under way, between its live and its paused pass. */
interface ResidentCopy {
  /** The link to the receiver it began on: a new link (or another receiver) begins again. */
  link: PartnerLink;
  epoch: number;
  /** Page → the version it was sent at. */
  sentVersions: Map<number, number>;
  sent: number;
  staged: number;
  /** The receiver answered no space: nothing more is sent. */
  full: boolean;
}

export interface HandoverVolume {
  readonly allocation: { readonly guid: string; readonly name: string };
  readonly pageBytes: number;
  /** Non-null while this node serves the volume. */
  readonly memory: unknown;
}

export class WarmHandover {
  private readonly copies = new Map<string, ResidentCopy>();
  /** Per volume whose pages are being sent now: pages sent in this pass, of the resident pages it found. */
  private readonly passes = new Map<string, { sent: number; total: number }>();

  constructor(
    private readonly manager: MemoryManager,
    private readonly linkTo: (nodeId: number) => PartnerLink | null,
    private readonly epoch: () => number,
    /** warmFailback in the config: false hands volumes over with a cold memory. */
    private readonly enabled: boolean,
    private readonly name: (nodeId: number) => string,
    private readonly logger: Logger,
  ) {}

  /** How far the pass copying `guid`'s pages is (`ftvm status`); null when none runs. */
  progressOf(guid: string): { sent: number; total: number } | null {
    return this.passes.get(guid) ?? null;
  }

  /** One pass of the handover of `entry` to `to`; the count of pages staged there so far. Never throws. */
  async copyResident(entry: HandoverVolume, to: number, phase: 'live' | 'paused'): Promise<number> {
    const { guid, name } = entry.allocation;
    const link = this.linkTo(to);
    // A live pass starts afresh: one left by a handover that failed between its passes is no guide.
    let copy = phase === 'paused' ? this.copies.get(guid) : undefined;
    if (copy && copy.link !== link) copy = undefined;
    this.copies.delete(guid);
    if (!link || !entry.memory || !this.enabled) return 0;
    try {
      if (!copy) {
        copy = { link, epoch: this.epoch(), sentVersions: new Map(), sent: 0, staged: 0, full: false };
        expectOk(await link.request({ type: MessageType.ResyncBegin, epoch: copy.epoch, allocationCount: 1, pageCount: this.manager.residentPages }), 'resync begin');
      }
      if (phase === 'paused') await this.manager.flush();
      await this.sendCleanPages(entry, copy);
      if (phase === 'live') {
        this.copies.set(guid, copy);
        return copy.staged;
      }
      expectOk(await link.request({ type: MessageType.ResyncEnd, epoch: copy.epoch, allocationCount: 1, pageCount: copy.sent }), 'resync end');
      return copy.staged;
    } catch (error) {
      this.logger.warn(`volume ${name}: copying resident pages to node ${this.name(to)} failed (${(error as Error).message}); it pages them in instead`);
      return 0;
    } finally {
      this.passes.delete(guid);
    }
  }

  /** The clean pages not sent at their current version yet, COPY_RUNS_IN_FLIGHT runs at a time. */
  private async sendCleanPages(entry: HandoverVolume, copy: ResidentCopy): Promise<void> {
    const { guid } = entry.allocation;
    const pageBytes = entry.pageBytes;
    const maxRun = Math.max(1, MAX_PAGE_BYTES / pageBytes);
    const candidates = this.manager.residentPageNumbers(guid);
    const pass = { sent: 0, total: candidates.length };
    this.passes.set(guid, pass);
    let next = 0;
    const lockRun = (): Array<PagePointer & { version: number }> => {
      const run: Array<PagePointer & { version: number }> = [];
      while (next < candidates.length && run.length < maxRun) {
        const virtualPage = candidates[next] as number;
        const last = run[run.length - 1];
        if (last && last.virtualPage + 1 !== virtualPage) break;
        next++;
        const pointer = this.manager.lockCleanPage(guid, virtualPage);
        if (pointer && copy.sentVersions.get(virtualPage) === pointer.version) {
          void this.manager.releasePointer(pointer);
          if (run.length > 0) break;
          continue;
        }
        if (pointer) run.push(pointer);
        else if (run.length > 0) break;
      }
      return run;
    };
    const sender = async (): Promise<void> => {
      while (!copy.full) {
        const run = lockRun();
        if (run.length === 0) return;
        try {
          const first = (run[0] as PagePointer).virtualPage;
          copy.sent += run.length;
          pass.sent += run.length;
          const answer = await copy.link.request({ type: MessageType.WritePage, allocation: guid, virtualPage: first, version: 0, pageBytes, offset: 0, length: run.length * pageBytes, dirty: false, zeroFill: false, data: run.map((pointer) => pointer.data) });
          if (answer.type === MessageType.CommandComplete && answer.status === Status.NoSpace) copy.full = true;
          else expectOk(answer, 'write page');
          if (!copy.full) {
            copy.staged += run.length;
            for (const pointer of run) copy.sentVersions.set(pointer.virtualPage, pointer.version);
          }
        } finally {
          for (const pointer of run) void this.manager.releasePointer(pointer);
        }
      }
    };
    await Promise.all(Array.from({ length: COPY_RUNS_IN_FLIGHT }, sender));
  }
}

function expectOk(answer: Message, what: string): void {
  if (!isOk(answer)) throw new Error(`${what} answered ${describe(answer)}`);
}
