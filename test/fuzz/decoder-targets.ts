// The three decoder targets: generate a case from a seed (grammar first, then maybe mutation),
// and check it with decoder-checks.ts. Chunking uses its own random stream derived from the seed,
// so replaying the bytes with the same seed cuts them the same way.
import { MAX_PAYLOAD_BYTES } from '../../src/nbd/constants.js';
import { checkHandshake, checkPartner, checkRequests } from './decoder-checks.js';
import type { CaseResult, FuzzTarget } from './fuzz-target.js';
import { mutate } from './mutate.js';
import { generateHandshake } from './nbd-handshake-gen.js';
import { generateRequests } from './nbd-request-gen.js';
import { generatePartnerStream } from './partner-gen.js';
import { FuzzRandom } from './random.js';
import { handshakeCatalog } from './targets.js';

const chunkRandom = (seed: number): FuzzRandom => new FuzzRandom((seed ^ 0x5bd1e995) >>> 0);

export function handshakeTarget(): FuzzTarget {
  const { catalog, names } = handshakeCatalog();
  const check = (bytes: Buffer, seed: number): CaseResult => ({ problems: checkHandshake(bytes, catalog, chunkRandom(seed)), inputs: [bytes], params: {} });
  return {
    name: 'nbd-handshake',
    async runCase(seed) {
      const random = new FuzzRandom(seed);
      const session = generateHandshake(random.fork(), { exportNames: names });
      let bytes = session.bytes;
      if (random.chance(0.3)) {
        const requests = generateRequests(random.fork(), { sizeBytes: 1 << 20, maxPayloadBytes: MAX_PAYLOAD_BYTES, maxSentPayloadBytes: 4096, maxRequests: 4 });
        bytes = Buffer.concat([bytes, requests.bytes]);
      }
      if (random.chance(0.5)) bytes = mutate(random.fork(), bytes, { lengthFields: session.lengthFields });
      return check(bytes, seed);
    },
    async replay(inputs, _params, seed) {
      return check(inputs[0] ?? Buffer.alloc(0), seed);
    },
    async close() {},
  };
}

export function requestsTarget(): FuzzTarget {
  const check = (bytes: Buffer, maxPayloadBytes: number, seed: number): CaseResult => ({
    problems: checkRequests(bytes, maxPayloadBytes, chunkRandom(seed)),
    inputs: [bytes],
    params: { maxPayloadBytes },
  });
  return {
    name: 'nbd-requests',
    async runCase(seed) {
      const random = new FuzzRandom(seed);
      // A small payload limit exercises the discard path of oversized WRITEs without 32 MiB streams.
      const maxPayloadBytes = random.chance(0.6) ? MAX_PAYLOAD_BYTES : random.between(0, 8192);
      const maxSentPayloadBytes = random.chance(0.005) ? MAX_PAYLOAD_BYTES + 1 : 16 * 1024;
      const stream = generateRequests(random.fork(), { sizeBytes: 1 << 20, maxPayloadBytes, maxSentPayloadBytes, maxRequests: 24 });
      const bytes = random.chance(0.5) ? mutate(random.fork(), stream.bytes, { lengthFields: stream.lengthFields }) : stream.bytes;
      return check(bytes, maxPayloadBytes, seed);
    },
    async replay(inputs, params, seed) {
      return check(inputs[0] ?? Buffer.alloc(0), Number(params.maxPayloadBytes ?? MAX_PAYLOAD_BYTES), seed);
    },
    async close() {},
  };
}

export function partnerTarget(): FuzzTarget {
  return {
    name: 'partner',
    async runCase(seed) {
      const random = new FuzzRandom(seed);
      const generated = generatePartnerStream(random.fork());
      let bytes = generated.bytes;
      let mutated = generated.mutated;
      if (random.chance(0.3)) {
        const donors = [generatePartnerStream(random.fork()).bytes];
        bytes = mutate(random.fork(), bytes, { lengthFields: generated.lengthFields, donors });
        mutated = true;
      }
      return { problems: checkPartner(bytes, chunkRandom(seed), { messages: generated.messages, mutated }), inputs: [bytes], params: {} };
    },
    async replay(inputs, _params, seed) {
      const bytes = inputs[0] ?? Buffer.alloc(0);
      return { problems: checkPartner(bytes, chunkRandom(seed)), inputs: [bytes], params: {} };
    },
    async close() {},
  };
}
