// The node's control socket: a unix socket through which `ftvm raid --control` runs RAID
// administration on the array a node is serving, online. One JSON request line in; JSON lines out:
// progress events, then one final line with the result or the error. Cold path, so JSON is fine.
//
//   → {"op":"replace","member":1,"new":"/disks/new.img"}
//   ← {"progress":{"doneBytes":65536,"totalBytes":536870912}}   (any number of these)
//   ← {"ok":true,"status":{...},"report":{...}}  or  {"ok":false,"error":"..."}
//
// One op keeps the connection open: events (`ftvm events`). The node answers {"ok":true,
// "subscribed":true}, then writes one JSON line per ClusterEvent until either side closes.
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { ClusterEvent, ClusterEvents, Logger } from '../observe/index.js';
import type { VolumeCatalog, VolumeInfo } from './volume-catalog.js';
import {
  failArrayMember,
  rebuildArrayMember,
  replaceArrayMember,
  scrubArray,
  type ArrayStatus,
  type RaidArray,
  type ScrubReport,
} from '../storage/index.js';

/** A request line longer than this is refused: requests are a few dozen bytes. */
const MAX_REQUEST_BYTES = 64 * 1024;
/** Progress events are sent at most this often. */
const PROGRESS_INTERVAL_MS = 200;

export type ControlRequest =
  | { op: 'status' }
  | { op: 'cluster' }
  | { op: 'mirror-dump'; path: string }
  | { op: 'fail'; member: number }
  | { op: 'rebuild'; member: number }
  | { op: 'replace'; member: number; new: string }
  | { op: 'scrub' }
  | { op: 'events' }
  | { op: 'volume-list' }
  | { op: 'volume-create'; name: string; size: number; pageSize?: number; owner?: string; readOnly?: boolean; description?: string }
  | { op: 'volume-resize'; name: string; size: number }
  | { op: 'volume-delete'; name: string; force: boolean };

/** What `ftvm status` shows about one node. */
export interface ClusterStatus {
  cluster: string;
  node: string;
  arrayHolder: string;
  mode: 'mirrored' | 'write-through';
  /** Raised at every takeover; a node that sees a newer one than its own stops serving. */
  epoch: number;
  /** How long this node's lease still protects it without another renewal. */
  leaseRemainingMs: number;
  /** `roundTripMs`: the last space request's answer time on a live link (nodes that serve clients measure it). */
  partners: Array<{ name: string; live: boolean; roundTripMs?: number }>;
  /** owner: who serves it now; home: the config's owner, where it goes back to; state: served here, forwarded, taking over, moving to X. */
  volumes: Array<{ name: string; owner: string; home: string; pageBytes: number; state: string }>;
  residentPages: number;
  dirtyPages: number;
  mirroredPages: number;
  /** The resync after a partner joined: dirty pages flushed, partners' stale mirrors dropped. */
  resync: 'running' | 'failed' | 'done';
}

export interface ControlResult {
  ok: boolean;
  error?: string;
  status?: ArrayStatus;
  report?: ScrubReport;
  cluster?: ClusterStatus;
  /** mirror-dump: pages written to the file. */
  pages?: number;
  /** events: the node streams events on this connection from now on. */
  subscribed?: boolean;
  /** The rebuild, replace or scrub running on this node now, if any (`ftvm status` shows its rate and ETA). */
  operation?: RunningOperation;
  /** volume-list: every volume of the cluster record. */
  volumes?: VolumeInfo[];
  /** volume-create, volume-resize: the volume as it is now. */
  volume?: VolumeInfo;
}

/** The rebuild, replace or scrub running now, as far as it got (metrics). */
export interface RunningOperation {
  operation: 'rebuild' | 'replace' | 'scrub' | 'array-resync';
  member?: number;
  doneBytes: number;
  totalBytes: number;
  /** How long it has run, at the time of the answer. */
  elapsedMs: number;
}

/** One mirrored page in a mirror dump file: header, then `pageBytes` of data. */
export const MIRROR_DUMP_HEADER_BYTES = 64;

export class ControlServer {
  private server: net.Server | null = null;
  /** Rebuild, replace and scrub walk the whole array: one at a time. */
  private busy: string | null = null;
  /** Connections streaming events: ended at close, or the server would wait for them forever. */
  private readonly subscribers = new Set<net.Socket>();
  /** The long operation running now and its progress (set while `busy`); elapsedMs counts from startedMs. */
  private running: (Omit<RunningOperation, 'elapsedMs'> & { startedMs: number }) | null = null;
  /** Set by the node: what `ftvm events` streams. */
  events: ClusterEvents | null = null;

  /** Set by the node: what runs without a control request (the array's resync after an unclean stop). */
  background: () => RunningOperation | null = () => null;

  /** Set by the node: its volumes, made, grown and deleted online (on the array holder). */
  volumes: Pick<VolumeCatalog, 'list' | 'create' | 'resize' | 'delete'> | null = null;

  /** Set by the node: its cluster status, and the partners' pages it mirrors. */
  cluster: () => ClusterStatus | null = () => null;
  mirrorPages: () => Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> = () => [];

  /** `array` is null on a node that does not hold the shared array open: RAID operations go to the one that does. */
  constructor(
    /** Set when this node takes the array over. */
    public array: RaidArray | null,
    private readonly logger: Logger,
    /** The node's data directory (the config's): the only place a mirror dump may be written. */
    private readonly dataDirectory: string = process.cwd(),
  ) {}

  /**
   * Listens on a unix socket only its owner may open (mode 600): whoever can connect can fail
   * members and read every mirrored page. The socket is created under a umask that already says
   * so, not chmodded afterwards, so there is no moment in which anyone else could connect.
   */
  async listen(socketPath: string): Promise<void> {
    await fs.rm(socketPath, { force: true });
    const server = net.createServer((socket) => this.accept(socket));
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, () => resolve()));
    } finally {
      process.umask(umask);
    }
    await fs.chmod(socketPath, 0o600);
    this.server = server;
    this.logger.info(`control socket at ${socketPath}`);
  }

  /** The rebuild, replace or scrub running now, as far as it got; null when none runs. */
  get operation(): RunningOperation | null {
    const running = this.running;
    if (!running) return this.background();
    const { startedMs, ...progress } = running;
    return { ...progress, elapsedMs: Math.round(performance.now() - startedMs) };
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.subscribers) socket.end();
    this.subscribers.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (text: string) => {
      buffered += text;
      if (buffered.length > MAX_REQUEST_BYTES) return this.finish(socket, { ok: false, error: 'request too long' });
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      socket.removeAllListeners('data');
      void this.serve(socket, buffered.slice(0, newline));
    });
  }

  private async serve(socket: net.Socket, line: string): Promise<void> {
    let request: ControlRequest;
    try {
      request = parseRequest(line);
    } catch (error) {
      return this.finish(socket, { ok: false, error: (error as Error).message });
    }
    if (request.op === 'events') return this.subscribe(socket);
    const longOp = request.op === 'rebuild' || request.op === 'replace' || request.op === 'scrub' ? request.op : null;
    const long = longOp !== null;
    if (long && this.busy) return this.finish(socket, { ok: false, error: `busy: ${this.busy} is running` });
    const member = 'member' in request ? request.member : undefined;
    if (long) {
      this.busy = `${request.op}${member !== undefined ? ` of member ${member}` : ''}`;
      this.running = { operation: longOp, ...(member !== undefined ? { member } : {}), doneBytes: 0, totalBytes: 0, startedMs: performance.now() };
    }
    let lastProgressMs = 0;
    const onProgress = (doneBytes: number, totalBytes: number): void => {
      if (this.running) {
        this.running.doneBytes = doneBytes;
        this.running.totalBytes = totalBytes;
      }
      const now = Date.now();
      if (now - lastProgressMs < PROGRESS_INTERVAL_MS && doneBytes < totalBytes) return;
      lastProgressMs = now;
      socket.write(`${JSON.stringify({ progress: { doneBytes, totalBytes } })}\n`);
      if (longOp) this.events?.emit({ kind: 'progress', operation: longOp, ...(member !== undefined ? { member } : {}), doneBytes, totalBytes });
    };
    try {
      // Status reads are polls (monitoring, `ftvm status`, ftvm up at every stop): debug. What
      // changes the array (fail, rebuild, replace, scrub) stays in the log at info.
      this.logger.log(request.op === 'status' || request.op === 'cluster' || request.op === 'volume-list' ? 'debug' : 'info', `control: ${line}`);
      const result = await this.run(request, onProgress);
      if (request.op === 'replace') {
        this.logger.warn(`member ${request.member} is now ${request.new}: put that path in storage.members of the config, or the next start assembles the old file`);
      }
      const operation = this.operation;
      this.finish(socket, {
        ok: true,
        ...(this.array ? { status: this.array.status() } : {}),
        ...(this.cluster() ? { cluster: this.cluster() as ClusterStatus } : {}),
        ...(operation && request.op !== 'scrub' && request.op !== 'rebuild' && request.op !== 'replace' ? { operation } : {}),
        ...result,
      });
    } catch (error) {
      this.logger.warn(`control request failed: ${(error as Error).message}`);
      this.finish(socket, { ok: false, error: (error as Error).message });
    } finally {
      if (long) {
        this.busy = null;
        this.running = null;
      }
    }
  }

  /** Streams this node's events on the connection until the client (or the node) closes it. */
  private subscribe(socket: net.Socket): void {
    const events = this.events;
    if (!events) return this.finish(socket, { ok: false, error: 'this node has no event stream' });
    this.logger.debug('control: events subscriber attached');
    socket.write(`${JSON.stringify({ ok: true, subscribed: true } satisfies ControlResult)}\n`);
    this.subscribers.add(socket);
    const unsubscribe = events.on((event) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(event)}\n`);
    });
    socket.once('close', () => {
      unsubscribe();
      this.subscribers.delete(socket);
    });
    // Nothing more is read from a subscriber; what it sends is dropped.
    socket.resume();
  }

  private async run(request: ControlRequest, onProgress: (doneBytes: number, totalBytes: number) => void): Promise<Partial<ControlResult>> {
    if (request.op === 'cluster' || request.op === 'events') return {};
    if (request.op === 'mirror-dump') return { pages: await this.dumpMirror(request.path) };
    if (request.op.startsWith('volume-')) return this.runVolume(request, onProgress);
    const array = this.array;
    if (!array) {
      if (request.op === 'status') return {};
      throw new Error(`this node does not hold the shared array open (node ${this.cluster()?.arrayHolder ?? '?'} does): run RAID operations against that node's control socket`);
    }
    switch (request.op) {
      case 'status':
        return {};
      case 'fail':
        await failArrayMember(array, request.member);
        return {};
      case 'rebuild':
        await rebuildArrayMember(array, request.member, onProgress);
        return {};
      case 'replace':
        await replaceArrayMember(array, request.member, request.new, onProgress);
        return {};
      case 'scrub':
        return { report: await scrubArray(array, onProgress) };
      default:
        throw new Error(`unknown op ${request.op}`);
    }
  }

  private async runVolume(request: ControlRequest, onProgress: (doneBytes: number, totalBytes: number) => void): Promise<Partial<ControlResult>> {
    const volumes = this.volumes;
    if (!volumes) throw new Error('this node has no volumes to manage');
    switch (request.op) {
      case 'volume-list':
        return { volumes: volumes.list() };
      case 'volume-create':
        return {
          volume: await volumes.create({
            name: request.name,
            sizeBytes: request.size,
            ...(request.pageSize !== undefined ? { pageBytes: request.pageSize } : {}),
            ...(request.owner !== undefined ? { owner: request.owner } : {}),
            ...(request.readOnly !== undefined ? { readOnly: request.readOnly } : {}),
            ...(request.description !== undefined ? { description: request.description } : {}),
          }),
        };
      case 'volume-resize':
        return { volume: await volumes.resize(request.name, request.size) };
      case 'volume-delete':
        await volumes.delete(request.name, request.force, onProgress);
        return {};
      default:
        throw new Error(`unknown op ${request.op}`);
    }
  }

  /**
   * Writes the mirrored pages to a new file in the node's data directory: per page a 64-byte header
   * (volume name, NUL-padded to 40 bytes; virtual page u64; version u64; page bytes u32; zero
   * padding) and the page's bytes. Never anywhere else and never over an existing file or through
   * a symlink: the node may run as root, and the file holds volume data (mode 600).
   */
  private async dumpMirror(requested: string): Promise<number> {
    const file = await this.insideDataDirectory(requested);
    const pages = this.mirrorPages();
    const parts: Buffer[] = [];
    for (const page of pages) {
      const header = Buffer.alloc(MIRROR_DUMP_HEADER_BYTES);
      header.write(page.volume.slice(0, 40), 0, 'utf8');
      header.writeBigUInt64BE(BigInt(page.virtualPage), 40);
      header.writeBigUInt64BE(BigInt(page.version), 48);
      header.writeUInt32BE(page.data.length, 56);
      parts.push(header, Buffer.from(page.data));
    }
    await fs.writeFile(file, Buffer.concat(parts), { flag: 'wx', mode: 0o600 });
    return pages.length;
  }

  private async insideDataDirectory(requested: string): Promise<string> {
    const root = await fs.realpath(this.dataDirectory);
    const file = path.resolve(root, requested);
    const parent = await fs.realpath(path.dirname(file)).catch(() => null);
    if (parent === null || (parent !== root && !parent.startsWith(`${root}${path.sep}`))) {
      throw new Error(`mirror-dump writes only inside the node's data directory ${root}`);
    }
    return path.join(parent, path.basename(file));
  }

  private finish(socket: net.Socket, result: ControlResult): void {
    socket.end(`${JSON.stringify(result)}\n`);
  }
}

/** Checks a request line's shape; every refusal says what was wrong. */
export function parseRequest(line: string): ControlRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error('request is not JSON');
  }
  const request = raw as Record<string, unknown>;
  const member = (): number => {
    if (!Number.isInteger(request.member)) throw new Error(`${String(request.op)} needs an integer "member"`);
    return request.member as number;
  };
  const text = (field: string): string => {
    const value = request[field];
    if (typeof value !== 'string' || value === '' || value.length > 256) throw new Error(`${String(request.op)} needs "${field}": a non-empty string`);
    return value;
  };
  const optionalText = (field: string): string => {
    const value = request[field];
    if (typeof value !== 'string' || value.length > 1024) throw new Error(`"${field}" must be a string of at most 1024 characters`);
    return value;
  };
  const bytes = (field: string): number => {
    const value = request[field];
    if (!Number.isSafeInteger(value) || (value as number) <= 0) throw new Error(`${String(request.op)} needs "${field}": a positive whole number of bytes`);
    return value as number;
  };
  switch (request?.op) {
    case 'status':
    case 'scrub':
    case 'cluster':
    case 'events':
      return { op: request.op };
    case 'mirror-dump':
      if (typeof request.path !== 'string' || request.path === '') throw new Error('mirror-dump needs "path": the file to write');
      return { op: 'mirror-dump', path: request.path };
    case 'fail':
    case 'rebuild':
      return { op: request.op, member: member() };
    case 'replace':
      if (typeof request.new !== 'string' || request.new === '') throw new Error('replace needs "new": the new member file');
      return { op: 'replace', member: member(), new: request.new };
    case 'volume-list':
      return { op: 'volume-list' };
    case 'volume-create':
      return {
        op: 'volume-create',
        name: text('name'),
        size: bytes('size'),
        ...(request.pageSize !== undefined ? { pageSize: bytes('pageSize') } : {}),
        ...(request.owner !== undefined ? { owner: text('owner') } : {}),
        ...(request.readOnly !== undefined ? { readOnly: request.readOnly === true } : {}),
        ...(request.description !== undefined ? { description: optionalText('description') } : {}),
      };
    case 'volume-resize':
      return { op: 'volume-resize', name: text('name'), size: bytes('size') };
    case 'volume-delete':
      return { op: 'volume-delete', name: text('name'), force: request.force === true };
    default:
      throw new Error(`unknown op ${JSON.stringify(request?.op)}`);
  }
}

/**
 * Client side of `events`: calls `onEvent` with each event the node sends; resolves once the
 * subscription is accepted, with `ended`, which settles when the stream ends (rejects if the node
 * went away: it closed the connection, or it died).
 */
export function subscribeEvents(path: string, onEvent: (event: ClusterEvent) => void): Promise<{ ended: Promise<void>; close: () => void }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffered = '';
    let accepted = false;
    let closedByUs = false;
    let endStream: { resolve: () => void; reject: (error: Error) => void } = { resolve: () => undefined, reject: () => undefined };
    const ended = new Promise<void>((resolveEnd, rejectEnd) => {
      endStream = { resolve: resolveEnd, reject: rejectEnd };
    });
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify({ op: 'events' } satisfies ControlRequest)}\n`));
    socket.on('error', (error) => (accepted ? undefined : reject(new Error(`control socket ${path}: ${error.message}`))));
    socket.on('data', (text: string) => {
      buffered += text;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const message = JSON.parse(buffered.slice(0, newline)) as ControlResult & Partial<ClusterEvent>;
        buffered = buffered.slice(newline + 1);
        if (accepted) onEvent(message as ClusterEvent);
        else if (message.ok && message.subscribed) {
          accepted = true;
          resolve({ ended, close: () => ((closedByUs = true), socket.end()) });
        } else reject(new Error(`control socket ${path}: ${message.error ?? 'events refused'}`));
      }
    });
    socket.on('close', () => {
      if (!accepted) return reject(new Error(`control socket ${path} closed before the event stream began`));
      if (closedByUs) endStream.resolve();
      else endStream.reject(new Error(`control socket ${path}: the node closed the event stream (it stopped, or died)`));
    });
  });
}

/** Client side: sends one request, reports progress, resolves with the final result. */
export function requestControl(path: string, request: ControlRequest, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<ControlResult> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffered = '';
    let result: ControlResult | null = null;
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('error', (error) => reject(new Error(`control socket ${path}: ${error.message}`)));
    socket.on('data', (text: string) => {
      buffered += text;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const message = JSON.parse(buffered.slice(0, newline)) as { progress?: { doneBytes: number; totalBytes: number } } & ControlResult;
        buffered = buffered.slice(newline + 1);
        if (message.progress) onProgress?.(message.progress.doneBytes, message.progress.totalBytes);
        else result = message;
      }
    });
    socket.on('close', () => (result ? resolve(result) : reject(new Error(`control socket ${path} closed without a result`))));
  });
}
