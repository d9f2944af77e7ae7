// Reading a socket into a buffer of its owner (an NBD connection, a partner link) instead of a new
// one per read.
//
// A net.Socket in its usual mode allocates a fresh 64 KiB ArrayBuffer for every read, so a 1 MiB
// WRITE cost sixteen of them, and V8 ran a mark-compact collection every few requests (external
// memory counts towards its heuristics). Node can read into a caller's buffer instead (the socket's
// `onread` option), but only for sockets it creates itself with that option: a server's accepted
// sockets never get it. So the accepted socket's handle is moved, before anything was read from it,
// into a new Socket created with `onread`. The old Socket is kept, emptied, until the new one
// closes, then destroyed: a listener counts its connections by it, and its close() waits for them.
// A socket already reading (a partner link after its handshake, read with 'data') moves the same
// way, as long as nothing sits in its buffers: the handle keeps reading, into the new buffers.
//
// What reads into the buffer must be consumed or copied before the callback returns: the next read
// overwrites it. TLS sockets, and anything that is not a plain socket with a handle, keep the usual
// mode (the caller listens for 'data').
import net from 'node:net';

interface HandleHolder {
  _handle: unknown;
}

/**
 * `accepted` (just accepted and paused, or read so far with 'data' and nothing left buffered),
 * re-homed in a Socket that reads into `bufferOf()` (asked before every read, so the caller can
 * switch buffers) and calls `onBytes` with each read's bytes; null when the socket cannot be
 * re-homed (the caller then reads it as it is).
 */
export function readingInto(accepted: unknown, bufferOf: () => Buffer, onBytes: (bytes: Buffer) => void): net.Socket | null {
  if (!(accepted instanceof net.Socket) || 'encrypted' in accepted) return null;
  const holder = accepted as unknown as HandleHolder;
  const handle = holder._handle;
  if (handle === null || handle === undefined || accepted.destroyed || accepted.readableLength > 0 || accepted.writableLength > 0 || accepted.connecting) return null;
  holder._handle = null;
  // `handle` is what net.Server itself passes for an accepted connection; the typings leave it out.
  const options = {
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer: bufferOf,
      callback: (bytes: number, into: Uint8Array) => {
        onBytes((into as Buffer).subarray(0, bytes));
      },
    },
  };
  const socket = new net.Socket(options as net.SocketConstructorOpts);
  // The emptied Socket still stands for the connection in its server's count.
  socket.once('close', () => accepted.destroy());
  return socket;
}
