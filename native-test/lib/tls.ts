// TLS material for the native tests, made with GnuTLS's own tools (psktool, certtool) the way the
// nbdkit-tls(1) and QEMU TLS docs describe: PSK files, a CA, a server certificate for loopback and
// client certificates, in the directory layouts nbdkit, QEMU and libnbd look for.
//
// Layouts (file names are fixed by the tools, not by us):
//   nbdkit --tls-certificates=DIR / ftvm tls.certificates   DIR/{ca-cert,server-cert,server-key}.pem
//   QEMU tls-creds-x509,endpoint=client,dir=DIR             DIR/ca-cert.pem [+ client-cert.pem, client-key.pem]
//   libnbd tls-certificates=DIR / set_tls_certificates      the same client layout as QEMU
//   QEMU tls-creds-psk,dir=DIR                              DIR/keys.psk (psktool format)
//   nbdkit --tls-psk=FILE / libnbd tls-psk-file=FILE        any file in psktool format: "identity:hexkey" lines
import fs from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './run.js';

/** The tools these helpers run (Debian package gnutls-bin). */
export const TLS_TOOLS = ['psktool', 'certtool'];

export const SERVER_HOSTS = { dns: ['localhost'], ip: ['127.0.0.1', '::1'] };

/**
 * Adds a random 256-bit key for `identity` to `file` (created if missing, mode 0600).
 *   psktool -u NAME   the identity, the TLS-PSK "username" a client names in its ClientHello
 *   psktool -p FILE   the key file; psktool appends or replaces that identity's line
 * The default key size (-s 32 bytes) is what nbdkit and QEMU document.
 */
export async function addPskIdentity(file: string, identity: string): Promise<void> {
  await runOk('psktool', ['-u', identity, '-p', file]);
}

/** Makes a psktool-format file with one random key per identity; returns the key of each (hex). */
export async function makePskFile(file: string, identities: readonly string[]): Promise<Map<string, string>> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  for (const identity of identities) await addPskIdentity(file, identity);
  return readPskFile(file);
}

export async function readPskFile(file: string): Promise<Map<string, string>> {
  const keys = new Map<string, string>();
  for (const line of (await fs.readFile(file, 'utf8')).split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) keys.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return keys;
}

/**
 * QEMU's tls-creds-psk takes a directory and reads DIR/keys.psk from it (a fixed name); the file is
 * the same psktool format. QEMU's default username is "qemu", so tests always pass username=.
 */
export async function makeQemuPskDirectory(directory: string, pskFile: string): Promise<string> {
  await fs.mkdir(directory, { recursive: true });
  await fs.copyFile(pskFile, path.join(directory, 'keys.psk'));
  return directory;
}

/** A CA that signs the other certificates: its certificate and (private) key. */
export interface CertificateAuthority {
  cert: string;
  key: string;
}

/**
 * A private key. certtool --generate-privkey with
 *   --key-type=rsa --bits=2048  RSA: every TLS stack here (GnuTLS in nbdkit/libnbd/QEMU/nbd-client,
 *                               OpenSSL in Node) takes it; 2048 bits keeps generation fast.
 *   --no-text                   only the PEM block, no human-readable dump before it.
 */
async function makePrivateKey(file: string): Promise<void> {
  await runOk('certtool', ['--generate-privkey', '--key-type=rsa', '--bits=2048', '--no-text', '--outfile', file]);
  await fs.chmod(file, 0o600);
}

/**
 * certtool takes certificate fields from a template file (one "key = value" per line; a bare word
 * is a flag). Written beside the output and removed after use.
 */
async function withTemplate<T>(directory: string, lines: string[], use: (template: string) => Promise<T>): Promise<T> {
  const template = path.join(directory, `template-${process.pid}-${Date.now()}.info`);
  await fs.writeFile(template, `${lines.join('\n')}\n`);
  try {
    return await use(template);
  } finally {
    await fs.rm(template, { force: true });
  }
}

/**
 * A self-signed CA in `directory` (ca-cert.pem, ca-key.pem).
 *   certtool --generate-self-signed --load-privkey KEY --template T
 * Template:
 *   cn = NAME          the CA's subject
 *   ca                 basicConstraints CA:TRUE; QEMU refuses a ca-cert.pem without it
 *   cert_signing_key   keyUsage keyCertSign, so GnuTLS and OpenSSL accept what it signs
 *   expiration_days    long enough that no test run meets it
 */
export async function makeCertificateAuthority(directory: string, commonName: string): Promise<CertificateAuthority> {
  await fs.mkdir(directory, { recursive: true });
  const key = path.join(directory, 'ca-key.pem');
  const cert = path.join(directory, 'ca-cert.pem');
  await makePrivateKey(key);
  await withTemplate(directory, [`cn = ${commonName}`, 'ca', 'cert_signing_key', 'expiration_days = 3650'], (template) =>
    runOk('certtool', ['--generate-self-signed', '--load-privkey', key, '--template', template, '--no-text', '--outfile', cert]),
  );
  return { cert, key };
}

/**
 * A certificate signed by `ca`:
 *   certtool --generate-certificate --load-privkey KEY --load-ca-certificate CA --load-ca-privkey CAKEY --template T
 */
async function signCertificate(ca: CertificateAuthority, keyFile: string, certFile: string, templateLines: string[]): Promise<void> {
  await makePrivateKey(keyFile);
  await withTemplate(path.dirname(certFile), templateLines, (template) =>
    runOk('certtool', [
      '--generate-certificate',
      '--load-privkey', keyFile,
      '--load-ca-certificate', ca.cert,
      '--load-ca-privkey', ca.key,
      '--template', template,
      '--no-text',
      '--outfile', certFile,
    ]),
  );
}

/**
 * The server side, laid out as nbdkit --tls-certificates and ftvm's tls.certificates expect:
 * DIR/ca-cert.pem (to verify client certificates), DIR/server-cert.pem, DIR/server-key.pem.
 * Template:
 *   cn = localhost                  for old clients that still look at the CN
 *   dns_name / ip_address           subjectAltName: libnbd, QEMU and nbd-client check the name they
 *                                   dialled against these, so both 127.0.0.1 and localhost verify
 *   tls_www_server                  extendedKeyUsage serverAuth; QEMU checks it when it loads creds
 *   encryption_key, signing_key     keyUsage for RSA key exchange and for (EC)DHE signatures
 */
export async function makeServerCertificate(ca: CertificateAuthority, directory: string, hosts = SERVER_HOSTS): Promise<string> {
  await fs.mkdir(directory, { recursive: true });
  await fs.copyFile(ca.cert, path.join(directory, 'ca-cert.pem'));
  await signCertificate(ca, path.join(directory, 'server-key.pem'), path.join(directory, 'server-cert.pem'), [
    'organization = ftvm tests',
    `cn = ${hosts.dns[0] ?? hosts.ip[0]}`,
    ...hosts.dns.map((name) => `dns_name = ${name}`),
    ...hosts.ip.map((address) => `ip_address = ${address}`),
    'tls_www_server',
    'encryption_key',
    'signing_key',
    'expiration_days = 3650',
  ]);
  return directory;
}

/**
 * A client directory as QEMU (tls-creds-x509,endpoint=client,dir=DIR) and libnbd (tls-certificates=DIR)
 * read it: DIR/ca-cert.pem verifies the server; DIR/client-cert.pem + client-key.pem, when present,
 * are presented to servers that ask (--tls-verify-peer). The subject CN is the client's identity.
 * Template: cn = NAME, tls_www_client (extendedKeyUsage clientAuth, checked by QEMU and by servers),
 * encryption_key + signing_key. `trust` is the CA whose certificate goes in as ca-cert.pem (default:
 * the signer), so a client can hold a certificate from one CA while trusting another.
 */
export async function makeClientCertificate(
  ca: CertificateAuthority,
  directory: string,
  commonName: string,
  trust: CertificateAuthority = ca,
): Promise<string> {
  await fs.mkdir(directory, { recursive: true });
  await fs.copyFile(trust.cert, path.join(directory, 'ca-cert.pem'));
  await signCertificate(ca, path.join(directory, 'client-key.pem'), path.join(directory, 'client-cert.pem'), [
    'organization = ftvm tests',
    `cn = ${commonName}`,
    'tls_www_client',
    'encryption_key',
    'signing_key',
    'expiration_days = 3650',
  ]);
  return directory;
}

/** A client directory with only DIR/ca-cert.pem: verifies the server, has no certificate to present. */
export async function makeTrustOnlyDirectory(ca: CertificateAuthority, directory: string): Promise<string> {
  await fs.mkdir(directory, { recursive: true });
  await fs.copyFile(ca.cert, path.join(directory, 'ca-cert.pem'));
  return directory;
}

export interface PskMaterial {
  /** psktool file with ALLOWED_IDENTITY and OTHER_IDENTITY: what the server loads (tls.pskFile). */
  file: string;
  keys: Map<string, string>;
  /** DIR/keys.psk for QEMU, same keys. */
  qemuDir: string;
  /** ALLOWED_IDENTITY with a different random key: must be refused in the handshake. */
  wrongFile: string;
  wrongQemuDir: string;
  /** An identity the server does not know (its own random key). */
  strangerFile: string;
}

export interface X509Material {
  ca: CertificateAuthority;
  /** ca-cert.pem, server-cert.pem, server-key.pem: what the server loads (tls.certificates). */
  serverDir: string;
  /** Client certificate CN=ALLOWED_IDENTITY (+ ca-cert.pem). */
  allowedClientDir: string;
  /** Client certificate CN=OTHER_IDENTITY (+ ca-cert.pem). */
  otherClientDir: string;
  /** Only ca-cert.pem: verifies the server, no client certificate. */
  trustOnlyDir: string;
  /** CN=ALLOWED_IDENTITY, but signed by another CA (trusts the right CA for the server). */
  foreignClientDir: string;
  /** ca-cert.pem of another CA only: the server's certificate must fail verification. */
  wrongTrustDir: string;
}

export interface TlsMaterial {
  directory: string;
  psk: PskMaterial;
  x509: X509Material;
}

/** The identity tests allow on restricted exports, and one they do not. */
export const ALLOWED_IDENTITY = 'alice';
export const OTHER_IDENTITY = 'bob';
export const STRANGER_IDENTITY = 'mallory';

/** Everything the TLS tests use, under `directory` (psk/, x509/server, x509/alice, ...). */
export async function makeTlsMaterial(directory: string): Promise<TlsMaterial> {
  const pskDir = path.join(directory, 'psk');
  const file = path.join(pskDir, 'nbd.psk');
  const keys = await makePskFile(file, [ALLOWED_IDENTITY, OTHER_IDENTITY]);
  const wrongFile = path.join(pskDir, 'wrong.psk');
  await makePskFile(wrongFile, [ALLOWED_IDENTITY]);
  const strangerFile = path.join(pskDir, 'stranger.psk');
  await makePskFile(strangerFile, [STRANGER_IDENTITY]);
  const psk: PskMaterial = {
    file,
    keys,
    qemuDir: await makeQemuPskDirectory(path.join(pskDir, 'qemu'), file),
    wrongFile,
    wrongQemuDir: await makeQemuPskDirectory(path.join(pskDir, 'qemu-wrong'), wrongFile),
    strangerFile,
  };

  const x509Dir = path.join(directory, 'x509');
  const ca = await makeCertificateAuthority(path.join(x509Dir, 'ca'), 'ftvm test CA');
  const otherCa = await makeCertificateAuthority(path.join(x509Dir, 'other-ca'), 'some other CA');
  const x509: X509Material = {
    ca,
    serverDir: await makeServerCertificate(ca, path.join(x509Dir, 'server')),
    allowedClientDir: await makeClientCertificate(ca, path.join(x509Dir, ALLOWED_IDENTITY), ALLOWED_IDENTITY),
    otherClientDir: await makeClientCertificate(ca, path.join(x509Dir, OTHER_IDENTITY), OTHER_IDENTITY),
    trustOnlyDir: await makeTrustOnlyDirectory(ca, path.join(x509Dir, 'trust-only')),
    foreignClientDir: await makeClientCertificate(otherCa, path.join(x509Dir, 'foreign'), ALLOWED_IDENTITY, ca),
    wrongTrustDir: await makeTrustOnlyDirectory(otherCa, path.join(x509Dir, 'wrong-trust')),
  };
  return { directory, psk, x509 };
}

/**
 * The libnbd URI (nbdinfo, nbdcopy, nbdsh -u) for a TLS export. libnbd 1.14 (Debian 12) reads only
 * tls-certificates= and tls-psk-file= from the query: the PSK identity must be the URI's user part
 * (nbds://alice@host/...), a tls-username= parameter is silently ignored, and without a user libnbd
 * calls getlogin_r(), which fails with ENXIO when there is no controlling terminal (CI, mocha).
 * There is no tls-verify-peer= either: the server is verified exactly when DIR has ca-cert.pem.
 */
export function tlsUri(
  target: { host: string; port: number },
  exportName: string,
  credentials: { pskFile: string; username: string } | { certificates: string; username?: string },
): string {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  const user = credentials.username !== undefined ? `${encodeURIComponent(credentials.username)}@` : '';
  const query = 'pskFile' in credentials ? `tls-psk-file=${credentials.pskFile}` : `tls-certificates=${credentials.certificates}`;
  return `nbds://${user}${host}:${target.port}/${encodeURIComponent(exportName)}?${query}`;
}

/** QEMU --object for PSK: endpoint=client, dir=DIR holding keys.psk, username= the identity (default "qemu"). */
export function qemuPskObject(id: string, directory: string, username: string): string {
  return `tls-creds-psk,id=${id},endpoint=client,dir=${directory},username=${username}`;
}

/** QEMU --object for X.509: dir=DIR with ca-cert.pem (required even with verify-peer=off) and optional client cert/key. */
export function qemuX509Object(id: string, directory: string, verifyPeer = true): string {
  return `tls-creds-x509,id=${id},endpoint=client,dir=${directory},verify-peer=${verifyPeer ? 'on' : 'off'}`;
}

/**
 * QEMU --image-opts for an NBD export over TLS. tls-creds= names the --object; QEMU checks the
 * server certificate against host= unless tls-hostname= says otherwise. driver=raw over file.driver=nbd
 * so qemu-img reports the format as raw, as for plain nbd:// URIs.
 */
export function qemuImageOpts(target: { host: string; port: number }, exportName: string, credsId: string, tlsHostname?: string): string {
  return [
    'driver=raw',
    'file.driver=nbd',
    `file.host=${target.host}`,
    `file.port=${target.port}`,
    `file.export=${exportName}`,
    `file.tls-creds=${credsId}`,
    ...(tlsHostname ? [`file.tls-hostname=${tlsHostname}`] : []),
  ].join(',');
}
