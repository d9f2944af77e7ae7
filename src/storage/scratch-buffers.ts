// Buffers a stripe write needs only while it runs (its new parity, the old images of a
// read-modify-write), used again by the next stripe write instead of allocated for each: a destage
// of scattered 4 KiB blocks is thousands of stripe writes, and each fresh buffer is external memory
// that drives V8's collections. A buffer is given back only once nothing reads or writes it (its
// member writes settled); one lost on an error path is simply left to the collector.
export class ScratchBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private keptCount = 0;

  /** `keep`: at most this many free buffers (of all sizes together) are kept. */
  constructor(private readonly keep: number) {}

  /** A buffer of exactly `bytes` (contents undefined). */
  take(bytes: number): Buffer {
    const buffer = this.free.get(bytes)?.pop();
    if (buffer === undefined) return Buffer.allocUnsafeSlow(bytes);
    this.keptCount--;
    return buffer;
  }

  give(buffer: Buffer): void {
    if (this.keptCount >= this.keep) return;
    let list = this.free.get(buffer.length);
    if (!list) this.free.set(buffer.length, (list = []));
    list.push(buffer);
    this.keptCount++;
  }

  /** Free buffers kept for the next stripe writes. */
  get kept(): number {
    return this.keptCount;
  }
}
