// The running-server target. One case is one round: a few hostile sessions in parallel with one
// well-behaved model client, against an in-process NbdServer over RAM volumes (or a real
// `ftvm serve` process). After each round:
//   - no crash: no uncaught exception, the server still accepts and serves;
//   - no hang: every session was answered or closed within the deadline;
//   - bounded memory: while replies are held back, growth stays within the documented in-flight
//     bound per connection (plus what was sent); after the round, growth is gone again;
//   - the in-flight bound itself (in-process): never more reads/writes at once than documented;
//   - the model client read what it wrote, and every export holds what the model says (writes
//     answered OK applied, writes answered with an error changing nothing).
import {
  Command,
  MAX_PAYLOAD_BYTES,
  REQUEST_MAGIC,
} from '../../src/nbd/constants.js';
import { DEFAULT_SERVER_LIMITS } from '../../src/nbd/index.js';
import { chunk } from './chunking.js';
import type { Problem } from './decoder-checks.js';
import type { CaseResult, FuzzTarget } from './fuzz-target.js';
import { runHostile, type HostileReport, type HostileScript } from './hostile-connection.js';
import { collectGarbage, settledMemory } from './memory.js';
import { fillExport, readExport, runModelClient } from './model-client.js';
import { mutate } from './mutate.js';
import { generateHandshake } from './nbd-handshake-gen.js';
import { encodeRequestHeader, generateRequests } from './nbd-request-gen.js';
import { FuzzRandom } from './random.js';
import { SERVER_EXPORTS, startInProcessServer, startProcessServer, type ServedExport, type ServerUnderTest } from './targets.js';
import { VolumeModel } from './volume-model.js';

const MIB = 1024 * 1024;

export interface ServerProfile {
  /** Hostile sessions per round: 1 to this many. */
  maxHostile: number;
  /** Largest WRITE payload a hostile session sends whole (past it the stream ends inside one). */
  maxSentPayloadBytes: number;
  /** Chance that a session floods reads and does not read the replies until memory was measured. */
  floodChance: number;
  /** Bytes of READ replies one flood asks for. */
  floodBytes: number;
  /** Batches the model client runs per round. */
  modelBatches: number;
  deadlineMs: number;
  /** Let hostile streams send DISC (off: explore past a known DISC finding). */
  disc?: boolean;
}

/** For the test suite: rounds of a few hundred milliseconds, floods within the documented bound. */
export const BOUNDED_PROFILE: ServerProfile = { maxHostile: 3, maxSentPayloadBytes: 256 * 1024, floodChance: 0.1, floodBytes: 24 * MIB, modelBatches: 6, deadlineMs: 10_000 };

/** For the long run: whole 32 MiB payloads and floods of twice the documented in-flight bound. */
export const LONG_PROFILE: ServerProfile = {
  maxHostile: 4, maxSentPayloadBytes: MAX_PAYLOAD_BYTES + 1, floodChance: 0.08, floodBytes: 2 * DEFAULT_SERVER_LIMITS.bytesInFlight + 64 * MIB, modelBatches: 10, deadlineMs: 20_000,
};

/** Memory a round may leave behind after a full collection (per round, and over the whole run). */
const RETAINED_PER_ROUND = 32 * MIB;
const RETAINED_OVERALL = 128 * MIB;
/** Without a collector (or for a child's RSS, which malloc does not give back) only gross growth is caught. */
const RETAINED_UNCOLLECTED = 512 * MIB;

/** How long closed sessions may take to leave the server's connection set. */
const RELEASE_WAIT_MS = 1000;

const HOSTILE_EXPORTS = SERVER_EXPORTS.filter((entry) => entry.name !== 'good');
const GOOD_EXPORT = SERVER_EXPORTS.find((entry) => entry.name === 'good') as ServedExport;

function exportFor(name: string): ServedExport {
  return (name === '' ? SERVER_EXPORTS[0] : SERVER_EXPORTS.find((entry) => entry.name === name)) as ServedExport;
}

/**
 * Many READs of the whole export (every reply as big as the export), in writes that each stay
 * within half the documented in-flight bounds and with pauses between them: the server's input
 * back-pressure can keep up, so what piles up is only the replies nobody reads.
 */
function flood(random: FuzzRandom, sizeBytes: number, totalBytes: number): Buffer[] {
  const count = Math.max(1, Math.ceil(totalBytes / sizeBytes));
  const perWrite = Math.max(1, Math.min(DEFAULT_SERVER_LIMITS.requestsInFlight / 2, Math.floor(DEFAULT_SERVER_LIMITS.bytesInFlight / 2 / sizeBytes)));
  const first = BigInt(random.u32()) << 16n;
  const headers = Array.from({ length: count }, (_, i) =>
    encodeRequestHeader({ magic: REQUEST_MAGIC, flags: 0, type: Command.Read, handle: first + BigInt(i), offset: 0n, length: sizeBytes, payload: null }),
  );
  const writes: Buffer[] = [];
  for (let at = 0; at < headers.length; at += perWrite) writes.push(Buffer.concat(headers.slice(at, at + perWrite)));
  return writes;
}
const FLOOD_GAP_MS = 20;

interface ScriptShape {
  script: HostileScript;
  flood: boolean;
}

function buildScript(random: FuzzRandom, profile: ServerProfile): ScriptShape {
  const names = HOSTILE_EXPORTS.map((entry) => entry.name);
  let bytes: Buffer;
  let isFlood = false;
  if (random.chance(0.15)) {
    // Handshake chaos only: never meant to attach.
    const session = generateHandshake(random.fork(), { exportNames: names });
    bytes = random.chance(0.5) ? mutate(random.fork(), session.bytes, { lengthFields: session.lengthFields }) : session.bytes;
  } else {
    const attach = random.pick(['vol0', 'vol0', 'vol1', 'ro', '']);
    const session = generateHandshake(random.fork(), { exportNames: names, attach, structured: random.chance(0.5) });
    const sizeBytes = exportFor(attach).sizeBytes;
    isFlood = random.chance(profile.floodChance);
    if (isFlood) {
      const chunks = [session.bytes, ...flood(random, sizeBytes, profile.floodBytes)];
      const script = { bytes: Buffer.concat(chunks), chunks, gapsMs: chunks.map(() => FLOOD_GAP_MS), yieldBetweenChunks: false, stall: true };
      return { script, flood: true };
    } else {
      const stream = generateRequests(random.fork(), { sizeBytes, maxPayloadBytes: MAX_PAYLOAD_BYTES, maxSentPayloadBytes: profile.maxSentPayloadBytes, maxRequests: 40, noDisc: profile.disc === false });
      bytes = Buffer.concat([session.bytes, stream.bytes]);
      if (random.chance(0.3)) {
        const lengthFields = [...session.lengthFields, ...stream.lengthFields.map((field) => ({ ...field, at: field.at + session.bytes.length }))];
        bytes = mutate(random.fork(), bytes, { lengthFields });
      }
    }
  }
  return { script: scriptFor(bytes, random, isFlood || random.chance(0.1)), flood: isFlood };
}

function scriptFor(bytes: Buffer, random: FuzzRandom, stall: boolean): HostileScript {
  const kind = bytes.length <= 2048 && random.chance(0.2) ? 'bytewise' : random.pick(['whole', 'random', 'random'] as const);
  return { bytes, chunks: chunk(bytes, kind, random.fork()), yieldBetweenChunks: random.chance(0.5), stall };
}

/** Seeded export contents, so a round does not depend on the rounds before it. */
function patternFor(seed: number, spec: ServedExport): Buffer {
  return new FuzzRandom((seed ^ spec.sizeBytes ^ spec.name.length * 0x9e3779b1) >>> 0).bytes(spec.sizeBytes);
}

class ServerRounds implements FuzzTarget {
  readonly name = 'server' as const;
  private server: ServerUnderTest | null = null;
  /** Content of the read-only export of a child process, which cannot be written through NBD. */
  private readOnlyContent = new Map<string, Buffer>();
  /** Memory before the first round of this server, less that round's own inputs. */
  private firstMemory: number | null = null;

  constructor(
    private readonly profile: ServerProfile,
    private readonly useProcess: boolean,
  ) {}

  private async ensureServer(): Promise<ServerUnderTest> {
    if (this.server) return this.server;
    const server = this.useProcess ? await startProcessServer() : await startInProcessServer();
    if (this.useProcess) {
      for (const spec of SERVER_EXPORTS.filter((entry) => entry.readOnly)) {
        this.readOnlyContent.set(spec.name, await readExport(server, spec.name, spec.sizeBytes, this.profile.deadlineMs));
      }
    }
    this.server = server;
    return server;
  }

  /** Sets every export to the round's pattern and returns the models. */
  private async prepare(server: ServerUnderTest, seed: number): Promise<Map<string, VolumeModel>> {
    const models = new Map<string, VolumeModel>();
    for (const spec of SERVER_EXPORTS) {
      const direct = server.volumeBytes?.(spec.name);
      if (spec.readOnly && !direct) {
        models.set(spec.name, new VolumeModel(spec.sizeBytes, this.readOnlyContent.get(spec.name)));
        continue;
      }
      const pattern = patternFor(seed, spec);
      if (direct) pattern.copy(direct);
      else await fillExport(server, spec.name, pattern, this.profile.deadlineMs);
      models.set(spec.name, new VolumeModel(spec.sizeBytes, pattern));
    }
    return models;
  }

  async runCase(seed: number): Promise<CaseResult> {
    const random = new FuzzRandom(seed);
    const shapes = Array.from({ length: random.between(1, this.profile.maxHostile) }, () => buildScript(random.fork(), this.profile));
    return this.round(seed, shapes, random.fork());
  }

  async replay(inputs: readonly Buffer[], params: CaseResult['params'], seed: number): Promise<CaseResult> {
    const random = new FuzzRandom(seed);
    const shapes = inputs.map((bytes, index) => ({ script: scriptFor(bytes, random.fork(), params[`stall${index}`] === true), flood: params[`stall${index}`] === true }));
    return this.round(seed, shapes, random.fork());
  }

  /** Runs exactly these sessions (chunks and gaps as given) beside the model client: for regression vectors. */
  async replayScripts(scripts: readonly HostileScript[], seed = 1): Promise<CaseResult> {
    return this.round(seed, scripts.map((script) => ({ script, flood: script.stall })), new FuzzRandom(seed));
  }

  private async round(seed: number, shapes: readonly ScriptShape[], random: FuzzRandom): Promise<CaseResult> {
    const problems: Problem[] = [];
    const params: CaseResult['params'] = {};
    shapes.forEach((shape, index) => (params[`stall${index}`] = shape.script.stall));
    const result = (): CaseResult => ({ problems, inputs: shapes.map((shape) => shape.script.bytes), params });
    const uncaught = (error: unknown): void => {
      problems.push({ kind: 'server-uncaught', detail: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    };
    process.on('uncaughtException', uncaught);
    process.on('unhandledRejection', uncaught);
    try {
      let server: ServerUnderTest;
      try {
        server = await this.ensureServer();
      } catch (error) {
        problems.push({ kind: 'server-start', detail: (error as Error).message });
        return result();
      }
      const models = await this.prepare(server, seed);
      server.resetInFlightPeaks?.();
      const before = this.useProcess ? { bytes: server.memoryBytes(), collected: false } : await settledMemory(0);
      // The round's own inputs are alive until it ends (up to 2 x 64 MiB in the long profile): the
      // comparison over the run leaves them out.
      const inputBytes = shapes.reduce((sum, shape) => sum + shape.script.bytes.length + shape.script.chunks.reduce((total, piece) => total + piece.length, 0), 0);
      this.firstMemory ??= before.bytes - inputBytes;

      let resume!: () => void;
      const resumed = new Promise<void>((resolve) => (resume = resolve));
      const sent: Array<Promise<void>> = [];
      const sessions = shapes.map((shape) => {
        let markSent!: () => void;
        sent.push(new Promise<void>((resolve) => (markSent = resolve)));
        return runHostile(server, shape.script, this.profile.deadlineMs, { sent: markSent, resume: shape.script.stall ? resumed : Promise.resolve() });
      });
      const good = runModelClient(server, GOOD_EXPORT.name, models.get(GOOD_EXPORT.name) as VolumeModel, random.fork(), this.profile.modelBatches, this.profile.deadlineMs);

      await Promise.all(sent);
      problems.push(...(await this.peakMemory(server, shapes, before.bytes)));
      resume();
      const reports = await Promise.all(sessions);
      for (const report of reports) problems.push(...report.problems);
      problems.push(...(await good));

      problems.push(...(await this.checkVolumes(server, models, reports)));
      problems.push(...this.checkInFlight(server, reports));
      problems.push(...(await this.connectionsReleased(server)));
      problems.push(...(await this.retainedMemory(server, before.bytes, inputBytes)));
      if (!server.alive()) problems.push({ kind: 'server-died', detail: server.log().slice(-2000) });
      return result();
    } finally {
      process.off('uncaughtException', uncaught);
      process.off('unhandledRejection', uncaught);
      // A server that misbehaved is not trusted with the next round.
      if (problems.length > 0) await this.close();
    }
  }

  /** Samples memory while stalled sessions hold their replies back. */
  private async peakMemory(server: ServerUnderTest, shapes: readonly ScriptShape[], before: number): Promise<Problem[]> {
    let peak = server.memoryBytes();
    if (shapes.some((shape) => shape.script.stall)) {
      // The server works in its own time: a few samples over a short while, the highest counts.
      // Sampling early can only under-measure, so the bound below never fails because of timing.
      for (const delay of [20, 80, 200]) {
        await new Promise((resolve) => setTimeout(resolve, delay));
        peak = Math.max(peak, server.memoryBytes());
      }
    }
    const bound = shapes.reduce((sum, shape) => sum + DEFAULT_SERVER_LIMITS.bytesInFlight + 2 * shape.script.bytes.length + 16 * MIB, 64 * MIB) + (this.useProcess ? 128 * MIB : 0);
    const grown = peak - before;
    if (grown <= bound) return [];
    const floods = shapes.filter((shape) => shape.flood).length;
    return [{ kind: 'server-memory-peak', detail: `memory grew by ${Math.round(grown / MIB)} MiB with ${shapes.length} sessions (${floods} flooding reads without reading replies); bound ${Math.round(bound / MIB)} MiB` }];
  }

  private async checkVolumes(server: ServerUnderTest, models: Map<string, VolumeModel>, reports: readonly HostileReport[]): Promise<Problem[]> {
    const problems: Problem[] = [];
    for (const spec of SERVER_EXPORTS) {
      const model = models.get(spec.name) as VolumeModel;
      model.applyConcurrent(reports.flatMap((report) => report.effects.get(spec.name) ?? []));
      const actual = server.volumeBytes?.(spec.name) ?? (await readExport(server, spec.name, spec.sizeBytes, this.profile.deadlineMs));
      const mismatch = model.firstMismatch(actual);
      if (mismatch) {
        const writers = reports.filter((report) => report.effects.has(spec.name)).length;
        problems.push({ kind: 'server-volume-mismatch', detail: `${spec.name} byte ${mismatch.at} is ${mismatch.actual}, model says ${mismatch.expected} (${writers} hostile sessions may have written it)` });
      }
    }
    return problems;
  }

  private checkInFlight(server: ServerUnderTest, reports: readonly HostileReport[]): Problem[] {
    if (!server.inFlightPeak) return [];
    const problems: Problem[] = [];
    for (const spec of HOSTILE_EXPORTS) {
      const connections = reports.filter((report) => report.attached === spec.name || report.effects.has(spec.name)).length;
      if (connections === 0) continue;
      const peak = server.inFlightPeak(spec.name);
      if (peak.requests > connections * DEFAULT_SERVER_LIMITS.requestsInFlight) {
        problems.push({ kind: 'server-inflight-requests', detail: `${spec.name}: ${peak.requests} reads/writes in flight at once from ${connections} connections (documented bound ${DEFAULT_SERVER_LIMITS.requestsInFlight} each)` });
      }
      // The request that crosses the byte bound is let in, so one payload of slack per connection.
      if (peak.bytes > connections * (DEFAULT_SERVER_LIMITS.bytesInFlight + MAX_PAYLOAD_BYTES)) {
        problems.push({ kind: 'server-inflight-bytes', detail: `${spec.name}: ${Math.round(peak.bytes / MIB)} MiB of reads/writes in flight at once from ${connections} connections (documented bound ${DEFAULT_SERVER_LIMITS.bytesInFlight / MIB} MiB each)` });
      }
    }
    return problems;
  }

  /** Every session of the round has closed its socket: the server must let go of each connection. */
  private async connectionsReleased(server: ServerUnderTest): Promise<Problem[]> {
    if (!server.connectionCount) return [];
    // Closing takes a few event-loop turns; the deadline only bounds the wait.
    const stop = performance.now() + RELEASE_WAIT_MS;
    while (server.connectionCount() > 0 && performance.now() < stop) await new Promise((resolve) => setTimeout(resolve, 10));
    const left = server.connectionCount();
    return left === 0 ? [] : [{ kind: 'server-connection-leak', detail: `${left} connections still held ${RELEASE_WAIT_MS} ms after every client closed its socket` }];
  }

  private async retainedMemory(server: ServerUnderTest, before: number, inputBytes: number): Promise<Problem[]> {
    if (this.useProcess) {
      const grown = server.memoryBytes() - (this.firstMemory ?? 0);
      return grown > RETAINED_UNCOLLECTED ? [{ kind: 'server-memory-retained', detail: `RSS grew by ${Math.round(grown / MIB)} MiB over the run` }] : [];
    }
    const after = await settledMemory(3);
    const round = after.bytes - before;
    const overall = after.bytes - inputBytes - (this.firstMemory ?? before);
    const [perRound, total] = after.collected ? [RETAINED_PER_ROUND, RETAINED_OVERALL] : [RETAINED_UNCOLLECTED, RETAINED_UNCOLLECTED];
    if (round <= perRound && overall <= total) return [];
    return [{ kind: 'server-memory-retained', detail: `after the round: +${Math.round(round / MIB)} MiB this round, +${Math.round(overall / MIB)} MiB over the run (bounds ${perRound / MIB} / ${total / MIB} MiB)` }];
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    this.firstMemory = null;
    // A server that hung may never finish closing; the next round starts a new one regardless.
    if (server) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([server.close(), new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
      clearTimeout(timer);
    }
    collectGarbage();
  }
}

export function serverTarget(profile: ServerProfile = BOUNDED_PROFILE, useProcess = false): FuzzTarget & Pick<ServerRounds, 'replayScripts'> {
  return new ServerRounds(profile, useProcess);
}
