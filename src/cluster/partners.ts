// The partner links of one node: a listener for the nodes after it in the config and a connector,
// with a reconnect loop, to each node before it. One link per pair: the node later in the config
// always dials, so two nodes never race each other into two links.
import { connectPartner, HelloRefusedError, UnprovenPeerError, RefusalReason, PartnerListener, type LinkContext, type PartnerLink } from '../partner/index.js';

/**
 * A partner not heard from for this long counts as gone. The disk lease, not the link, decides a
 * takeover, so a link declared dead while its node lives costs a reconnect and write-through for a
 * moment, never a second authority (event-loop stalls of a few hundred ms have been measured).
 */
export const DEFAULT_PARTNER_TIMEOUT_MS = 1000;

/** How long a connector waits before dialling a partner that was down or refused. */
export const RECONNECT_INTERVAL_MS = 500;

export interface PartnerAddress {
  nodeId: number;
  name: string;
  host: string;
  port: number;
}

export class Partners {
  private readonly links = new Map<number, PartnerLink>();
  private listener: PartnerListener | null = null;
  private readonly timers = new Set<() => void>();
  private stopped = false;
  /** Told about every link that comes up and every one that goes down. */
  onUp: (link: PartnerLink) => void = () => undefined;
  onDown: (nodeId: number, reason: string) => void = () => undefined;
  /** A partner refused this node's hello for a stale epoch: there was a takeover this node missed. */
  onStaleEpoch: (message: string) => void = () => undefined;

  constructor(
    private readonly context: LinkContext,
    readonly names: ReadonlyMap<number, string>,
    /** A link silent this long is closed; heartbeats go out four times as often. */
    private readonly deadAfterMs: number = DEFAULT_PARTNER_TIMEOUT_MS,
    /** Where this node's connections leave from (its own partner host), which partners check its id against. */
    private readonly sourceAddress?: string,
  ) {}

  async listen(address: { host: string; port: number }): Promise<void> {
    const listener = new PartnerListener(this.context);
    listener.onLink = (link) => this.adopt(link);
    await listener.listen(address);
    this.listener = listener;
  }

  /** Dials `partner` now and whenever its link is down, until stop(). */
  dial(partner: PartnerAddress): void {
    const attempt = async (): Promise<void> => {
      if (this.stopped || this.links.get(partner.nodeId)?.isOpen) return;
      try {
        const address = { host: partner.host, port: partner.port, nodeId: partner.nodeId, localAddress: this.sourceAddress };
        await connectPartner(address, this.context, (link) => this.adopt(link, () => this.later(attempt)));
      } catch (error) {
        // A refusal or a failed proof is a configuration problem worth a line each time (another
        // key file, another cluster); a partner that is down is not.
        if (error instanceof HelloRefusedError) {
          this.context.logger.error(`partner ${partner.name} (${partner.host}:${partner.port}): ${error.message}`);
          if (error.reason === RefusalReason.StaleEpoch) return this.onStaleEpoch(error.message);
        } else if (error instanceof UnprovenPeerError) {
          this.context.logger.error(`partner ${partner.name} (${partner.host}:${partner.port}): ${error.message}`);
        } else this.context.logger.debug(`partner ${partner.name} (${partner.host}:${partner.port}) not reachable: ${(error as Error).message}`);
        this.later(attempt);
      }
    };
    void attempt();
  }

  link(nodeId: number): PartnerLink | null {
    const link = this.links.get(nodeId);
    return link?.isOpen ? link : null;
  }

  /** Open links, in node id order. */
  live(): PartnerLink[] {
    return [...this.links.entries()].sort(([a], [b]) => a - b).map(([, link]) => link).filter((link) => link.isOpen);
  }

  /** How many links are open (live().length, without building the list). */
  liveCount(): number {
    let count = 0;
    for (const link of this.links.values()) if (link.isOpen) count++;
    return count;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const cancel of this.timers) cancel();
    this.timers.clear();
    for (const link of this.links.values()) link.close('node stopping');
    await this.listener?.close();
  }

  /** Counts links that came up (MemoryManager: a mirrored write must not straddle one). */
  generation = 0;

  /** Tells every linked partner this node's epoch now (a heartbeat each), after a claim. */
  announceEpoch(): void {
    for (const link of this.links.values()) link.beat();
  }

  private adopt(link: PartnerLink, afterClose?: () => void): void {
    const nodeId = link.peer.nodeId;
    if (this.stopped) {
      link.close('node stopping');
      return;
    }
    this.links.set(nodeId, link);
    this.generation++;
    link.watch({ intervalMs: Math.max(10, Math.floor(this.deadAfterMs / 4)), deadAfterMs: this.deadAfterMs, epoch: () => this.context.local.epoch });
    const previous = link.onClose;
    link.onClose = (reason) => {
      previous(reason);
      if (this.links.get(nodeId) === link) this.links.delete(nodeId);
      if (!this.stopped) {
        this.context.logger.warn(`partner ${this.names.get(nodeId) ?? nodeId} lost: ${reason}`);
        this.onDown(nodeId, reason);
        afterClose?.();
      }
    };
    this.onUp(link);
  }

  private later(work: () => Promise<void>): void {
    if (this.stopped) return;
    const cancel = this.context.clock.setTimer(RECONNECT_INTERVAL_MS, () => {
      this.timers.delete(cancel);
      void work();
    });
    this.timers.add(cancel);
  }

}
