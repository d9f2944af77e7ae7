// What an export's bytes must be, as far as the fuzzer can know. Requests on one export in one
// round run concurrently (pipelined on a connection, in parallel across connections), and NBD does
// not order concurrent requests: a byte that two of them set to different values becomes unknown
// rather than guessed. Unknown bytes are skipped by comparisons until written again.
export type Effect =
  | { kind: 'write'; offset: number; data: Buffer }
  | { kind: 'zero'; offset: number; length: number }
  /** Trimmed, or an outcome the client never learned (no reply before the server closed). */
  | { kind: 'unknown'; offset: number; length: number };

export class VolumeModel {
  readonly bytes: Buffer;
  /** 1 where `bytes` is what the export must hold. */
  readonly known: Uint8Array;

  constructor(readonly sizeBytes: number, initial?: Buffer) {
    this.bytes = initial ? Buffer.from(initial) : Buffer.alloc(sizeBytes);
    this.known = new Uint8Array(sizeBytes).fill(1);
  }

  /** A sequential write the client saw complete before it sent anything that overlaps it. */
  write(offset: number, data: Buffer): void {
    data.copy(this.bytes, offset);
    this.known.fill(1, offset, offset + data.length);
  }

  zero(offset: number, length: number): void {
    this.bytes.fill(0, offset, offset + length);
    this.known.fill(1, offset, offset + length);
  }

  forget(offset: number, length: number): void {
    this.known.fill(0, offset, Math.min(this.sizeBytes, offset + length));
  }

  /** Applies effects that may have run in any order. */
  applyConcurrent(effects: readonly Effect[]): void {
    if (effects.length === 0) return;
    const writers = new Uint16Array(this.sizeBytes);
    const value = Buffer.alloc(this.sizeBytes);
    const conflict = new Uint8Array(this.sizeBytes);
    for (const effect of effects) {
      const end = Math.min(this.sizeBytes, effect.offset + (effect.kind === 'write' ? effect.data.length : effect.length));
      for (let at = effect.offset; at < end; at++) {
        const byte = effect.kind === 'write' ? (effect.data[at - effect.offset] as number) : 0;
        if (effect.kind === 'unknown' || (writers[at] !== 0 && value[at] !== byte)) conflict[at] = 1;
        writers[at] = Math.min(0xffff, (writers[at] as number) + 1);
        value[at] = byte;
      }
    }
    for (let at = 0; at < this.sizeBytes; at++) {
      if (writers[at] === 0) continue;
      if (conflict[at]) this.known[at] = 0;
      else {
        this.bytes[at] = value[at] as number;
        this.known[at] = 1;
      }
    }
  }

  /** The first known byte where `actual` (from `offset`) differs, or null. */
  firstMismatch(actual: Buffer, offset = 0): { at: number; expected: number; actual: number } | null {
    for (let i = 0; i < actual.length; i++) {
      const at = offset + i;
      if (this.known[at] && this.bytes[at] !== actual[i]) return { at, expected: this.bytes[at] as number, actual: actual[i] as number };
    }
    return null;
  }
}
