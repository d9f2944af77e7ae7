// A RAM volume that remembers the most reads and writes it ever had in flight at once, and their
// bytes: the server documents a per-connection in-flight bound, and this is how a round sees it.
import { RamVolume } from '../support/ram-volume.js';

export class GaugedVolume extends RamVolume {
  private inFlight = 0;
  private inFlightBytes = 0;
  peakRequests = 0;
  peakBytes = 0;

  override async read(offset: number, into: Buffer): Promise<void> {
    return this.gauge(into.length, () => super.read(offset, into));
  }

  override async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    return this.gauge(
      data.reduce((sum, piece) => sum + piece.length, 0),
      () => super.write(offset, data, fua),
    );
  }

  /** Called between rounds; also drops RamVolume's call log, which would otherwise grow for the whole run. */
  resetPeaks(): void {
    this.peakRequests = 0;
    this.peakBytes = 0;
    this.calls.length = 0;
  }

  private async gauge(bytes: number, operation: () => Promise<void>): Promise<void> {
    this.inFlight++;
    this.inFlightBytes += bytes;
    this.peakRequests = Math.max(this.peakRequests, this.inFlight);
    this.peakBytes = Math.max(this.peakBytes, this.inFlightBytes);
    try {
      await operation();
    } finally {
      this.inFlight--;
      this.inFlightBytes -= bytes;
    }
  }
}
