// Random mutation of a valid byte stream. Grammar-aware generators reach deep states; mutation of
// their output reaches the states next to them that no generator author thought of.
import type { FuzzRandom } from './random.js';

/** Where a generator put a length (or count) field, so mutation can aim boundary values at it. */
export interface LengthField {
  at: number;
  width: 1 | 2 | 4;
  /** The limits the decoder checks this field against: values next to them are tried first. */
  limits: readonly number[];
}

export interface MutationHints {
  lengthFields?: readonly LengthField[];
  /** Other valid streams of the same grammar to splice from. */
  donors?: readonly Buffer[];
}

type Mutation = (random: FuzzRandom, stream: Buffer, hints: MutationHints) => Buffer;

const flipBits: Mutation = (random, stream) => {
  if (stream.length === 0) return stream;
  const out = Buffer.from(stream);
  for (let flips = random.between(1, 8); flips > 0; flips--) {
    const at = random.below(out.length);
    out[at] = (out[at] as number) ^ (1 << random.below(8));
  }
  return out;
};

const setBoundary: Mutation = (random, stream) => {
  const width = random.pick([1, 2, 4] as const);
  if (stream.length < width) return stream;
  const out = Buffer.from(stream);
  out.writeUIntBE(random.boundary(width), random.below(out.length - width + 1), width);
  return out;
};

const insertBytes: Mutation = (random, stream) => {
  const at = random.below(stream.length + 1);
  return Buffer.concat([stream.subarray(0, at), random.bytes(random.between(1, 32)), stream.subarray(at)]);
};

const deleteBytes: Mutation = (random, stream) => {
  if (stream.length === 0) return stream;
  const at = random.below(stream.length);
  const count = random.between(1, Math.min(64, stream.length - at));
  return Buffer.concat([stream.subarray(0, at), stream.subarray(at + count)]);
};

const duplicateRange: Mutation = (random, stream) => {
  if (stream.length === 0) return stream;
  const from = random.below(stream.length);
  const to = random.between(from + 1, Math.min(stream.length, from + 256));
  const at = random.below(stream.length + 1);
  return Buffer.concat([stream.subarray(0, at), stream.subarray(from, to), stream.subarray(at)]);
};

const truncate: Mutation = (random, stream) => stream.subarray(0, random.below(stream.length + 1));

const splice: Mutation = (random, stream, hints) => {
  const donor = hints.donors && hints.donors.length > 0 ? random.pick(hints.donors) : stream;
  return Buffer.concat([stream.subarray(0, random.below(stream.length + 1)), donor.subarray(random.below(donor.length + 1))]);
};

const lengthBoundary: Mutation = (random, stream, hints) => {
  const fields = (hints.lengthFields ?? []).filter((field) => field.at + field.width <= stream.length);
  if (fields.length === 0) return setBoundary(random, stream, hints);
  const field = random.pick(fields);
  const out = Buffer.from(stream);
  out.writeUIntBE(random.boundary(field.width, field.limits), field.at, field.width);
  return out;
};

const MUTATIONS: ReadonlyArray<[Mutation, number]> = [
  [flipBits, 3],
  [setBoundary, 2],
  [lengthBoundary, 4],
  [insertBytes, 1],
  [deleteBytes, 1],
  [duplicateRange, 1],
  [truncate, 1],
  [splice, 1],
];
const TOTAL_WEIGHT = MUTATIONS.reduce((sum, [, weight]) => sum + weight, 0);

/** One to four mutations of `stream`; never changes the input buffer. */
export function mutate(random: FuzzRandom, stream: Buffer, hints: MutationHints = {}): Buffer {
  let out = stream;
  for (let count = random.between(1, 4); count > 0; count--) {
    let roll = random.below(TOTAL_WEIGHT);
    for (const [mutation, weight] of MUTATIONS) {
      roll -= weight;
      if (roll < 0) {
        out = mutation(random, out, hints);
        break;
      }
    }
  }
  return out;
}
