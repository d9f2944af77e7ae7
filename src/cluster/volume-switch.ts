// One export of a node, whichever node serves it now: the memory manager here (this node owns the
// volume) or forwarding to the owner. Ownership moves at a takeover or a failback; the switch is
// what lets a client's requests ride over that move instead of failing:
//
//   pause()      new requests wait at the gate (a failback drains the volume before handing it on)
//   drain()      resolves once no request is running on the current target
//   setTarget()  the next attempt goes to the new target; waiting retries wake at once
//   a request that fails with OwnerUnavailableError (the owner's link is gone, or it no longer owns
//   the volume) waits for the next setTarget, or a short pause, and is retried until retryMs
//
// Before a write, trim, zero or flush is acknowledged, the node must still hold its lease: a node
// that lost it may have been taken over, and its acknowledgement would promise what it cannot keep.
import { VolumeError, type Extent, type PinnedRange, type Volume, type ZeroOptions } from '../volume/index.js';
import { systemClock, type Clock } from '../core/index.js';

/** The volume's owner cannot be reached, or no longer owns it: retry once ownership has settled. */
export class OwnerUnavailableError extends VolumeError {
  override name = 'OwnerUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EIO', message, options);
  }
}

/** How long a request waits for a volume to find an owner again before it fails. */
export const DEFAULT_RETRY_MS = 60_000;
/** Between retries when nothing announced a change. */
const RETRY_PAUSE_MS = 100;

export class VolumeSwitch implements Volume {
  readonly flushCoversAllConnections = true;
  private gate: Promise<void> | null = null;
  private openGate: (() => void) | null = null;
  private running = 0;
  private drained: Array<() => void> = [];
  private changed: Array<() => void> = [];

  constructor(
    readonly name: string,
    /** Grows when the volume is resized online (resize); connections check each request against it. */
    public sizeBytes: number,
    private current: Volume,
    /** This node may acknowledge (it holds its lease). */
    private readonly mayAcknowledge: () => boolean,
    private readonly retryMs: number = DEFAULT_RETRY_MS,
    private readonly clock: Clock = systemClock,
  ) {}

  /** The volume grew online: requests up to the new end are accepted, here and by the volume it targets. */
  resize(sizeBytes: number): void {
    this.sizeBytes = sizeBytes;
    const target = this.current as { sizeBytes: number };
    if (target.sizeBytes < sizeBytes) target.sizeBytes = sizeBytes;
  }

  setTarget(target: Volume): void {
    this.current = target;
    for (const wake of this.changed.splice(0)) wake();
  }

  pause(): void {
    if (this.gate) return;
    this.gate = new Promise<void>((resolve) => (this.openGate = resolve));
  }

  resume(): void {
    const open = this.openGate;
    this.gate = null;
    this.openGate = null;
    open?.();
  }

  async drain(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  /**
   * The first attempt without run()'s loop (its async frame and closure per request: a forwarded
   * 4 KiB read costs the forwarding node ~20 µs in all); only a refused attempt goes round it.
   */
  read(offset: number, into: Buffer): Promise<void> {
    if (this.gate) return this.run((volume) => volume.read(offset, into), false);
    this.running++;
    let attempt: Promise<void>;
    try {
      attempt = this.current.read(offset, into);
    } catch (error) {
      attempt = Promise.reject(error as Error);
    }
    return attempt.then(this.readDone, (error: unknown) => {
      this.finished();
      if (!(error instanceof OwnerUnavailableError)) throw error;
      return this.run((volume) => volume.read(offset, into), false);
    });
  }

  private readonly readDone = (): void => this.finished();

  private finished(): void {
    this.running--;
    if (this.running === 0) for (const wake of this.drained.splice(0)) wake();
  }

  /**
   * Lent only while the gate is open and the target lends it; the loan counts as a running request
   * until it is released, so drain() (before a handover or Fig. 9) waits for it like for a read.
   */
  pinRead(offset: number, lengthBytes: number, local: Volume | null = null): PinnedRange | null {
    if (this.gate || (local !== null && this.current !== local)) return null;
    const pinned = this.current.pinRead?.(offset, lengthBytes) ?? null;
    if (pinned === null) return null;
    this.running++;
    return {
      pieces: pinned.pieces,
      release: () => {
        pinned.release();
        this.finished();
      },
    };
  }

  /**
   * The target's synchronous copy, only while the gate is open and the target is `local` (when
   * given): a paused switch (failback, Fig. 9) must hold reads too. Done within this step, it never
   * counts as running: drain() has nothing to wait for.
   */
  readResident(offset: number, into: Buffer, local: Volume | null = null): boolean {
    if (this.gate || (local !== null && this.current !== local)) return false;
    return this.current.readResident?.(offset, into) ?? false;
  }

  write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    return this.run((volume) => volume.write(offset, data, fua), true);
  }

  flush(): Promise<void> {
    return this.run((volume) => volume.flush(), true);
  }

  trim(offset: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.run((volume) => volume.trim(offset, lengthBytes, fua), true);
  }

  zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    return this.run((volume) => volume.zero(offset, lengthBytes, options), true);
  }

  cache(offset: number, lengthBytes: number): Promise<void> {
    return this.run((volume) => volume.cache(offset, lengthBytes), false);
  }

  blockStatus(offset: number, lengthBytes: number): Promise<Extent[]> {
    return this.run((volume) => volume.blockStatus(offset, lengthBytes), false);
  }

  async close(): Promise<void> {
    await this.current.close();
  }

  /** Runs `work` on the target only if that target is `local` (the responder: no forwarding onwards). */
  runIfLocal<T>(local: Volume, work: (volume: Volume) => Promise<T>, acknowledges: boolean): Promise<T> {
    return this.run((volume) => {
      if (volume !== local) throw new OwnerUnavailableError(`volume ${this.name} is not served by this node now`);
      return work(volume);
    }, acknowledges, 0);
  }

  private async run<T>(work: (volume: Volume) => Promise<T>, acknowledges: boolean, retryMs = this.retryMs): Promise<T> {
    const deadline = this.clock.now() + retryMs;
    for (;;) {
      while (this.gate) await this.gate;
      this.running++;
      try {
        const result = await work(this.current);
        if (acknowledges && !this.mayAcknowledge()) throw new VolumeError('EIO', `volume ${this.name}: this node lost its lease; the write is not acknowledged`);
        return result;
      } catch (error) {
        if (!(error instanceof OwnerUnavailableError) || this.clock.now() >= deadline) throw error;
      } finally {
        this.finished();
      }
      await this.nextChange(Math.min(RETRY_PAUSE_MS, Math.max(0, deadline - this.clock.now())));
    }
  }

  private nextChange(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const cancel = this.clock.setTimer(ms, done);
      const changed = this.changed;
      changed.push(done);
      function done(): void {
        cancel();
        const at = changed.indexOf(done);
        if (at >= 0) changed.splice(at, 1);
        resolve();
      }
    });
  }
}

/**
 * What the responder serves for a volume this node owns: `local` through the switch (so a failback
 * pause and drain cover partners' requests too), refused once the switch points elsewhere, so two
 * nodes never forward one request back and forth.
 */
export function localView(volumeSwitch: VolumeSwitch, local: Volume): Volume {
  return {
    // Read each time: the volume may grow online.
    get sizeBytes() {
      return local.sizeBytes;
    },
    flushCoversAllConnections: true,
    read: (offset, into) => volumeSwitch.runIfLocal(local, (volume) => volume.read(offset, into), false),
    pinRead: (offset, lengthBytes) => volumeSwitch.pinRead(offset, lengthBytes, local),
    readResident: (offset, into) => volumeSwitch.readResident(offset, into, local),
    write: (offset, data, fua) => volumeSwitch.runIfLocal(local, (volume) => volume.write(offset, data, fua), true),
    flush: () => volumeSwitch.runIfLocal(local, (volume) => volume.flush(), true),
    trim: (offset, lengthBytes, fua) => volumeSwitch.runIfLocal(local, (volume) => volume.trim(offset, lengthBytes, fua), true),
    zero: (offset, lengthBytes, options) => volumeSwitch.runIfLocal(local, (volume) => volume.zero(offset, lengthBytes, options), true),
    cache: (offset, lengthBytes) => volumeSwitch.runIfLocal(local, (volume) => volume.cache(offset, lengthBytes), false),
    blockStatus: (offset, lengthBytes) => volumeSwitch.runIfLocal(local, (volume) => volume.blockStatus(offset, lengthBytes), false),
    close: () => Promise.resolve(),
  };
}
