// NBD over TLS (the spec's NBD_OPT_STARTTLS): the credentials a node serves with, and the upgrade of
// a connection's socket once the client asked for TLS and got its acknowledgement.
//
// Credentials as nbdkit and QEMU take them, so one set of files serves every tool:
//   PSK     a psktool file: one `identity:hexkey` per line
//   X.509   a directory with server-cert.pem, server-key.pem and ca-cert.pem (the CA is needed only
//           to verify clients' certificates, verifyPeer)
// A client's identity (for export access, tlsIdentities) is its PSK identity, or the subject CN of a
// client certificate the CA verified. One kind per node (as nbdkit): a Node TLS context holding a
// certificate fails PSK clients ("insufficient credentials").
//
// The upgrade goes through a tls.Server given the plain socket as a new connection: a bare
// server-side TLSSocket never sets `authorized`, so it cannot tell a verified client certificate
// from one signed by any other CA.
import { InputError } from '../core/index.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import type { Socket } from 'node:net';

export type TlsMode = 'off' | 'on' | 'require';

/** The config's `tls` section. */
export interface TlsCredentials {
  mode: TlsMode;
  pskFile?: string;
  certificates?: string;
  verifyPeer: boolean;
}

export class TlsConfigError extends InputError {
  override name = 'TlsConfigError';
}

/** What a connection needs to offer TLS. */
export interface NbdTls {
  readonly mode: TlsMode;
  /**
   * Runs the TLS handshake on a socket whose client was just told to start TLS: `secure` gets the
   * TLS socket once it is done, `failed` the reason if it is not.
   */
  upgrade(socket: Socket, secure: (socket: tls.TLSSocket) => void, failed: (error: Error) => void): void;
  /** Who the client proved to be, once the TLS handshake is done; null for a client without an identity. */
  identityOf(socket: tls.TLSSocket): string | null;
}

export const TLS_OFF: NbdTls = {
  mode: 'off',
  upgrade: (_socket, _secure, failed) => failed(new Error('TLS is off')),
  identityOf: () => null,
};

/** TLS 1.2 is still what some PSK clients settle on; 1.0 and 1.1 are not offered. */
const MIN_TLS_VERSION = 'TLSv1.2';

/** Parses a psktool file; every line `identity:hexkey`, blank lines and `#` comments ignored. */
export function parsePskFile(text: string, source: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) {
      throw new TlsConfigError(`${source} line ${index + 1}: expected identity:hexkey (psktool's format)`);
    }
    if (keys.has(identity)) throw new TlsConfigError(`${source} line ${index + 1}: identity '${identity}' appears twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new TlsConfigError(`${source} holds no key`);
  return keys;
}

async function readSecret(file: string, what: string): Promise<Buffer> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    throw new TlsConfigError(`${what} ${file}: ${(error as Error).message}`);
  }
  try {
    const stat = await handle.stat();
    // A key anyone on the host can read is not a secret (ssh refuses such keys too).
    if ((stat.mode & 0o077) !== 0) throw new TlsConfigError(`${what} ${file} is readable by others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 ${file}`);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

async function readPublic(file: string, what: string): Promise<Buffer> {
  return fs.readFile(file).catch((error: Error) => {
    throw new TlsConfigError(`${what} ${file}: ${error.message}`);
  });
}

/** Loads the configured credentials once, at start: a bad file stops the node with a clear line, not a client. */
export async function loadNbdTls(config: TlsCredentials): Promise<NbdTls> {
  if (config.mode === 'off') return TLS_OFF;
  const psk = config.pskFile ? parsePskFile((await readSecret(config.pskFile, 'TLS PSK file')).toString('utf8'), config.pskFile) : null;
  let credentials: { cert: Buffer; key: Buffer; ca?: Buffer } | undefined;
  if (config.certificates) {
    const dir = config.certificates;
    const cert = await readPublic(path.join(dir, 'server-cert.pem'), 'TLS certificate');
    const key = await readSecret(path.join(dir, 'server-key.pem'), 'TLS key');
    const ca = config.verifyPeer ? await readPublic(path.join(dir, 'ca-cert.pem'), 'TLS CA certificate') : undefined;
    credentials = { cert, key, ...(ca ? { ca } : {}) };
    try {
      // Only to refuse a bad file at start; the servers take the PEMs themselves (a prebuilt
      // secureContext given to tls.createServer finds no signature algorithm for an RSA key).
      tls.createSecureContext({ ...credentials, minVersion: MIN_TLS_VERSION });
    } catch (error) {
      throw new TlsConfigError(`TLS certificates in ${dir}: ${(error as Error).message}`);
    }
  }
  const pskIdentity = new WeakMap<tls.TLSSocket, string>();
  const options: tls.TlsOptions = { minVersion: MIN_TLS_VERSION, ...credentials, requestCert: config.verifyPeer, rejectUnauthorized: config.verifyPeer };
  if (psk) {
    options.pskCallback = (secure, identity) => {
      const key = psk.get(identity) ?? null;
      if (key) pskIdentity.set(secure, identity);
      return key;
    };
    // Only PSK suites can be agreed without a certificate (TLS 1.3 ones take a PSK as they are).
    options.ciphers = 'PSK:ECDHE-PSK:DHE-PSK:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
  }
  return {
    mode: config.mode,
    upgrade(socket, secure, failed) {
      // One server per upgrade: its events then belong to this connection alone (cold path).
      const server = tls.createServer(options);
      server.once('secureConnection', (tlsSocket: tls.TLSSocket) => secure(tlsSocket));
      server.once('tlsClientError', (error: Error) => failed(error));
      server.emit('connection', socket);
    },
    identityOf(socket) {
      const fromPsk = pskIdentity.get(socket);
      if (fromPsk !== undefined) return fromPsk;
      if (!socket.authorized) return null;
      const subject = socket.getPeerCertificate()?.subject as { CN?: string | string[] } | undefined;
      const cn = subject?.CN;
      return typeof cn === 'string' ? cn : Array.isArray(cn) ? (cn[0] ?? null) : null;
    },
  };
}
