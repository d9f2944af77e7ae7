// What a node needs to judge its partner links (partner/introduce.ts): the cluster's partner key,
// whether links are encrypted, which address each node id may come from, which epochs are believable.
//
// The key file is the trust root of the cluster: whoever holds it can join as any node. So it must
// be private to its owner (like an ssh key, a readable one is refused), and every node needs a copy.
// A node id is bound to the host the config gives its partner address: a link claiming node 0 from
// any other address is refused, so one compromised node cannot pose as another from its own host.
import { InputError } from '../core/index.js';
import { randomBytes } from 'node:crypto';
import dns from 'node:dns/promises';
import fs from 'node:fs/promises';
import net from 'node:net';
import type { ClusterConfig } from '../config/index.js';
import type { Logger } from '../observe/index.js';
import { derivePartnerKey, MIN_PARTNER_SECRET_BYTES, plainAddress, type LinkSecurity, type PartnerKey } from '../partner/index.js';

export class PartnerSecurityError extends InputError {
  override name = 'PartnerSecurityError';
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::']);

/** Reads a partner key file: private to its owner, at least MIN_PARTNER_SECRET_BYTES once trimmed. */
export async function readPartnerKey(file: string): Promise<PartnerKey> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint = code === 'ENOENT' ? `: every node of a cluster needs the same key file; make one with \`ftvm keygen ${file}\` and copy it to every node` : '';
    throw new PartnerSecurityError(`partner key ${file}: ${(error as Error).message}${hint}`);
  }
  try {
    const stat = await handle.stat();
    if ((stat.mode & 0o077) !== 0) {
      throw new PartnerSecurityError(`partner key ${file} is readable by others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 ${file}`);
    }
    const secret = Buffer.from((await handle.readFile('utf8')).trim(), 'utf8');
    if (secret.length < MIN_PARTNER_SECRET_BYTES) {
      throw new PartnerSecurityError(`partner key ${file} holds ${secret.length} bytes, at least ${MIN_PARTNER_SECRET_BYTES} are needed (\`ftvm keygen\` writes 64 hex digits)`);
    }
    return derivePartnerKey(secret);
  } finally {
    await handle.close();
  }
}

/** Writes a new random partner key (64 hex digits), readable by its owner only; never overwrites one. */
export async function writePartnerKey(file: string): Promise<void> {
  try {
    await fs.writeFile(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new PartnerSecurityError(`${file} exists; a partner key is never overwritten (every node must keep the same one)`);
    throw new PartnerSecurityError(`cannot write partner key ${file}: ${(error as Error).message}`);
  }
}

export function isLoopbackHost(host: string): boolean {
  const plain = plainAddress(host);
  return plain === 'localhost' || plain === '::1' || (net.isIPv4(plain) && plain.startsWith('127.'));
}

/** `auto`: encrypted unless every partner address is on this host's loopback (then nothing leaves the host). */
export function partnerTlsWanted(config: ClusterConfig): boolean {
  if (config.partnerLink.tls !== 'auto') return config.partnerLink.tls === 'on';
  return !config.nodes.every((node) => !node.partner || isLoopbackHost(node.partner.host));
}

/** The addresses a node's partner host stands for; null when any address may be it (a wildcard). */
async function addressesOf(host: string): Promise<Set<string> | null> {
  if (WILDCARD_HOSTS.has(host)) return null;
  if (net.isIP(host)) return new Set([host]);
  const found = await dns.lookup(host, { all: true, verbatim: true });
  return new Set(found.map((entry) => entry.address));
}

/** The address this node's partner connections leave from: its own partner host, when that is one address. */
export function partnerSourceAddress(config: ClusterConfig, nodeId: number): string | undefined {
  const host = config.nodes[nodeId]?.partner?.host;
  return host !== undefined && net.isIP(host) && !WILDCARD_HOSTS.has(host) ? host : undefined;
}

export async function partnerSecurity(config: ClusterConfig, plausibleEpoch: (epoch: number) => boolean, logger: Logger): Promise<LinkSecurity> {
  const key = await readPartnerKey(config.partnerLink.keyFile);
  const bound = new Map<number, Set<string> | null>();
  for (const [index, node] of config.nodes.entries()) {
    if (!node.partner) continue;
    const addresses = await addressesOf(node.partner.host).catch((error: Error) => {
      throw new PartnerSecurityError(`node ${node.name}'s partner host ${node.partner?.host} does not resolve: ${error.message}`);
    });
    if (addresses === null) logger.warn(`node ${node.name}'s partner host ${node.partner.host} is a wildcard: its links are not bound to an address (the key alone proves who it is)`);
    bound.set(index, addresses);
  }
  const admits = (nodeId: number, address: string): boolean => {
    if (!bound.has(nodeId)) return false;
    const addresses = bound.get(nodeId);
    return addresses === null || (addresses as Set<string>).has(plainAddress(address));
  };
  return {
    key,
    tls: partnerTlsWanted(config),
    admits,
    knownAddress: (address) => [...bound.keys()].some((nodeId) => admits(nodeId, address)),
    plausibleEpoch,
  };
}
