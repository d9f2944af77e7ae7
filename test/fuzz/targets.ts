// The only place that knows how each fuzz target is driven: small adapters from "a list of chunks"
// to a plain, comparable outcome. When a decoder's public API changes (back-pressure in the request
// framer, a new partner hello), this file is what changes; generators and oracles stay.
import { HandshakeFlag } from '../../src/nbd/constants.js';
import { Exports, NbdServer } from '../../src/nbd/index.js';
import { Negotiator, type ExportCatalog, type Verdict } from '../../src/nbd/negotiation.js';
import { OptionFramer } from '../../src/nbd/option-framer.js';
import { FramingError, RequestFramer } from '../../src/nbd/request-framer.js';
import type { Request } from '../../src/nbd/wire.js';
import { silentLogger } from '../../src/observe/index.js';
import { MessageFramer, PartnerFramingError, type Message } from '../../src/partner/index.js';
import { freePort, startNode, type FtvmNode } from '../support/ftvm-process.js';
import { RamVolume } from '../support/ram-volume.js';
import { GaugedVolume } from './gauged-volume.js';

/** How a decoder run ended. `unexpected` is anything thrown that the decoder does not document. */
export interface DecodeEnd {
  /** The documented error, if the decoder refused the stream. */
  refused: { name: string; message: string; reason?: string } | null;
  unexpected: { name: string; message: string; stack?: string } | null;
}

const errorInfo = (error: unknown): { name: string; message: string; stack?: string } =>
  error instanceof Error ? { name: error.name, message: error.message, stack: error.stack } : { name: typeof error, message: String(error) };

// ---- (a) NBD handshake: OptionFramer + Negotiator ----

export interface HandshakeEvent {
  option: number;
  data: Buffer;
  replies: Buffer[];
  verdict: Verdict;
}

export interface HandshakeOutcome extends DecodeEnd {
  events: HandshakeEvent[];
  /** Bytes after the option that entered transmission: the start of the request stream. */
  remainder: Buffer | null;
  /** The framer, kept alive so a memory check can see what it retains. */
  retained: unknown;
}

/** Feeds chunks the way Connection.onHandshakeData does, until the negotiator closes or transmits. */
export function runHandshake(chunks: readonly Buffer[], catalog: ExportCatalog): HandshakeOutcome {
  const framer = new OptionFramer();
  let negotiator: Negotiator | null = null;
  const events: HandshakeEvent[] = [];
  const outcome: HandshakeOutcome = { events, remainder: null, refused: null, unexpected: null, retained: framer };
  const after: Buffer[] = [];
  let ended = false;
  for (const chunk of chunks) {
    if (ended) {
      after.push(chunk);
      continue;
    }
    let request;
    try {
      framer.push(chunk);
      if (framer.flags === null) continue;
      negotiator ??= new Negotiator(catalog, (framer.flags & HandshakeFlag.NoZeroes) !== 0);
      request = framer.next();
    } catch (error) {
      if (error instanceof FramingError) outcome.refused = { name: error.name, message: error.message };
      else outcome.unexpected = errorInfo(error);
      return outcome;
    }
    while (request) {
      let step;
      try {
        step = negotiator.handle(request.option, request.data);
      } catch (error) {
        outcome.unexpected = errorInfo(error);
        return outcome;
      }
      events.push({ option: request.option, data: request.data, replies: step.replies, verdict: step.verdict });
      if (step.verdict !== 'continue') {
        ended = true;
        if (step.verdict === 'transmit') after.push(framer.takeRemainder());
        break;
      }
      try {
        request = framer.next();
      } catch (error) {
        if (error instanceof FramingError) outcome.refused = { name: error.name, message: error.message };
        else outcome.unexpected = errorInfo(error);
        return outcome;
      }
    }
  }
  if (ended && events[events.length - 1]?.verdict === 'transmit') outcome.remainder = Buffer.concat(after);
  return outcome;
}

/** The catalog the handshake target negotiates against: a default export, a second one, a read-only one. */
export function handshakeCatalog(): { catalog: ExportCatalog; names: string[] } {
  const exports = new Exports();
  exports.add({ name: 'vol0', description: 'first', volume: new RamVolume(1 << 20), readOnly: false });
  exports.add({ name: 'vol1', description: '', volume: new RamVolume(4096), readOnly: false });
  exports.add({ name: 'ro', description: 'read only', volume: new RamVolume(8192), readOnly: true });
  return { catalog: exports, names: ['vol0', 'vol1', 'ro'] };
}

// ---- (b) NBD transmission: RequestFramer ----

export interface FramedRequest {
  type: number;
  flags: number;
  handle: bigint;
  offset: number;
  length: number;
  oversized: boolean;
  /** The WRITE payload, joined (a copy: its pieces belong to the request, and go back to a pool). */
  payload: Buffer | null;
}

export interface RequestOutcome extends DecodeEnd {
  requests: FramedRequest[];
  /** Requests handed out or exceptions thrown by pushes after the framer refused the stream. */
  afterRefusal: string | null;
  idle: boolean;
  retained: unknown;
}

const framed = (request: Request): FramedRequest => ({
  type: request.type,
  flags: request.flags,
  handle: (BigInt(request.handleHigh) << 32n) | BigInt(request.handleLow),
  offset: request.offset,
  length: request.length,
  oversized: request.oversized,
  payload: request.payload ? Buffer.concat(request.payload) : null,
});

export function runRequestFramer(chunks: readonly Buffer[], maxPayloadBytes: number): RequestOutcome {
  const requests: FramedRequest[] = [];
  const framer = new RequestFramer({ admits: () => true, onRequest: (request) => requests.push(framed(request)) }, maxPayloadBytes);
  const outcome: RequestOutcome = { requests, refused: null, unexpected: null, afterRefusal: null, idle: false, retained: framer };
  for (const chunk of chunks) {
    try {
      framer.push(chunk);
    } catch (error) {
      if (error instanceof FramingError) outcome.refused = { name: error.name, message: error.message };
      else outcome.unexpected = errorInfo(error);
      break;
    }
  }
  if (outcome.refused) {
    // Documented: after a FramingError the framer refuses further input (quietly).
    const before = requests.length;
    try {
      framer.push(Buffer.alloc(28 * 3));
      if (requests.length !== before) outcome.afterRefusal = `${requests.length - before} requests handed out after the refusal`;
    } catch (error) {
      outcome.afterRefusal = `push after the refusal threw ${errorInfo(error).message}`;
    }
  }
  outcome.idle = framer.idle;
  return outcome;
}

// ---- (c) partner link: MessageFramer ----

export interface PartnerOutcome extends DecodeEnd {
  /** Messages returned by pushes that did not throw (a failing push drops its messages, as documented). */
  messages: Message[];
  /** A push after the failure must throw the same error again. */
  sticky: string | null;
  idle: boolean;
  retained: unknown;
}

export function runPartnerFramer(chunks: readonly Buffer[]): PartnerOutcome {
  const framer = new MessageFramer();
  const outcome: PartnerOutcome = { messages: [], refused: null, unexpected: null, sticky: null, idle: false, retained: framer };
  for (const chunk of chunks) {
    try {
      outcome.messages.push(...framer.push(chunk));
    } catch (error) {
      if (error instanceof PartnerFramingError) outcome.refused = { name: error.name, message: error.message, reason: error.reason };
      else outcome.unexpected = errorInfo(error);
      break;
    }
  }
  if (outcome.refused) {
    try {
      framer.push(Buffer.alloc(1));
      outcome.sticky = 'a push after the failure did not throw';
    } catch (error) {
      if (!(error instanceof PartnerFramingError) || error.message !== outcome.refused.message) outcome.sticky = `a push after the failure threw ${errorInfo(error).message}`;
    }
  }
  outcome.idle = framer.idle;
  return outcome;
}

// ---- (d) a running NBD server ----

export interface ServedExport {
  name: string;
  sizeBytes: number;
  readOnly: boolean;
}

/** A server under test: where it listens, what it exports, and how to see its memory. */
export interface ServerUnderTest {
  readonly host: string;
  readonly port: number;
  readonly exports: readonly ServedExport[];
  /** Bytes of memory the server holds now (its whole process: RSS for a child, heap + buffers in-process). */
  memoryBytes(): number;
  /** Still accepting and serving? (A child process that exited is not.) */
  alive(): boolean;
  /** In-process only: the bytes behind each export, for a direct comparison with the model. */
  volumeBytes?(name: string): Buffer;
  /** In-process only: the most reads and writes an export had in flight at once since the last reset. */
  inFlightPeak?(name: string): { requests: number; bytes: number };
  resetInFlightPeaks?(): void;
  /** In-process only: connections the server still holds. */
  connectionCount?(): number;
  /** The server's own log, for a finding's report (child processes only). */
  log(): string;
  close(): Promise<void>;
}

/**
 * Exports of the server target. The first one is the default (empty name), so hostile sessions
 * that pick the default hit a hostile export; the model client's export is last and is never
 * named by a hostile generator.
 */
export const SERVER_EXPORTS: readonly ServedExport[] = [
  { name: 'vol0', sizeBytes: 1 << 20, readOnly: false },
  { name: 'vol1', sizeBytes: 256 * 1024, readOnly: false },
  { name: 'ro', sizeBytes: 64 * 1024, readOnly: true },
  { name: 'good', sizeBytes: 1 << 20, readOnly: false },
];

export async function startInProcessServer(): Promise<ServerUnderTest> {
  const exports = new Exports();
  const volumes = new Map<string, GaugedVolume>();
  for (const spec of SERVER_EXPORTS) {
    const volume = new GaugedVolume(spec.sizeBytes);
    volumes.set(spec.name, volume);
    exports.add({ name: spec.name, description: `fuzz ${spec.name}`, volume, readOnly: spec.readOnly });
  }
  const server = new NbdServer(exports, silentLogger());
  // freePort only names a port that was free a moment ago: another process may take it first.
  const listen = async (attempt: number): Promise<number> => {
    const port = await freePort('127.0.0.1');
    try {
      await server.listen({ host: '127.0.0.1', port });
      return port;
    } catch (error) {
      if (attempt >= 5) throw error;
      return listen(attempt + 1);
    }
  };
  const port = await listen(0);
  return {
    host: '127.0.0.1',
    port,
    exports: SERVER_EXPORTS,
    memoryBytes: () => {
      const usage = process.memoryUsage();
      // The server's reply buffer pool keeps up to 16 MiB for reuse by design; that is not growth.
      return usage.heapUsed + usage.external - server.replyBuffersKept;
    },
    alive: () => true,
    connectionCount: () => server.connectionCount,
    volumeBytes: (name) => (volumes.get(name) as GaugedVolume).bytes,
    inFlightPeak: (name) => {
      const volume = volumes.get(name) as GaugedVolume;
      return { requests: volume.peakRequests, bytes: volume.peakBytes };
    },
    resetInFlightPeaks: () => {
      for (const volume of volumes.values()) volume.resetPeaks();
    },
    log: () => '',
    // Not the graceful close: a connection that never lets go would hold it forever, and the
    // fuzzer reports that separately (server-connection-leak).
    close: async () => server.abort(),
  };
}

/** A real `ftvm serve` process: what the long mode runs against. */
export async function startProcessServer(): Promise<ServerUnderTest> {
  const { readFileSync } = await import('node:fs');
  const { rm } = await import('node:fs/promises');
  const node: FtvmNode = await startNode(
    SERVER_EXPORTS.map((spec) => ({ name: spec.name, sizeBytes: spec.sizeBytes, readOnly: spec.readOnly })),
    { logLevel: 'warn' },
  );
  return {
    host: node.host,
    port: node.port,
    exports: SERVER_EXPORTS,
    memoryBytes: () => {
      const status = readFileSync(`/proc/${node.child.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    },
    alive: () => node.child.exitCode === null && node.child.signalCode === null,
    log: () => node.log(),
    close: async () => {
      await node.stop();
      await rm(node.directory, { recursive: true, force: true });
    },
  };
}
