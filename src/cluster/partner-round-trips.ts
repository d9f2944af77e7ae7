// How long a partner takes to answer, measured as a write sees it: a space request asking for
// nothing, sent every ROUND_TRIP_INTERVAL_MS on each live link, queued behind whatever the link
// carries. The last sample per partner is what `ftvm status` and the metrics show. Cold: one small
// request per partner every few seconds, started only by a node that serves clients.
import type { Clock } from '../core/index.js';
import { MessageType, type PartnerLink } from '../partner/index.js';

export const ROUND_TRIP_INTERVAL_MS = 2000;

export class PartnerRoundTrips {
  private readonly lastMs = new Map<number, number>();
  private cancel: (() => void) | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly live: () => readonly PartnerLink[],
  ) {}

  start(): void {
    const tick = (): void => {
      for (const link of this.live()) void this.sample(link);
      this.cancel = this.clock.setTimer(ROUND_TRIP_INTERVAL_MS, tick);
    };
    tick();
  }

  stop(): void {
    this.cancel?.();
    this.cancel = null;
  }

  /** A link came up: measured at once, not at the next tick. */
  linked(link: PartnerLink): void {
    if (this.cancel) void this.sample(link);
  }

  /** The last round trip to `peer` in milliseconds; undefined before the first answer or once its link is down. */
  lastOf(peer: number, linked: boolean): number | undefined {
    if (!linked) this.lastMs.delete(peer);
    return this.lastMs.get(peer);
  }

  private async sample(link: PartnerLink): Promise<void> {
    const sentMs = this.clock.now();
    try {
      await link.request({ type: MessageType.SpaceRequest, bytesWanted: 0 });
      this.lastMs.set(link.peer.nodeId, this.clock.now() - sentMs);
    } catch {
      // A link that closed meanwhile: its partner is down, nothing to measure.
      this.lastMs.delete(link.peer.nodeId);
    }
  }
}
