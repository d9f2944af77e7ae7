// Human sizes in configs and flags: "1GiB", "512M", "4096" (bytes). Binary units throughout,
// because block devices are sized in powers of two.
const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Returns the byte count, or an error message naming what was wrong. */
export function parseSize(text: string | number): number | string {
  if (typeof text === 'number') return Number.isSafeInteger(text) && text >= 0 ? text : `${text} is not a whole number of bytes`;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match) return `'${text}' is not a size (examples: 4096, 64MiB, 1G)`;
  const unit = UNITS[(match[2] as string).toLowerCase()];
  if (unit === undefined) return `'${match[2]}' is not a size unit (use K, M, G, T or KiB, MiB, GiB, TiB)`;
  const bytes = Number(match[1]) * unit;
  if (!Number.isSafeInteger(bytes)) return `'${text}' is not a whole number of bytes`;
  return bytes;
}

export function formatSize(bytes: number): string {
  for (const [unit, factor] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor} ${unit}`;
  }
  return `${bytes} bytes`;
}
