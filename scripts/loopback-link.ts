// The connecting end of a floor benchmark's link on 127.0.0.1 (bench-mirror-floor,
// bench-forward-floor): no Nagle delay, reads into one buffer of its own (as ftvm's partner link
// does), and a failed link ends the process, since the figures of a run without it are void.
import net from 'node:net';

export function connectLoopback(port: number, readBufferBytes: number, onBytes: (bytes: Buffer) => void, who: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const readBuffer = Buffer.allocUnsafeSlow(readBufferBytes);
    const callback = (bytes: number): boolean => {
      onBytes(readBuffer.subarray(0, bytes));
      return true;
    };
    const socket = net.connect({ host: '127.0.0.1', port, onread: { buffer: readBuffer, callback } }, () => resolve(socket));
    socket.setNoDelay(true);
    socket.on('error', (error) => {
      process.stderr.write(`${who}: link failed: ${error.message}\n`);
      process.exit(1);
    });
  });
}

const corked = new WeakSet<net.Socket>();

/** Writes started in one turn of the loop go out in one writev, as ftvm's partner link batches them. */
export function corkForTurn(socket: net.Socket): void {
  if (corked.has(socket)) return;
  corked.add(socket);
  socket.cork();
  setImmediate(() => {
    corked.delete(socket);
    socket.uncork();
  });
}
