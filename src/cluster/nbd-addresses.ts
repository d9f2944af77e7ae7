// A node's NBD addresses: its own, and, after a takeover with `takeoverAddresses`, those of a dead
// node whose volumes it serves, so a client that reconnects to one address (QEMU's reconnect-delay)
// rides over the failover. An address still held by someone else (a partner serving this node's
// address while it was away) is retried until it is free or no longer wanted.
import type { Clock } from '../core/index.js';
import type { ListenConfig } from '../config/index.js';
import type { NbdServer } from '../nbd/index.js';
import type { Logger } from '../observe/index.js';

/** How often a listen on an address still held by someone else is tried again. */
const LISTEN_RETRY_MS = 250;

export class NbdAddresses {
  private closed = false;

  constructor(
    private readonly server: NbdServer,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /** Stops retrying (the node stops or was fenced). */
  close(): void {
    this.closed = true;
  }

  /**
   * Listens on `address`; one still in use is retried in the background until it is free, the
   * node stops, or, for a borrowed address, until `wanted` says no more.
   */
  async listen(address: ListenConfig, group: string, wanted: () => boolean = () => true): Promise<void> {
    try {
      await this.server.listen(address, group);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
      this.logger.warn(`${'path' in address ? address.path : `${address.host}:${address.port}`} is in use (a partner may still serve it): retrying`);
      const retry = (): void => {
        if (this.closed || !wanted()) return;
        this.server.listen(address, group).catch((again: NodeJS.ErrnoException) => {
          if (again.code === 'EADDRINUSE') this.clock.setTimer(LISTEN_RETRY_MS, retry);
          else this.logger.error(`listen failed: ${again.message}`);
        });
      };
      this.clock.setTimer(LISTEN_RETRY_MS, retry);
    }
  }

  /** Serves a dead node's TCP NBD addresses here while `wanted` says so. */
  borrow(owner: string, addresses: readonly ListenConfig[], wanted: () => boolean): void {
    for (const address of addresses) {
      if ('path' in address) continue;
      void this.listen(address, `node ${owner}`, wanted).catch((error: Error) => this.logger.error(`cannot serve node ${owner}'s address: ${error.message}`));
    }
  }

  /** Closes the listeners of a borrowed node's addresses; resolves once its clients have left. */
  giveBack(owner: string): Promise<void> {
    return this.server.closeGroup(`node ${owner}`);
  }
}
