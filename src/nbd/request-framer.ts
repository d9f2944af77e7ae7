// Incremental framer for the transmission phase: socket bytes in, whole requests out.
//
// TCP cuts the stream anywhere, so a header or a WRITE payload may span many reads. The framer
// keeps nothing of its input past push(): the socket reads into one buffer per connection that the
// next read overwrites (src/nbd/socket-reader.ts). A partial header is kept in a fixed 28-byte
// buffer; a WRITE payload is copied into pooled segments of at most PAYLOAD_SEGMENT_BYTES, each
// taken as the first of its bytes arrives (so memory follows the bytes received, not the length a
// header claims), once the request is admitted and its length was checked against the payload
// limit: an oversized WRITE is read and thrown away (never kept) and handed on flagged as oversized
// so the caller can answer it with an error and keep the connection in sync. Payloads below the
// pool's smallest class go into small unpooled buffers (Node's slab). The request owns its
// segments from then on (Request.payloadBuffers); the framer gives back only those of a request it
// never handed on (dispose()).
//
// Every request is admitted before it starts, and before one byte of its payload is kept: the sink
// says no when its connection has too much in flight (or has started enough in this turn). The
// framer then stops right there, copies the rest of its input aside, and goes on when resume() is
// called. So however many requests one read holds, no more than the bound are ever started, and
// the connection stops reading its socket meanwhile (which bounds what is set aside to about one
// read).
import { InputError } from '../core/index.js';
import { Command, MAX_PAYLOAD_BYTES, REQUEST_HEADER_BYTES, REQUEST_MAGIC } from './constants.js';
import { BufferPool, MIN_PAYLOAD_CLASS_BYTES } from './reply-pool.js';
import { decodeRequestHeader, type Request } from './wire.js';

export class FramingError extends InputError {
  override name = 'FramingError';
}

export interface RequestSink {
  /** Whether `request` may start now; false holds the framer until resume(). */
  admits(request: Request): boolean;
  /** An admitted request, whole (a WRITE with its payload). */
  onRequest(request: Request): void;
}

const EMPTY = Buffer.alloc(0);

/** The most of a WRITE payload taken from the pool ahead of its bytes. */
export const PAYLOAD_SEGMENT_BYTES = 256 * 1024;

export class RequestFramer {
  private readonly header = Buffer.alloc(REQUEST_HEADER_BYTES);
  private headerFilled = 0;
  private pending: Request | null = null;
  private payloadFilled = 0;
  /** The payload piece being filled, and how much of it is. */
  private segment: Buffer = EMPTY;
  private segmentFilled = 0;
  private discardRemaining = 0;
  private failed = false;
  /** A decoded request the sink has not admitted yet. */
  private held: Request | null = null;
  /** Input behind the held request, copied aside: bytes [heldFrom, heldTo). Only non-empty while one is held. */
  private aside: Buffer = EMPTY;
  private heldFrom = 0;
  private heldTo = 0;

  constructor(
    private readonly sink: RequestSink,
    private readonly maxPayloadBytes = MAX_PAYLOAD_BYTES,
    /** Where WRITE payloads are assembled; the default keeps none (every payload a new buffer). */
    private readonly payloads: BufferPool = new BufferPool(0),
  ) {}

  /** Consumes `chunk`, which the caller may overwrite once this returns; throws FramingError (and refuses further input) when the stream is not NBD. */
  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.setAside(chunk, 0, chunk.length);
      return;
    }
    this.consume(chunk, 0, chunk.length);
  }

  /** Tries the held request again, and goes on with what arrived behind it. */
  resume(): void {
    if (this.failed || this.held === null) return;
    const request = this.held;
    if (!this.sink.admits(request)) return;
    this.held = null;
    this.begin(request);
    if (this.heldFrom < this.heldTo && !this.failed) {
      const from = this.heldFrom;
      const to = this.heldTo;
      this.heldFrom = this.heldTo = 0;
      // consume() sets aside what it cannot take; from `aside` itself that is only a new start.
      this.consume(this.aside, from, to);
    }
  }

  /** True when a decoded request waits for the sink's admission. */
  get holding(): boolean {
    return this.held !== null;
  }

  /** True when the stream stands between two requests (nothing half-read, nothing held). */
  get idle(): boolean {
    return this.pending === null && this.headerFilled === 0 && this.held === null;
  }

  /**
   * The connection is gone: gives back the payload buffer of a WRITE still being read, and returns
   * that request (admitted, never handed on) so its caller can release what admission counted.
   */
  dispose(): Request | null {
    this.failed = true;
    const request = this.pending;
    this.pending = null;
    this.aside = EMPTY;
    this.heldFrom = this.heldTo = 0;
    if (request?.payloadBuffers) {
      for (const buffer of request.payloadBuffers) this.payloads.give(buffer);
      request.payloadBuffers = null;
      request.payload = null;
    }
    this.segment = EMPTY;
    return request;
  }

  private consume(chunk: Buffer, at: number, end: number): void {
    while (at < end) {
      if (this.pending !== null) at = this.fillPayload(chunk, at, end);
      else if (this.headerFilled > 0 || end - at < REQUEST_HEADER_BYTES) at = this.fillHeader(chunk, at, end);
      else at = this.startRequest(chunk, at);
      if (this.held !== null) {
        if (at < end) this.setAside(chunk, at, end);
        return;
      }
    }
  }

  /** Keeps input that arrived behind a held request (the caller reuses its buffer). */
  private setAside(source: Buffer, from: number, to: number): void {
    if (source === this.aside) {
      // Resuming from the aside buffer and held again: the rest is already here.
      this.heldFrom = from;
      this.heldTo = to;
      return;
    }
    const bytes = to - from;
    if (this.heldTo + bytes > this.aside.length) {
      const kept = this.heldTo - this.heldFrom;
      const grown = this.aside.length >= kept + bytes ? this.aside : Buffer.allocUnsafe(Math.max(kept + bytes, 2 * this.aside.length));
      this.aside.copy(grown, 0, this.heldFrom, this.heldTo);
      this.aside = grown;
      this.heldFrom = 0;
      this.heldTo = kept;
    }
    source.copy(this.aside, this.heldTo, from, to);
    this.heldTo += bytes;
  }

  private fillHeader(chunk: Buffer, at: number, end: number): number {
    const take = Math.min(REQUEST_HEADER_BYTES - this.headerFilled, end - at);
    chunk.copy(this.header, this.headerFilled, at, at + take);
    this.headerFilled += take;
    if (this.headerFilled === REQUEST_HEADER_BYTES) {
      this.headerFilled = 0;
      this.startRequest(this.header, 0);
    }
    return at + take;
  }

  /** Decodes a whole header at `at` of `source`; returns where the payload (if any) starts. */
  private startRequest(source: Buffer, at: number): number {
    const magic = source.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      this.failed = true;
      throw new FramingError(`bad request magic 0x${magic.toString(16).padStart(8, '0')}`);
    }
    const request = decodeRequestHeader(source, at);
    if (request.type === Command.Write && request.length > this.maxPayloadBytes) request.oversized = true;
    if (this.sink.admits(request)) this.begin(request);
    else this.held = request;
    return at + REQUEST_HEADER_BYTES;
  }

  /** An admitted request: handed on now, or once its payload is in. */
  private begin(request: Request): void {
    if (request.type !== Command.Write || request.length === 0) {
      this.sink.onRequest(request);
      return;
    }
    if (request.oversized) this.discardRemaining = request.length;
    else {
      request.payloadBuffers = [];
      request.payload = [];
      this.payloadFilled = 0;
      this.segment = EMPTY;
      this.segmentFilled = 0;
    }
    this.pending = request;
  }

  private fillPayload(chunk: Buffer, at: number, end: number): number {
    const request = this.pending as Request;
    if (request.oversized) {
      const take = Math.min(this.discardRemaining, end - at);
      this.discardRemaining -= take;
      if (this.discardRemaining === 0) this.finish(request);
      return at + take;
    }
    if (this.segmentFilled === this.segment.length) this.nextSegment(request);
    const take = Math.min(this.segment.length - this.segmentFilled, end - at);
    chunk.copy(this.segment, this.segmentFilled, at, at + take);
    this.segmentFilled += take;
    this.payloadFilled += take;
    if (this.payloadFilled === request.length) this.finish(request);
    return at + take;
  }

  /** The next piece of a payload, taken now that its first byte is here. */
  private nextSegment(request: Request): void {
    const bytes = Math.min(request.length - this.payloadFilled, PAYLOAD_SEGMENT_BYTES);
    let buffer: Buffer;
    if (bytes < MIN_PAYLOAD_CLASS_BYTES) buffer = Buffer.allocUnsafe(bytes);
    else {
      buffer = this.payloads.take(bytes);
      (request.payloadBuffers as Buffer[]).push(buffer);
    }
    this.segment = buffer.subarray(0, bytes);
    this.segmentFilled = 0;
    (request.payload as Buffer[]).push(this.segment);
  }

  private finish(request: Request): void {
    this.pending = null;
    this.segment = EMPTY;
    this.segmentFilled = 0;
    this.sink.onRequest(request);
  }
}
