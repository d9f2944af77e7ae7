// Incremental framer for the handshake: the 4-byte client flags, then option requests
// (IHAVEOPT magic, option code, length, data). A declared length above the limit ends the
// connection before any buffer of that size exists.
//
// Chunks are kept as they came and joined once, when a whole option is there: a client that
// trickles an option a byte at a time costs one copy of it, not one per byte.
import { IHAVEOPT, KNOWN_CLIENT_FLAGS, MAX_OPTION_BYTES, OPTION_HEADER_BYTES } from './constants.js';
import { FramingError } from './request-framer.js';

export interface OptionRequest {
  option: number;
  data: Buffer;
}

export class OptionFramer {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private clientFlags: number | null;

  /** `clientFlags`: already known (options resume inside TLS, after STARTTLS); else read first. */
  constructor(
    private readonly maxOptionBytes = MAX_OPTION_BYTES,
    clientFlags: number | null = null,
  ) {
    this.clientFlags = clientFlags;
  }

  /** The client flags, once their four bytes have arrived. */
  get flags(): number | null {
    return this.clientFlags;
  }

  /** Bytes received and not yet taken as flags or options. */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  /** Appends a chunk; reads the client flags once they are complete. Throws FramingError on bad flags. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.clientFlags !== null || this.bufferedBytes < 4) return;
    this.clientFlags = this.front(4).readUInt32BE(0);
    this.consume(4);
    // The spec: a client that sets a flag we do not know must be disconnected.
    if ((this.clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
      throw new FramingError(`unknown client flags 0x${this.clientFlags.toString(16)}`);
    }
  }

  /**
   * The next whole option, or null until more bytes arrive. One at a time, because the option that
   * ends haggling (GO) may be followed at once by transmission requests, which are not options.
   */
  next(): OptionRequest | null {
    if (this.clientFlags === null || this.bufferedBytes < OPTION_HEADER_BYTES) return null;
    const header = this.front(OPTION_HEADER_BYTES);
    const magic = header.readBigUInt64BE(0);
    if (magic !== IHAVEOPT) throw new FramingError(`bad option magic 0x${magic.toString(16)}`);
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > this.maxOptionBytes) {
      throw new FramingError(`option ${option} declares ${length} bytes, more than the ${this.maxOptionBytes} allowed`);
    }
    if (this.bufferedBytes < OPTION_HEADER_BYTES + length) return null;
    // Copy: the data outlives this chunk in the negotiator's replies and state.
    const data = Buffer.from(this.front(OPTION_HEADER_BYTES + length).subarray(OPTION_HEADER_BYTES));
    this.consume(OPTION_HEADER_BYTES + length);
    return { option, data };
  }

  /** Bytes received after the last whole option: the start of the transmission phase. */
  takeRemainder(): Buffer {
    const rest = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.chunks = [];
    this.bufferedBytes = 0;
    return rest;
  }

  /** The first `bytes` buffered bytes as one buffer (joining chunks only when they are split). */
  private front(bytes: number): Buffer {
    let first = this.chunks[0] as Buffer;
    if (first.length < bytes) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    return first.subarray(0, bytes);
  }

  private consume(bytes: number): void {
    this.bufferedBytes -= bytes;
    while (bytes > 0) {
      const first = this.chunks[0] as Buffer;
      if (first.length > bytes) {
        this.chunks[0] = first.subarray(bytes);
        return;
      }
      bytes -= first.length;
      this.chunks.shift();
    }
  }
}
