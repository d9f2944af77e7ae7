// A stable text form of decoder output, so outcomes of different chunkings compare with ===.
// Long buffers become a digest: equal bytes give equal text, and a failure message stays readable.
import { createHash } from 'node:crypto';

function plain(value: unknown): unknown {
  if (Buffer.isBuffer(value)) {
    return value.length <= 48 ? `hex:${value.toString('hex')}` : `bytes:${value.length}:${createHash('sha1').update(value).digest('hex')}`;
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = plain((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

export function comparable(value: unknown): string {
  return JSON.stringify(plain(value));
}
