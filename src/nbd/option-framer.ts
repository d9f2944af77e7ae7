// Incremental framer for the handshake: the 4-byte client flags, then option requests
// (IHAVEOPT magic, option code, length, data). A declared length above the limit ends the
// connection before any buffer of that size exists.
import { IHAVEOPT, KNOWN_CLIENT_FLAGS, MAX_OPTION_BYTES, OPTION_HEADER_BYTES } from './constants.js';
import { FramingError } from './request-framer.js';

export interface OptionRequest {
  option: number;
  data: Buffer;
}

export class OptionFramer {
  private buffered: Buffer = Buffer.alloc(0);
  private clientFlags: number | null = null;

  constructor(private readonly maxOptionBytes = MAX_OPTION_BYTES) {}

  /** The client flags, once their four bytes have arrived. */
  get flags(): number | null {
    return this.clientFlags;
  }

  /** Appends a chunk; reads the client flags once they are complete. Throws FramingError on bad flags. */
  push(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    if (this.clientFlags !== null || this.buffered.length < 4) return;
    this.clientFlags = this.buffered.readUInt32BE(0);
    this.buffered = this.buffered.subarray(4);
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
    if (this.clientFlags === null || this.buffered.length < OPTION_HEADER_BYTES) return null;
    const magic = this.buffered.readBigUInt64BE(0);
    if (magic !== IHAVEOPT) throw new FramingError(`bad option magic 0x${magic.toString(16)}`);
    const option = this.buffered.readUInt32BE(8);
    const length = this.buffered.readUInt32BE(12);
    if (length > this.maxOptionBytes) {
      throw new FramingError(`option ${option} declares ${length} bytes, more than the ${this.maxOptionBytes} allowed`);
    }
    if (this.buffered.length < OPTION_HEADER_BYTES + length) return null;
    // Copy: the data outlives this chunk in the negotiator's replies and state.
    const data = Buffer.from(this.buffered.subarray(OPTION_HEADER_BYTES, OPTION_HEADER_BYTES + length));
    this.buffered = this.buffered.subarray(OPTION_HEADER_BYTES + length);
    return { option, data };
  }

  /** Bytes received after the last whole option: the start of the transmission phase. */
  takeRemainder(): Buffer {
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }
}
