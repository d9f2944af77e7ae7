// The NBD server: listeners (TCP and unix sockets), the export catalog, and the live connections.
import fs from 'node:fs/promises';
import net from 'node:net';
import { RequestBudget } from './budget.js';
import { BufferPool, ReplyPool } from './reply-pool.js';
import { Connection, type ConnectionContext, type ConnectionLimits, type RequestObserver } from './connection.js';
import type { ExportCatalog, ExportEntry } from './negotiation.js';
import { TLS_OFF, type NbdTls } from './tls.js';
import type { Logger } from '../observe/index.js';

/** What a node lets its NBD clients hold and do (config `limits`). */
export interface ServerLimits extends ConnectionLimits {
  connections: number;
  connectionsPerAddress: number;
  nodeBytesInFlight: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  connections: 1024,
  connectionsPerAddress: 128,
  requestsInFlight: 256,
  bytesInFlight: 64 * 1024 * 1024,
  nodeBytesInFlight: 512 * 1024 * 1024,
  backlogTimeoutMs: 60_000,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 0,
};

/** Free read reply buffers kept for reuse: enough for 1 MiB reads at a queue depth of 16. */
export const REPLY_BUFFERS_KEPT_BYTES = 16 * 1024 * 1024;
/** Free WRITE payload buffers kept for reuse: a few clients' worth of 1 MiB writes at queue depth 8. */
export const WRITE_BUFFERS_KEPT_BYTES = 32 * 1024 * 1024;

/** How often connections are checked for deadlines (handshake, stalled replies, idleness). */
const SWEEP_INTERVAL_MS = 1000;
/** A client that vanished without a FIN or RST is found by TCP keepalive after about this long plus the probes. */
const KEEPALIVE_DELAY_MS = 60_000;
/** Refused connections are logged at most this often (the rest are counted into the next line). */
const REFUSAL_LOG_INTERVAL_MS = 1000;

export interface ServerOptions {
  limits?: ServerLimits;
  tls?: NbdTls;
  observer?: RequestObserver;
}

export type ListenAddress = { host: string; port: number } | { path: string };

export function describeAddress(address: ListenAddress): string {
  return 'path' in address ? `unix:${address.path}` : `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/**
 * The export a connection had chosen, for its detach line (none if it left during negotiation), so
 * the open and close lines of one client carry the same fields (test/integration/logs.test.ts).
 */
function exportField(connection: Connection): { export?: string } {
  const name = connection.exportName;
  return name === undefined ? {} : { export: name };
}

/** Exports by name; the first one added also answers to the empty (default) name. */
export class Exports implements ExportCatalog {
  private readonly byName = new Map<string, ExportEntry>();

  add(entry: ExportEntry): void {
    if (entry.name === '' || this.byName.has(entry.name)) throw new Error(`export name '${entry.name}' is empty or taken`);
    this.byName.set(entry.name, entry);
  }

  /** A volume deleted online: new clients no longer see it (its open connections are dropped by the server). */
  remove(name: string): void {
    this.byName.delete(name);
  }

  find(name: string): ExportEntry | undefined {
    return name === '' ? this.byName.values().next().value : this.byName.get(name);
  }

  all(): readonly ExportEntry[] {
    return [...this.byName.values()];
  }
}

export class NbdServer {
  private readonly listeners: Array<{ server: net.Server; group: string; connections: Set<Connection> }> = [];
  private readonly connections = new Set<Connection>();
  private readonly perAddress = new Map<string, number>();
  private nextConnectionId = 1;
  private readonly context: ConnectionContext;
  private readonly limits: ServerLimits;
  private sweeper: NodeJS.Timeout | null = null;
  private lastRefusalLogMs = 0;
  private refusalsUnlogged = 0;

  constructor(
    exports: ExportCatalog,
    private readonly logger: Logger,
    options: ServerOptions = {},
  ) {
    this.limits = options.limits ?? DEFAULT_SERVER_LIMITS;
    this.context = {
      catalog: exports,
      replies: new ReplyPool(REPLY_BUFFERS_KEPT_BYTES),
      payloads: new BufferPool(WRITE_BUFFERS_KEPT_BYTES),
      logger,
      limits: this.limits,
      budget: new RequestBudget(this.limits.nodeBytesInFlight),
      tls: options.tls ?? TLS_OFF,
      now: () => performance.now(),
      observer: options.observer ?? null,
    };
  }

  /** Bytes of free read reply buffers the server keeps for reuse (at most REPLY_BUFFERS_KEPT_BYTES). */
  get replyBuffersKept(): number {
    return this.context.replies.retained;
  }

  /** Pooled reply and payload buffers out (taken, not yet given back): zero once every request settled. */
  get buffersOut(): number {
    return this.context.replies.outstanding + this.context.payloads.outstanding;
  }

  /** Bytes of all clients' requests read and not yet answered on the wire. */
  get bytesInFlight(): number {
    return this.context.budget.inFlightBytes;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Requests of all connections read and not yet answered on the wire (summed at a metrics scrape). */
  get requestsInFlight(): number {
    let requests = 0;
    for (const connection of this.connections) requests += connection.requestsInFlight;
    return requests;
  }

  /**
   * Listens on `address`. A group names listeners that go away together: a node's own addresses, or
   * a dead partner's that this node serves while that partner is gone (closeGroup).
   */
  async listen(address: ListenAddress, group = 'own'): Promise<void> {
    if ('path' in address) await removeStaleSocket(address.path);
    const entry = { server: null as unknown as net.Server, group, connections: new Set<Connection>() };
    // Paused: a connection re-homes the socket's handle to read into its own buffer before the first read (socket-reader.ts).
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_DELAY_MS, pauseOnConnect: true }, (socket) => this.accept(socket, entry.connections));
    entry.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const onListening = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in address) server.listen(address.path, onListening);
      else server.listen(address.port, address.host, onListening);
    });
    server.on('error', (error) => this.logger.error(`listener ${describeAddress(address)} failed: ${error.message}`));
    this.listeners.push(entry);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
      this.sweeper.unref();
    }
    this.logger.info(`nbd listening on ${describeAddress(address)}${group === 'own' ? '' : ` (for ${group})`}`);
  }

  /** Stops listening; connections finish their in-flight requests and are closed. */
  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    const closing = this.listeners.splice(0).map((entry) => new Promise<void>((resolve) => entry.server.close(() => resolve())));
    for (const connection of this.connections) connection.shutdown();
    await Promise.all(closing);
  }

  /** Stops the listeners of one group; their connections finish in-flight requests and close. */
  async closeGroup(group: string): Promise<void> {
    const leaving = this.listeners.filter((entry) => entry.group === group);
    for (const entry of leaving) this.listeners.splice(this.listeners.indexOf(entry), 1);
    await Promise.all(
      leaving.map((entry) => {
        const closed = new Promise<void>((resolve) => entry.server.close(() => resolve()));
        for (const connection of entry.connections) connection.shutdown();
        return closed;
      }),
    );
  }

  /** Open connections that chose export `name`. */
  connectionsTo(name: string): number {
    let count = 0;
    for (const connection of this.connections) if (connection.exportName === name) count++;
    return count;
  }

  /** Cuts off every connection to export `name` at once (the volume is being deleted). */
  dropExport(name: string, reason: string): void {
    for (const connection of this.connections) if (connection.exportName === name) connection.kill(reason);
  }

  /** Drops every listener and connection at once, without waiting for requests (a fenced node). */
  abort(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const entry of this.listeners.splice(0)) entry.server.close();
    for (const connection of this.connections) connection.kill('this node was fenced');
  }

  private accept(socket: net.Socket, group: Set<Connection>): void {
    socket.on('error', () => undefined);
    const address = socket.remoteAddress ?? 'unix';
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.connections.size >= this.limits.connections) return this.refuse(socket, `${this.limits.connections} connections are open (limits.connections)`);
    if (socket.remoteAddress && fromAddress >= this.limits.connectionsPerAddress) return this.refuse(socket, `${fromAddress} connections are open from ${address} (limits.connectionsPerAddress)`);
    if (socket.remoteAddress) socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    const connection = new Connection(socket, this.context, this.nextConnectionId++, {
      onClose: (closed) => {
        group.delete(closed);
        this.connections.delete(closed);
        const left = (this.perAddress.get(closed.address) ?? 1) - 1;
        if (left > 0) this.perAddress.set(closed.address, left);
        else this.perAddress.delete(closed.address);
        this.logger.info('client detached', { conn: closed.id, peer: closed.peer, ...exportField(closed) });
      },
    });
    this.connections.add(connection);
    this.perAddress.set(address, fromAddress + 1);
    group.add(connection);
    connection.start();
  }

  /** Closes a connection over a limit at once; one line a second at most, however many come. */
  private refuse(socket: net.Socket, why: string): void {
    socket.destroy();
    const now = performance.now();
    if (now - this.lastRefusalLogMs < REFUSAL_LOG_INTERVAL_MS) {
      this.refusalsUnlogged++;
      return;
    }
    const more = this.refusalsUnlogged > 0 ? ` (${this.refusalsUnlogged} more refused since the last such line)` : '';
    this.refusalsUnlogged = 0;
    this.lastRefusalLogMs = now;
    this.logger.warn(`refusing a connection from ${socket.remoteAddress ?? 'a unix socket'}: ${why}${more}`);
  }

  private sweep(): void {
    const now = performance.now();
    for (const connection of this.connections) connection.sweep(now);
  }
}

/** A socket file left by a killed server blocks listen(); anything that is not a socket is left alone. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    const stat = await fs.lstat(path);
    if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket`);
    await fs.unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
