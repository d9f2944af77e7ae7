// The model of the volume: which bytes a correct run may show at any moment.
//
// Every client write is recorded with its bytes and, per page, when it was applied: the moment its
// write pointer was released, seen through the pointer API. Page locks make that a total order per
// page, and it need not match the order of acknowledgements (a write that spans pages, or waits for
// FUA, is acknowledged late), so the model orders by application, not by acknowledgement:
//
//   floor[byte]        the value of the acknowledged write applied last to it (zero at first)
//   allowed(byte, t)   floor as of acknowledgement count t, or any write applied after that floor write
//
// A read that started at t, the disks after a flush that started at t, or what survives a crash now
// (t = now) may hold only allowed values. The floor itself is the fast path: a view equal to the
// floor is allowed, and only differing bytes are looked up in the write history.

export interface WriteRecord {
  readonly id: number;
  readonly offset: number;
  readonly data: Buffer;
  readonly fua: boolean;
  /** Page → application number (1, 2, … across the volume); absent while not yet applied there. */
  readonly applied: Map<number, number>;
  /** The acknowledgement count right after this one was acknowledged; null while in flight. */
  ackedAt: number | null;
}

/** Application numbers are kept per byte in 16 bits. */
const APPLICATIONS_MAX = 0xffff;
/** Compared in blocks this size before the byte-by-byte lookup. */
const COMPARE_BYTES = 256;

/** The writes that can explain bytes of one page, newest application first. */
interface PageContext {
  page: number;
  since: number;
  applied: WriteRecord[];
  ackedAfter: WriteRecord[];
  ackedBefore: WriteRecord[];
  required: WriteRecord | null;
}

export class VolumeModel {
  readonly floor: Buffer;
  /** Per byte: the application number of the floor's write (0: never written). */
  private readonly floorApplication: Uint16Array;
  readonly writes: WriteRecord[] = [];
  readonly inFlight = new Set<WriteRecord>();
  acknowledgements = 0;
  private applications = 0;
  /** Per COMPARE_BYTES chunk: the largest floorApplication in it. */
  private readonly floorChunkMaximum: Uint32Array;

  constructor(
    readonly sizeBytes: number,
    readonly pageBytes: number,
  ) {
    this.floor = Buffer.alloc(sizeBytes);
    this.floorApplication = new Uint16Array(sizeBytes);
    this.floorChunkMaximum = new Uint32Array(Math.ceil(sizeBytes / COMPARE_BYTES));
  }

  begin(offset: number, data: Buffer, fua: boolean): WriteRecord {
    const record: WriteRecord = { id: this.writes.length + 1, offset, data, fua, applied: new Map(), ackedAt: null };
    this.writes.push(record);
    this.inFlight.add(record);
    return record;
  }

  /**
   * A write pointer on `virtualPage` was released with `bytes` written at `inPage`: finds the write
   * it belongs to (same range on that page, same bytes, not applied there yet). Null if none fits.
   */
  applied(virtualPage: number, inPage: number, bytes: Buffer): WriteRecord | null {
    const start = virtualPage * this.pageBytes + inPage;
    const end = start + bytes.length;
    const pageStart = virtualPage * this.pageBytes;
    for (const record of this.inFlight) {
      if (record.applied.has(virtualPage)) continue;
      const from = Math.max(record.offset, pageStart);
      const to = Math.min(record.offset + record.data.length, pageStart + this.pageBytes);
      if (from !== start || to !== end) continue;
      if (!record.data.subarray(start - record.offset, end - record.offset).equals(bytes)) continue;
      if (this.applications === APPLICATIONS_MAX) throw new Error(`more than ${APPLICATIONS_MAX} page writes in one seed`);
      record.applied.set(virtualPage, ++this.applications);
      return record;
    }
    return null;
  }

  /** The write is acknowledged: its bytes become the floor where it was applied last. Returns an error, or null. */
  acknowledged(record: WriteRecord): string | null {
    this.inFlight.delete(record);
    record.ackedAt = ++this.acknowledgements;
    const end = record.offset + record.data.length;
    for (let page = Math.floor(record.offset / this.pageBytes); page * this.pageBytes < end; page++) {
      const application = record.applied.get(page);
      if (application === undefined) return `write #${record.id} was acknowledged but never applied to page ${page}`;
      const from = Math.max(record.offset, page * this.pageBytes);
      const to = Math.min(end, (page + 1) * this.pageBytes);
      for (let chunk = Math.floor(from / COMPARE_BYTES); chunk * COMPARE_BYTES < to; chunk++) {
        const chunkFrom = Math.max(from, chunk * COMPARE_BYTES);
        const chunkTo = Math.min(to, (chunk + 1) * COMPARE_BYTES);
        if ((this.floorChunkMaximum[chunk] as number) < application) {
          // Applied after everything acknowledged in this chunk: all of it is the floor now.
          record.data.copy(this.floor, chunkFrom, chunkFrom - record.offset, chunkTo - record.offset);
          this.floorApplication.fill(application, chunkFrom, chunkTo);
          this.floorChunkMaximum[chunk] = application;
          continue;
        }
        for (let byte = chunkFrom; byte < chunkTo; byte++) {
          if ((this.floorApplication[byte] as number) > application) continue;
          this.floorApplication[byte] = application;
          this.floor[byte] = record.data[byte - record.offset] as number;
        }
      }
    }
    return null;
  }

  /**
   * Why `view` (the volume's bytes from `offset`) could not have been seen by an observation that
   * began at acknowledgement count `since`, or null if it could. `required` must be in it as well
   * (a FUA write on the disks).
   */
  explainWrong(offset: number, view: Buffer, since: number, required?: WriteRecord): string | null {
    for (let at = 0; at < view.length; ) {
      const page = Math.floor((offset + at) / this.pageBytes);
      const pageEnd = Math.min(view.length, (page + 1) * this.pageBytes - offset);
      if (view.compare(this.floor, offset + at, offset + pageEnd, at, pageEnd) === 0) {
        at = pageEnd;
        continue;
      }
      let context: PageContext | null = null;
      // Chunks aligned on the volume, so that each has its floor maximum at hand.
      for (let chunk = at; chunk < pageEnd; ) {
        const end = Math.min(pageEnd, (Math.floor((offset + chunk) / COMPARE_BYTES) + 1) * COMPARE_BYTES - offset);
        if (view.compare(this.floor, offset + chunk, offset + end, chunk, end) === 0) {
          chunk = end;
          continue;
        }
        context ??= this.pageContext(page, offset + at, offset + pageEnd, since, required);
        const wrong = this.explainChunk(context, offset + chunk, view.subarray(chunk, end));
        if (wrong) return wrong;
        chunk = end;
      }
      at = pageEnd;
    }
    return null;
  }

  /** The writes that matter for bytes [from, to) of one page, for an observation that began at `since`. */
  private pageContext(page: number, from: number, to: number, since: number, required?: WriteRecord): PageContext {
    const applied = this.writes
      .filter((record) => record.applied.has(page) && record.offset < to && record.offset + record.data.length > from)
      .sort((a, b) => (b.applied.get(page) as number) - (a.applied.get(page) as number));
    return {
      page,
      since,
      applied,
      // The current floor is the floor as of `since`, except where writes were acknowledged after it.
      ackedAfter: applied.filter((record) => record.ackedAt !== null && record.ackedAt > since),
      ackedBefore: applied.filter((record) => record.ackedAt !== null && record.ackedAt <= since),
      required: required?.applied.has(page) ? required : null,
    };
  }

  /** The application number of the floor's write for `byte` as of the context's `since` (and its required write). */
  private floorThen(context: PageContext, byte: number): number {
    let floor: number = this.floorApplication[byte] as number;
    if (context.ackedAfter.some((record) => covers(record, byte))) {
      floor = 0;
      for (const record of context.ackedBefore) if (covers(record, byte)) floor = Math.max(floor, record.applied.get(context.page) as number);
    }
    if (context.required && covers(context.required, byte)) floor = Math.max(floor, context.required.applied.get(context.page) as number);
    return floor;
  }

  /** explainWrong for a chunk within one page that differs from the floor. */
  private explainChunk(context: PageContext, offset: number, view: Buffer): string | null {
    const end = offset + view.length;
    const simple = context.ackedAfter.length === 0 && context.required === null;
    let chunkFloor = simple ? (this.floorChunkMaximum[Math.floor(offset / COMPARE_BYTES)] as number) : 0;
    if (!simple) for (let byte = offset; byte < end; byte++) chunkFloor = Math.max(chunkFloor, this.floorThen(context, byte));
    // Most often the whole chunk is one newer write's bytes: one comparison explains it.
    for (const record of context.applied) {
      if ((record.applied.get(context.page) as number) < chunkFloor) break;
      if (record.offset <= offset && record.offset + record.data.length >= end && view.compare(record.data, offset - record.offset, end - record.offset) === 0) return null;
    }
    for (let byte = offset; byte < end; byte++) {
      const value = view[byte - offset] as number;
      if (value === this.floor[byte]) continue;
      const floor = simple ? (this.floorApplication[byte] as number) : this.floorThen(context, byte);
      if (floor === 0 && value === 0) continue;
      let explained = false;
      for (const record of context.applied) {
        if ((record.applied.get(context.page) as number) < floor) break;
        if (covers(record, byte) && record.data[byte - record.offset] === value) {
          explained = true;
          break;
        }
      }
      if (!explained) return this.story(byte, value, context.since, context.applied);
    }
    return null;
  }

  private story(byte: number, value: number, since: number, candidates: readonly WriteRecord[]): string {
    const page = Math.floor(byte / this.pageBytes);
    const writers = candidates
      .filter((record) => covers(record, byte))
      .map((record) => {
        const state = record.ackedAt === null ? 'in flight' : record.ackedAt <= since ? 'acknowledged before' : 'acknowledged during';
        return `#${record.id} ${hex(record.data[byte - record.offset] as number)} (${state}, applied ${record.applied.get(page) ?? 'not yet'})`;
      });
    return `byte ${byte} (page ${page}) holds ${hex(value)}; acknowledged value ${hex(this.floor[byte] as number)}; writes of it: ${writers.join(', ') || 'none'}`;
  }
}

function covers(record: WriteRecord, byte: number): boolean {
  return byte >= record.offset && byte < record.offset + record.data.length;
}

function hex(value: number): string {
  return `0x${value.toString(16).padStart(2, '0')}`;
}
