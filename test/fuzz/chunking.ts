// The same stream cut into chunks the way TCP might cut it. Each chunk is a fresh copy, so a decoder
// that reads past the end of its chunk finds unrelated bytes instead of the rest of the stream.
import type { FuzzRandom } from './random.js';

export type ChunkingKind = 'whole' | 'bytewise' | 'random';

/** Byte-at-a-time is quadratic for framers that concatenate; past this size it becomes small random chunks. */
const BYTEWISE_LIMIT = 16 * 1024;
const MAX_RANDOM_CHUNKS = 4096;

export function chunk(stream: Buffer, kind: ChunkingKind, random: FuzzRandom): Buffer[] {
  if (stream.length === 0) return [Buffer.alloc(0)];
  if (kind === 'whole') return [Buffer.from(stream)];
  if (kind === 'bytewise' && stream.length <= BYTEWISE_LIMIT) {
    const out: Buffer[] = [];
    for (let at = 0; at < stream.length; at++) out.push(Buffer.from(stream.subarray(at, at + 1)));
    return out;
  }
  const cuts = new Set<number>();
  const wanted = kind === 'bytewise' ? MAX_RANDOM_CHUNKS : random.between(1, Math.min(64, stream.length));
  for (let i = 0; i < wanted; i++) cuts.add(random.between(1, stream.length));
  // A few empty chunks too: a socket never delivers one, but a framer must not choke on it.
  const points = [0, ...[...cuts].sort((a, b) => a - b), stream.length];
  const out: Buffer[] = [];
  for (let i = 1; i < points.length; i++) {
    out.push(Buffer.from(stream.subarray(points[i - 1] as number, points[i] as number)));
    if (random.chance(0.02)) out.push(Buffer.alloc(0));
  }
  return out;
}

/** The chunkings every decoder case is checked under. */
export function chunkings(stream: Buffer, random: FuzzRandom): Array<{ kind: ChunkingKind; chunks: Buffer[] }> {
  return (['whole', 'bytewise', 'random'] as const).map((kind) => ({ kind, chunks: chunk(stream, kind, random) }));
}
