// What a partner link runs over: a byte stream to another node, dialled or accepted. The link,
// the handshake and the listener see only this interface, so test/sim can run real nodes over a
// simulated network, and production runs them over TCP, or TLS over TCP.
import { ClusterError } from '../core/index.js';
import net from 'node:net';
import tls from 'node:tls';
import { PARTNER_TLS_IDENTITY, type PartnerKey } from './handshake.js';

/** The part of a net.Socket a link uses; net.Socket and tls.TLSSocket have it as they are. */
export interface LinkSocket {
  readonly destroyed: boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  /** Bytes written and not yet taken by the kernel (net.Socket has it). */
  readonly writableLength?: number;
  /** `done` comes once the bytes were handed to the kernel, or with the error that stopped them. */
  write(data: Buffer, done?: (error?: Error | null) => void): boolean;
  cork(): void;
  uncork(): void;
  end(): void;
  destroy(): void;
  destroySoon(): void;
  on(event: 'data', listener: (chunk: Buffer) => void): this;
  on(event: 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  off(event: 'data', listener: (chunk: Buffer) => void): this;
  off(event: 'close', listener: () => void): this;
  off(event: 'error', listener: (error: Error) => void): this;
}

export interface LinkListening {
  readonly port: number;
  close(): Promise<void>;
}

export interface PartnerTransport {
  /** A stream to `address`, from `localAddress` when given; rejects when it cannot be had. */
  dial(address: { host: string; port: number; localAddress?: string }): Promise<LinkSocket>;
  /** Accepts streams at `address`; each goes to `accept` before anything was read from it. */
  listen(address: { host: string; port: number }, accept: (socket: LinkSocket) => void): Promise<LinkListening>;
}

/** TLS 1.3 with a PSK: AES-GCM first (hardware-accelerated almost everywhere). */
const PARTNER_TLS_OPTIONS = { minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256' } as const;

/** Node's TLSSocket takes a server's pskCallback as tls.createServer does; its typings lack it. */
type PskServerOptions = tls.TLSSocketOptions & { pskCallback(socket: tls.TLSSocket, identity: string): Buffer | null };

export class DialError extends ClusterError {
  override name = 'DialError';
}

/**
 * TCP, or with `tlsKey` TLS 1.3 with that pre-shared key. A TLS listener wraps each accepted socket
 * at once (its remote address is known before the TLS handshake, so strangers are still turned away
 * before any work); the link's own handshake then runs inside TLS.
 */
export function tcpTransport(key: PartnerKey | null): PartnerTransport {
  return {
    dial(address) {
      const where = { host: address.host, port: address.port, ...(address.localAddress ? { localAddress: address.localAddress } : {}) };
      return new Promise((resolve, reject) => {
        const socket = key
          ? tls.connect({ ...where, ...PARTNER_TLS_OPTIONS, pskCallback: () => ({ psk: key.tls, identity: PARTNER_TLS_IDENTITY }), checkServerIdentity: () => undefined })
          : net.connect(where);
        const ready = key ? 'secureConnect' : 'connect';
        const failed = (error: Error): void => reject(new DialError(key ? `TLS: ${error.message}` : error.message));
        socket.once(ready, () => {
          socket.off('error', failed);
          socket.setNoDelay(true);
          resolve(socket);
        });
        socket.once('error', failed);
      });
    },
    async listen(address, accept) {
      const server = net.createServer((raw) => {
        raw.on('error', () => undefined);
        raw.setNoDelay(true);
        if (!key) return accept(raw);
        const options: PskServerOptions = { isServer: true, ...PARTNER_TLS_OPTIONS, pskCallback: (_socket, identity) => (identity === PARTNER_TLS_IDENTITY ? key.tls : null) };
        const secure = new tls.TLSSocket(raw, options);
        secure.on('error', () => undefined);
        accept(secure);
      });
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(address.port, address.host, () => resolve()));
      return {
        port: (server.address() as net.AddressInfo).port,
        close: () => new Promise<void>((resolve) => server.close(() => resolve())),
      };
    },
  };
}
