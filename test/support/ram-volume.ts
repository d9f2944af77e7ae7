// A volume held in memory, for tests of the layers above storage: sparse (unwritten bytes read as
// zeroes), with an optional gate that holds chosen operations until the test releases them.
import { VolumeError, type Extent, type Volume, type ZeroOptions } from '../../src/volume/index.js';

export type Operation = 'read' | 'write' | 'flush' | 'trim' | 'zero' | 'cache' | 'blockStatus';

export class RamVolume implements Volume {
  readonly flushCoversAllConnections = true;
  readonly bytes: Buffer;
  readonly calls: Array<{ operation: Operation; offset: number; length: number; fua?: boolean }> = [];
  flushes = 0;
  private held: Operation | null = null;
  private waiting: Array<() => void> = [];
  failWith: VolumeError | null = null;

  constructor(readonly sizeBytes: number) {
    this.bytes = Buffer.alloc(sizeBytes);
  }

  /** Operations of this kind wait until release() is called. */
  hold(operation: Operation): void {
    this.held = operation;
  }

  release(): void {
    this.held = null;
    const waiting = this.waiting;
    this.waiting = [];
    for (const resume of waiting) resume();
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  async read(offset: number, into: Buffer): Promise<void> {
    await this.enter('read', offset, into.length);
    this.bytes.copy(into, 0, offset, offset + into.length);
  }

  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    const length = data.reduce((sum, piece) => sum + piece.length, 0);
    await this.enter('write', offset, length, fua);
    for (const piece of data) offset += piece.copy(this.bytes, offset);
  }

  async flush(): Promise<void> {
    await this.enter('flush', 0, 0);
    this.flushes++;
  }

  async trim(offset: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.enter('trim', offset, lengthBytes, fua);
  }

  async zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero) throw new VolumeError('ENOTSUP', 'no fast zero in memory');
    await this.enter('zero', offset, lengthBytes, options.fua);
    this.bytes.fill(0, offset, offset + lengthBytes);
  }

  async cache(offset: number, lengthBytes: number): Promise<void> {
    await this.enter('cache', offset, lengthBytes);
  }

  async blockStatus(offset: number, lengthBytes: number): Promise<Extent[]> {
    await this.enter('blockStatus', offset, lengthBytes);
    const half = Math.max(1, Math.floor(lengthBytes / 2));
    return half < lengthBytes ? [{ lengthBytes: half, flags: 0 }, { lengthBytes: lengthBytes - half, flags: 3 }] : [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {}

  private async enter(operation: Operation, offset: number, length: number, fua?: boolean): Promise<void> {
    this.calls.push({ operation, offset, length, fua });
    if (this.failWith) throw this.failWith;
    if (this.held === operation) await new Promise<void>((resume) => this.waiting.push(resume));
  }
}
