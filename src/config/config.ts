// The cluster configuration file: schema, loading and validation. Every error names the file and
// the path inside it, so a typo is found without reading code.
import { InputError, BLOCK_BYTES, MAX_PAGE_BYTES, MIN_PAGE_BYTES, VOLUME_ALIGNMENT_BYTES } from '../core/index.js';
import { constants as bufferConstants } from 'node:buffer';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { formatSize, parseSize } from './size.js';

/** Volumes are block devices: sizes in whole 4 KiB blocks keep every client's block size valid. */
export const VOLUME_SIZE_ALIGNMENT_BYTES = VOLUME_ALIGNMENT_BYTES;
export const CONFIG_VERSION = 1;
/** Each node's frame pool (`memory`) is counted in whole MiB. */
export const MEMORY_ALIGNMENT_BYTES = 1024 * 1024;
export const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
/**
 * The frame pool is one Buffer (frames are views of it), so it is at most the longest Buffer this
 * Node.js makes: 4 GiB on Node 20. Checked here, so a larger one is a config error naming the
 * field rather than a RangeError about "size" when the node starts.
 */
export const MAX_MEMORY_BYTES = Math.floor(bufferConstants.MAX_LENGTH / MEMORY_ALIGNMENT_BYTES) * MEMORY_ALIGNMENT_BYTES;
/** A volume's memory-manager page size (`pageSize`): a power of two in this range. */
export const MIN_PAGE_SIZE_BYTES = MIN_PAGE_BYTES;
export const MAX_PAGE_SIZE_BYTES = MAX_PAGE_BYTES;
/**
 * 4 KiB from measurement (docs/benchmarks.md): a random 4 KiB write into a larger page costs a
 * page-in, a whole-page mirror the first time and a whole-page destage, which cut 4k randwrite from
 * 0.46x to 0.07x nbdkit at 64 KiB; larger pages win only for large reads. Filesystems write 4 KiB.
 */
export const DEFAULT_PAGE_SIZE_BYTES = BLOCK_BYTES;

const sizeField = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = parseSize(value);
  if (typeof bytes === 'string') {
    context.addIssue({ code: 'custom', message: bytes });
    return z.NEVER;
  }
  return bytes;
});

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'names use letters, digits, . _ - (at most 64)');

const tcpAddressSchema = z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) });

/**
 * A node's Prometheus endpoint (GET /metrics). Per node, not per cluster: nodes on one host need
 * ports of their own, as they do for NBD. Messages of their own, so a typo reads as what it is.
 */
const metricsSchema = z.strictObject({
  host: z.string({ error: 'metrics.host must be a string: the address to listen on, e.g. 127.0.0.1' }).min(1, 'metrics.host must not be empty'),
  port: z
    .number({ error: 'metrics.port must be a number from 1 to 65535' })
    .int('metrics.port must be a whole number from 1 to 65535')
    .min(1, 'metrics.port must be from 1 to 65535')
    .max(65535, 'metrics.port must be from 1 to 65535'),
});

const listenSchema = z.union([tcpAddressSchema, z.strictObject({ path: z.string().min(1) })]);

const nodeSchema = z.strictObject({
  name,
  listen: z.array(listenSchema).min(1, 'a node needs at least one NBD listen address'),
  /** Unix socket for `ftvm raid --control`; defaults to defaultControlSocket(). */
  control: z.string().min(1).optional(),
  /** Where this node's partner link (paging synchronization between nodes) listens; required with more than one node. */
  partner: tcpAddressSchema.optional(),
  /** Where this node serves Prometheus metrics (http://host:port/metrics); absent: no endpoint. */
  metrics: metricsSchema.optional(),
});

const isPowerOfTwo = (bytes: number): boolean => bytes > 0 && 2 ** Math.round(Math.log2(bytes)) === bytes;
const pageSizeInRange = (bytes: number): boolean => bytes >= MIN_PAGE_SIZE_BYTES && bytes <= MAX_PAGE_SIZE_BYTES;
/** The page sizes a volume may have, whether its config entry or `ftvm volume create` names it. */
export const isValidPageSize = (bytes: number): boolean => Number.isSafeInteger(bytes) && isPowerOfTwo(bytes) && pageSizeInRange(bytes);

const pageSizeField = sizeField.superRefine((bytes, context) => {
  if (!isPowerOfTwo(bytes)) context.addIssue({ code: 'custom', message: `pageSize must be a power of two (${bytes} is not)` });
  if (!pageSizeInRange(bytes)) {
    context.addIssue({ code: 'custom', message: `pageSize must be from ${formatSize(MIN_PAGE_SIZE_BYTES)} to ${formatSize(MAX_PAGE_SIZE_BYTES)} (${formatSize(bytes)} is not)` });
  }
});

/** The page size a volume gets without `pageSize`; sizes are whole 4 KiB blocks, so it always divides. */
export function defaultPageSize(volumeBytes: number): number {
  let pageSize = DEFAULT_PAGE_SIZE_BYTES;
  while (pageSize > MIN_PAGE_SIZE_BYTES && volumeBytes % pageSize !== 0) pageSize /= 2;
  return pageSize;
}

const volumeSchema = z
  .strictObject({
    name,
    size: sizeField.refine((bytes) => bytes > 0 && bytes % VOLUME_SIZE_ALIGNMENT_BYTES === 0, {
      message: `size must be a positive multiple of ${VOLUME_SIZE_ALIGNMENT_BYTES} bytes`,
    }),
    description: z.string().max(1024).default(''),
    readOnly: z.boolean().default(false),
    /** The node that owns the volume (its lock master); parsing fills in the first node. */
    owner: z.string().min(1).optional(),
    /** The memory manager's page size for this volume; parsing fills in defaultPageSize(size). */
    pageSize: pageSizeField.optional(),
    /**
     * Only clients that authenticated over TLS as one of these identities (a PSK username, or the
     * subject CN of a verified client certificate) see and open the export.
     */
    tlsIdentities: z.array(z.string().min(1).max(256)).min(1, 'tlsIdentities needs at least one identity (leave it out to allow every client)').optional(),
  })
  .superRefine((volume, context) => {
    const { size, pageSize } = volume;
    if (pageSize === undefined || !isPowerOfTwo(pageSize) || !pageSizeInRange(pageSize)) return;
    if (size % pageSize !== 0) {
      context.addIssue({
        code: 'custom',
        path: ['pageSize'],
        message: `pageSize must divide the volume size (${formatSize(size)} is not a multiple of ${formatSize(pageSize)})`,
      });
    }
  })
  .transform((volume) => ({ ...volume, pageSize: volume.pageSize ?? defaultPageSize(volume.size) }));

/** The shared disks: one RAID array over member files every node can open. */
const storageSchema = z.strictObject({
  level: z.enum(['raid1', 'raid10', 'raid5']),
  members: z.array(z.string().min(1)).min(1, 'storage needs member files'),
  cache: sizeField.default(64 * 1024 * 1024),
  readAhead: sizeField.default(256 * 1024),
});

/**
 * The partner link: its shared secret (both ends must prove they hold it before anything they send
 * counts) and whether the link is encrypted. `auto` encrypts unless every partner address is a
 * loopback address, i.e. unless the whole cluster is on one host.
 */
const partnerLinkSchema = z.strictObject({
  keyFile: z.string().min(1).default('partner.key'),
  tls: z.enum(['auto', 'on', 'off']).default('auto'),
});

/** NBD over TLS (STARTTLS), as nbdkit's --tls: off, on (clients choose), require (nothing but STARTTLS before TLS). */
const nbdTlsSchema = z
  .strictObject({
    mode: z.enum(['off', 'on', 'require']).default('off'),
    /** psktool's format: one `identity:hexkey` per line. */
    pskFile: z.string().min(1).optional(),
    /** A directory with ca-cert.pem, server-cert.pem and server-key.pem (nbdkit's and QEMU's layout). */
    certificates: z.string().min(1).optional(),
    /** X.509: a client must present a certificate signed by ca-cert.pem. */
    verifyPeer: z.boolean().default(false),
  })
  .superRefine((tls, context) => {
    if (tls.mode !== 'off' && tls.pskFile === undefined && tls.certificates === undefined) {
      context.addIssue({ code: 'custom', message: `tls.mode '${tls.mode}' needs pskFile or certificates` });
    }
    if (tls.pskFile !== undefined && tls.certificates !== undefined) {
      context.addIssue({ code: 'custom', message: 'tls takes pskFile or certificates, not both (one kind of credentials per node, as nbdkit)' });
    }
    if (tls.verifyPeer && tls.certificates === undefined) context.addIssue({ code: 'custom', path: ['verifyPeer'], message: 'verifyPeer needs certificates (a CA to verify against)' });
  });

const MIB = 1024 * 1024;
const count = (min: number, max: number) => z.number().int().min(min).max(max);

/**
 * The default bound on dirty memory: 196608 pages of 4 KiB. A takeover hands each page its dead
 * partner had dirty to its storage stack before it serves, at 2–3 µs a page on the reference
 * machine: up to about half a second for this many. 512 MiB gave shorter pauses with 4 GiB pools,
 * but made writes wait sooner (docs/benchmarks.md, session 18).
 */
export const DEFAULT_DIRTY_BYTES = 768 * MIB;

/**
 * What one client, and all clients together, may make a node hold or do (docs/security.md). Bytes
 * count from when a request is read until its reply is written to the socket.
 */
const limitsSchema = z
  .strictObject({
    /** NBD connections a node keeps at once; more are closed at accept. */
    connections: count(1, 65_536).default(1024),
    /** NBD connections from one client address. */
    connectionsPerAddress: count(1, 65_536).default(128),
    /** Requests one connection may have in flight. */
    requestsInFlight: count(1, 65_536).default(256),
    /** Bytes one connection may have in flight (read, write, cache, trim and write zeroes lengths). */
    bytesInFlight: sizeField.default(64 * MIB),
    /** Bytes all connections of a node together may have in flight. */
    nodeBytesInFlight: sizeField.default(512 * MIB),
    /** A connection whose replies have not moved for this long (a client that stopped reading) is closed. */
    backlogTimeoutMs: count(1000, 3_600_000).default(60_000),
    /** A connection that has not chosen an export within this time is closed. */
    handshakeTimeoutMs: count(1000, 600_000).default(10_000),
    /** A connection with nothing in flight and nothing received for this long is closed; 0 never. */
    idleTimeoutMs: count(0, 86_400_000).default(0),
    /**
     * Bytes of a node's frame pool that may wait for destage at once; a write that finds this much
     * dirty waits for the destage. A partner that takes over hands every page of it to its disks'
     * path before it serves, so this bounds the failover pause (DEFAULT_DIRTY_BYTES).
     */
    dirtyBytes: sizeField.default(DEFAULT_DIRTY_BYTES),
  })
  .superRefine((limits, context) => {
    if (limits.connectionsPerAddress > limits.connections) context.addIssue({ code: 'custom', path: ['connectionsPerAddress'], message: 'connectionsPerAddress cannot exceed connections' });
    if (limits.bytesInFlight > limits.nodeBytesInFlight) context.addIssue({ code: 'custom', path: ['bytesInFlight'], message: 'bytesInFlight cannot exceed nodeBytesInFlight' });
    if (limits.bytesInFlight < MIB) context.addIssue({ code: 'custom', path: ['bytesInFlight'], message: 'bytesInFlight must be at least 1 MiB' });
    if (limits.dirtyBytes < MIB) context.addIssue({ code: 'custom', path: ['dirtyBytes'], message: 'dirtyBytes must be at least 1 MiB' });
  });

const DEFAULT_LIMITS = limitsSchema.parse({});
export type Limits = z.output<typeof limitsSchema>;
export { DEFAULT_LIMITS };

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

/** How an address is compared across nodes, and how it reads in an error. */
function addressKey(address: { host: string; port: number } | { path: string }): { key: string; text: string } {
  if ('path' in address) return { key: `unix:${path.normalize(address.path)}`, text: address.path };
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return { key: `tcp:${host.toLowerCase()}:${address.port}`, text: `${host}:${address.port}` };
}

const configSchema = z
  .strictObject({
    version: z.literal(CONFIG_VERSION),
    cluster: name,
    nodes: z.array(nodeSchema).min(1),
    storage: storageSchema,
    /** Each node's frame pool for the memory manager. */
    memory: sizeField
      .refine((bytes) => bytes > 0 && bytes % MEMORY_ALIGNMENT_BYTES === 0, { message: 'memory must be a positive multiple of 1 MiB' })
      .refine((bytes) => bytes <= MAX_MEMORY_BYTES, { message: `memory must be at most ${formatSize(MAX_MEMORY_BYTES)}: a node's frame pool is one Node.js Buffer, and none is longer here` })
      .default(DEFAULT_MEMORY_BYTES),
    /** A partner link silent this long (no frame, not even a heartbeat) is closed. */
    partnerTimeoutMs: z.number().int().min(100, 'partnerTimeoutMs must be at least 100').max(600_000, 'partnerTimeoutMs must be at most 600000').default(1000),
    /**
     * A node's disk lease: renewed every quarter of this; another node's lease counts as expired
     * once unrenewed this long (or at once when its process is proven dead on this host).
     */
    leaseMs: z.number().int().min(200, 'leaseMs must be at least 200').max(600_000, 'leaseMs must be at most 600000').default(2000),
    /** A node that takes over a dead node's volumes also listens on its TCP NBD addresses until it returns. */
    takeoverAddresses: z.boolean().default(false),
    /**
     * A node handing a volume back (failback) copies its clean resident pages to the home node
     * first, so the home node's first reads take no page-in; false hands over with a cold memory
     * (a shorter pause at the handover when the volume's resident set is large).
     */
    warmFailback: z.boolean().default(true),
    partnerLink: partnerLinkSchema.default({ keyFile: 'partner.key', tls: 'auto' }),
    tls: nbdTlsSchema.default({ mode: 'off', verifyPeer: false }),
    limits: limitsSchema.default(DEFAULT_LIMITS),
    volumes: z.array(volumeSchema).min(1),
  })
  .superRefine((config, context) => {
    for (const [label, names] of [
      ['node', config.nodes.map((node) => node.name)],
      ['volume', config.volumes.map((volume) => volume.name)],
    ] as const) {
      const seen = new Set<string>();
      for (const entry of names) {
        if (seen.has(entry)) context.addIssue({ code: 'custom', message: `${label} name '${entry}' appears twice` });
        seen.add(entry);
      }
    }

    // Every listener (NBD and partner) binds its own address: no two may share one. A wildcard host
    // is the exception: nodes on separate machines may all bind 0.0.0.0 or :: on the same port.
    const used = new Map<string, string>();
    const claim = (address: { host: string; port: number } | { path: string }, role: string, nodeName: string, at: Array<string | number>): void => {
      if ('host' in address && WILDCARD_HOSTS.has(address.host)) return;
      const { key, text } = addressKey(address);
      const holder = `the ${role} of node '${nodeName}'`;
      const first = used.get(key);
      if (first === undefined) used.set(key, holder);
      else context.addIssue({ code: 'custom', path: at, message: `address ${text} is ${first} and ${holder}` });
    };
    const clustered = config.nodes.length > 1;
    config.nodes.forEach((node, index) => {
      node.listen.forEach((address, listenIndex) => claim(address, 'NBD listen address', node.name, ['nodes', index, 'listen', listenIndex]));
      if (node.partner) claim(node.partner, 'partner address', node.name, ['nodes', index, 'partner']);
      else if (clustered) {
        context.addIssue({ code: 'custom', path: ['nodes', index, 'partner'], message: 'a cluster of more than one node needs a partner address on every node' });
      }
      if (node.metrics) claim(node.metrics, 'metrics address', node.name, ['nodes', index, 'metrics']);
    });

    const nodeNames = config.nodes.map((node) => node.name);
    config.volumes.forEach((volume, index) => {
      if (volume.tlsIdentities !== undefined && config.tls.mode === 'off') {
        context.addIssue({ code: 'custom', path: ['volumes', index, 'tlsIdentities'], message: "tlsIdentities needs tls.mode 'on' or 'require' (identities come from TLS)" });
      }
      if (volume.owner !== undefined && !nodeNames.includes(volume.owner)) {
        context.addIssue({ code: 'custom', path: ['volumes', index, 'owner'], message: `'${volume.owner}' is not a node (nodes: ${nodeNames.join(', ')})` });
      }
    });
  })
  // The first node owns every volume that names no owner, so `owner` is always set after parsing.
  .transform((config) => ({
    ...config,
    volumes: config.volumes.map((volume) => ({ ...volume, owner: volume.owner ?? config.nodes[0].name })),
  }));

export type ClusterConfig = z.output<typeof configSchema>;
export type NodeConfig = ClusterConfig['nodes'][number];
export type VolumeConfig = ClusterConfig['volumes'][number];
export type ListenConfig = NodeConfig['listen'][number];
export type PartnerConfig = NonNullable<NodeConfig['partner']>;
export type MetricsConfig = NonNullable<NodeConfig['metrics']>;
export type StorageConfig = ClusterConfig['storage'];
export type NbdTlsConfig = ClusterConfig['tls'];
export type PartnerLinkConfig = ClusterConfig['partnerLink'];

export class ConfigError extends InputError {
  override name = 'ConfigError';
}

/** Where the control sockets of configs installed under /etc go (systemd's RuntimeDirectory=ftvm). */
export const INSTALLED_CONTROL_DIRECTORY = '/run/ftvm';

/**
 * A node's control socket when the config names none: `/run/ftvm/<name>.control` for a config
 * under /etc (a socket belongs in /run, not beside a config in /etc), `<name>.control` beside the
 * config anywhere else (a data directory such as `ftvm up`'s).
 */
export function defaultControlSocket(configDirectory: string, nodeName: string): string {
  const installed = configDirectory === '/etc' || configDirectory.startsWith('/etc/');
  return path.join(installed ? INSTALLED_CONTROL_DIRECTORY : configDirectory, `${nodeName}.control`);
}

/** Validates parsed JSON; relative file and socket paths are resolved against `baseDirectory`. */
export function parseConfig(raw: unknown, source: string, baseDirectory: string): ClusterConfig {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
    throw new ConfigError(`invalid config ${source}:\n${lines.join('\n')}`);
  }
  const config = result.data;
  config.storage.members = config.storage.members.map((member) => path.resolve(baseDirectory, member));
  for (const node of config.nodes) {
    for (const address of node.listen) if ('path' in address) address.path = path.resolve(baseDirectory, address.path);
    node.control = path.resolve(baseDirectory, node.control ?? defaultControlSocket(baseDirectory, node.name));
  }
  config.partnerLink.keyFile = path.resolve(baseDirectory, config.partnerLink.keyFile);
  if (config.tls.pskFile !== undefined) config.tls.pskFile = path.resolve(baseDirectory, config.tls.pskFile);
  if (config.tls.certificates !== undefined) config.tls.certificates = path.resolve(baseDirectory, config.tls.certificates);
  return config;
}

export async function loadConfig(file: string): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config ${file}: ${(error as Error).message}`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(error as Error).message}`);
  }
  return parseConfig(raw, file, path.dirname(path.resolve(file)));
}

export function findNode(config: ClusterConfig, nodeName: string): NodeConfig {
  const node = config.nodes.find((candidate) => candidate.name === nodeName);
  if (!node) {
    const known = config.nodes.map((candidate) => candidate.name).join(', ');
    throw new ConfigError(`node '${nodeName}' is not in the config (nodes: ${known})`);
  }
  return node;
}

/**
 * The cluster's id in the partner link hello: an RFC 4122 version-5-shaped uuid derived from the
 * cluster name (first 16 bytes of sha256('ftvm-cluster:' + name)), so every node of one config
 * agrees on it without talking.
 */
export function clusterUuid(clusterName: string): string {
  const bytes = createHash('sha256').update(`ftvm-cluster:${clusterName}`, 'utf8').digest().subarray(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
