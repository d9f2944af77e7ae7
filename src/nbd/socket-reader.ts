// How big an NBD connection's own read buffer is (the reading itself: core/socket-reader.ts).
export { readingInto } from '../core/index.js';

/** One read's worth in the transmission phase: a 1 MiB WRITE arrives in a handful of reads. */
export const READ_BUFFER_BYTES = 256 * 1024;
/**
 * Before a client chose an export it sends only options (at most MAX_OPTION_BYTES each, framed
 * across reads): a connection that never gets that far costs this much, not READ_BUFFER_BYTES.
 */
export const HANDSHAKE_READ_BUFFER_BYTES = 16 * 1024;
