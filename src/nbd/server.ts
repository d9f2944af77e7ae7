// The NBD server: listeners (TCP and unix sockets), the export catalog, and the live connections.
import fs from 'node:fs/promises';
import net from 'node:net';
import { Connection } from './connection.js';
import type { ExportCatalog, ExportEntry } from './negotiation.js';
import type { Logger } from '../observe/index.js';

export type ListenAddress = { host: string; port: number } | { path: string };

export function describeAddress(address: ListenAddress): string {
  return 'path' in address ? `unix:${address.path}` : `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Exports by name; the first one added also answers to the empty (default) name. */
export class Exports implements ExportCatalog {
  private readonly byName = new Map<string, ExportEntry>();

  add(entry: ExportEntry): void {
    if (entry.name === '' || this.byName.has(entry.name)) throw new Error(`export name '${entry.name}' is empty or taken`);
    this.byName.set(entry.name, entry);
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
  private nextConnectionId = 1;

  constructor(
    private readonly exports: ExportCatalog,
    private readonly logger: Logger,
  ) {}

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Listens on `address`. A group names listeners that go away together: a node's own addresses, or
   * a dead partner's that this node serves while that partner is gone (closeGroup).
   */
  async listen(address: ListenAddress, group = 'own'): Promise<void> {
    if ('path' in address) await removeStaleSocket(address.path);
    const entry = { server: null as unknown as net.Server, group, connections: new Set<Connection>() };
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket, entry.connections));
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
    this.logger.info(`nbd listening on ${describeAddress(address)}${group === 'own' ? '' : ` (for ${group})`}`);
  }

  /** Stops listening; connections finish their in-flight requests and are closed. */
  async close(): Promise<void> {
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

  /** Drops every listener and connection at once, without waiting for requests (a fenced node). */
  abort(): void {
    for (const entry of this.listeners.splice(0)) entry.server.close();
    for (const connection of this.connections) connection.kill('this node was fenced');
  }

  private accept(socket: net.Socket, group: Set<Connection>): void {
    const connection = new Connection(socket, this.exports, this.logger, this.nextConnectionId++, {
      onClose: (closed) => {
        group.delete(closed);
        this.connections.delete(closed);
        this.logger.debug('connection closed', { conn: closed.id });
      },
    });
    this.connections.add(connection);
    group.add(connection);
    connection.start();
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
