// The code of a lease file's thread (lease-file-thread.ts says why it has one): blocking reads, and
// writes each followed by fdatasync, in the order they arrive. Loaded only as a worker.
import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';

export type LeaseThreadRequest = { id: number; op: 'read'; fd: number; length: number } | { id: number; op: 'write'; fd: number; at: number; bytes: Uint8Array };
export interface LeaseThreadReply {
  id: number;
  error: string | null;
  bytes?: Uint8Array;
  bytesRead?: number;
}

function serve(): void {
  const port = parentPort;
  if (!port) return;
  port.on('message', (request: LeaseThreadRequest) => {
    try {
      if (request.op === 'read') {
        const bytes = new Uint8Array(request.length);
        let bytesRead = 0;
        while (bytesRead < request.length) {
          const got = fs.readSync(request.fd, bytes, bytesRead, request.length - bytesRead, bytesRead);
          if (got === 0) break;
          bytesRead += got;
        }
        port.postMessage({ id: request.id, error: null, bytes, bytesRead } satisfies LeaseThreadReply, [bytes.buffer]);
        return;
      }
      let written = 0;
      while (written < request.bytes.length) written += fs.writeSync(request.fd, request.bytes, written, request.bytes.length - written, request.at + written);
      fs.fdatasyncSync(request.fd);
      port.postMessage({ id: request.id, error: null } satisfies LeaseThreadReply);
    } catch (error) {
      port.postMessage({ id: request.id, error: (error as Error).message } satisfies LeaseThreadReply);
    }
  });
  // Loaded: from here on the thread needs nothing of the threadpool (its module came through it).
  port.postMessage({ id: 0, error: null } satisfies LeaseThreadReply);
}

serve();
