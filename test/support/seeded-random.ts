// A small seeded PRNG (mulberry32) for property tests: the seed goes into every failure message.
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomInt(random: () => number, below: number): number {
  return Math.floor(random() * below);
}

export function randomBytes(random: () => number, length: number): Buffer {
  const out = Buffer.allocUnsafe(Math.ceil(length / 4) * 4);
  for (let i = 0; i < out.length; i += 4) out.writeUInt32LE((random() * 4294967296) >>> 0, i);
  return out.subarray(0, length);
}
