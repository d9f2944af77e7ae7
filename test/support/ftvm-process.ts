// Starts real ftvm node processes for tests: a temp data directory, a config, sparse backing files,
// free loopback ports, and `bin/ftvm serve` as a child process that is killed afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPortsFree } from '../../src/cli/up-checks.js';
import { writePartnerKey } from '../../src/cluster/index.js';
import { silentLogger } from '../../src/observe/index.js';
import { provisionArray, type RaidLevel } from '../../src/storage/index.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const FTVM_BIN = path.join(REPO_ROOT, 'bin', 'ftvm');

export interface VolumeSpec {
  name: string;
  sizeBytes: number;
  description?: string;
  readOnly?: boolean;
}

export interface FtvmNode {
  readonly child: ChildProcess;
  readonly port: number;
  readonly host: string;
  readonly socketPath: string;
  readonly directory: string;
  readonly configFile: string;
  /** Everything the process wrote to stderr so far (its log). */
  log(): string;
  uri(volume: string): string;
  unixUri(volume: string): string;
  /** SIGTERM and wait; SIGKILL after the timeout. */
  stop(): Promise<void>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
}

/**
 * Ports freePort handed out in this process. The kernel may offer a port again as soon as the probe
 * that found it has closed, before whoever it was handed to binds it: two nodes of one cluster were
 * given the same NBD port that way (CI, session 14), and the config refused it.
 */
const handedOut = new Set<number>();

/** Asks the kernel for a free port on the given loopback address, never one handed out before in this process. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`the kernel offered only ports handed out already on ${host}`);
}

/** A base port for `ftvm up --base-port` whose ports (NBD and partner links of a and b) are all free now. */
export async function freeUpBasePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    if (await checkPortsFree(host, base).then(() => true, () => false)) return base;
  }
  throw new Error('no free base port for ftvm up');
}

/**
 * Directories of the nodes and clusters this process started (hundreds of MB of member files each):
 * removed when the process exits, so a test that only stops its cluster, or one that failed before
 * its cleanup, does not leave them behind (integration runs filled /tmp that way).
 */
const startedDirectories = new Set<string>();
process.once('exit', () => {
  for (const directory of startedDirectories) rmSync(directory, { recursive: true, force: true });
});

export async function makeTempDirectory(prefix = 'ftvm-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Writes a config for one node `a` with the given volumes on a new raid5 array of three files. */
export async function writeSingleNodeConfig(
  directory: string,
  volumes: VolumeSpec[],
  listen: { host: string; port: number },
  extraListen: Array<{ host: string; port: number }> = [],
  storage: { level: RaidLevel; memberCount: number; cacheBytes?: number } = { level: 'raid5', memberCount: 3 },
): Promise<string> {
  const members = await provisionArray(
    directory,
    { level: storage.level, memberCount: storage.memberCount, volumeBytes: volumes.map((volume) => volume.sizeBytes) },
    { logger: silentLogger(), now: () => Date.now() },
  );
  const config = {
    version: 1,
    cluster: 'test-cluster',
    nodes: [{ name: 'a', listen: [listen, ...extraListen, { path: 'a.sock' }] }],
    storage: {
      level: storage.level,
      members: members.map((member) => path.basename(member)),
      ...(storage.cacheBytes !== undefined ? { cache: storage.cacheBytes } : {}),
    },
    volumes: volumes.map((volume) => ({
      name: volume.name,
      size: volume.sizeBytes,
      description: volume.description ?? '',
      readOnly: volume.readOnly ?? false,
    })),
  };
  const configFile = path.join(directory, 'cluster.json');
  await fs.writeFile(configFile, JSON.stringify(config, null, 2));
  return configFile;
}

/** Runs `ftvm serve` for node `a` of a fresh single-node config and waits until it listens. */
export async function startNode(volumes: VolumeSpec[], options: { host?: string; logLevel?: string; cacheBytes?: number } = {}): Promise<FtvmNode> {
  const host = options.host ?? '127.0.0.1';
  const directory = await makeTempDirectory();
  startedDirectories.add(directory);
  const port = await freePort(host);
  const configFile = await writeSingleNodeConfig(directory, volumes, { host, port }, [], { level: 'raid5', memberCount: 3, cacheBytes: options.cacheBytes });
  return launch(configFile, 'a', { host, port, directory, logLevel: options.logLevel ?? 'info' });
}

/** Starts `ftvm serve --config FILE --node NAME` and resolves once it reports ready over IPC. */
export async function launch(
  configFile: string,
  node: string,
  where: { host: string; port: number; directory: string; logLevel?: string; prefix?: string[]; nodeArgs?: string[] },
): Promise<FtvmNode> {
  // `prefix` runs the node inside something, e.g. ['ip', 'netns', 'exec', NAME]; it must exec the command.
  // `nodeArgs` go to node itself (e.g. --trace-gc, which NODE_OPTIONS refuses).
  const command = [...(where.prefix ?? []), process.execPath, ...(where.nodeArgs ?? []), FTVM_BIN, 'serve', '--config', configFile, '--node', node];
  const child = spawn(command[0] as string, [...command.slice(1), '--log-level', where.logLevel ?? 'info'], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout?.resume();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ftvm did not start:\n${stderr}`)), 20_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ftvm exited with ${code} while starting:\n${stderr}`));
    });
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const socketPath = path.join(where.directory, `${node}.sock`);
  return {
    child,
    port: where.port,
    host: where.host,
    socketPath,
    directory: where.directory,
    configFile,
    log: () => stderr,
    uri: (volume) => `nbd://${where.host.includes(':') ? `[${where.host}]` : where.host}:${where.port}/${volume}`,
    unixUri: (volume) => `nbd+unix:///${volume}?socket=${socketPath}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface ClusterOptions {
  /** Node names; the first one up holds the shared array. Default: a, b. */
  nodes?: string[];
  /** Frame pool per node (config `memory`). */
  memoryBytes?: number;
  pageBytes?: number;
  cacheBytes?: number;
  partnerTimeoutMs?: number;
  leaseMs?: number;
  takeoverAddresses?: boolean;
  warmFailback?: boolean;
  logLevel?: string;
  /** Arguments for node itself, before the ftvm script (e.g. --trace-gc). */
  nodeArgs?: string[];
  /** The config's `limits` section (bounds on what NBD clients may hold). */
  limits?: Record<string, number>;
  /** More top-level config fields (partnerLink, tls, ...), written as given. */
  extra?: Record<string, unknown>;
  /** More fields of one node's entry in `nodes` (metrics, control, ...), written as given. */
  nodeExtra?: (name: string) => Record<string, unknown>;
  /** Array space beyond the configured volumes (for volumes made online). */
  spareBytes?: number;
}

export interface FtvmCluster {
  readonly directory: string;
  readonly configFile: string;
  readonly nodes: Map<string, FtvmNode>;
  node(name: string): FtvmNode;
  /** Starts (again) one node of the config. */
  start(name: string): Promise<FtvmNode>;
  /** The partner link port of a node. */
  partnerPort(name: string): number;
  stop(): Promise<void>;
}

/**
 * Writes a cluster config (raid5 over three new files in `directory`): each node with one TCP NBD
 * address, a unix socket `<name>.sock` and a partner address. Returns the config file.
 */
export async function writeClusterConfig(
  directory: string,
  volumes: Array<VolumeSpec & { owner: string; pageBytes?: number }>,
  nodes: Array<{ name: string; listen: { host: string; port: number }; partner: { host: string; port: number }; extra?: Record<string, unknown> }>,
  options: {
    memoryBytes?: number;
    cacheBytes?: number;
    partnerTimeoutMs?: number;
    leaseMs?: number;
    takeoverAddresses?: boolean;
    warmFailback?: boolean;
    limits?: Record<string, number>;
    extra?: Record<string, unknown>;
    spareBytes?: number;
  } = {},
): Promise<string> {
  const spare = options.spareBytes ? [options.spareBytes] : [];
  const members = await provisionArray(
    directory,
    { level: 'raid5', memberCount: 3, volumeBytes: [...volumes.map((volume) => volume.sizeBytes), ...spare] },
    { logger: silentLogger(), now: () => Date.now() },
  );
  const config = {
    version: 1,
    cluster: 'test-cluster',
    ...(options.memoryBytes !== undefined ? { memory: options.memoryBytes } : {}),
    ...(options.partnerTimeoutMs !== undefined ? { partnerTimeoutMs: options.partnerTimeoutMs } : {}),
    ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}),
    ...(options.takeoverAddresses !== undefined ? { takeoverAddresses: options.takeoverAddresses } : {}),
    ...(options.warmFailback !== undefined ? { warmFailback: options.warmFailback } : {}),
    ...(options.limits !== undefined ? { limits: options.limits } : {}),
    ...options.extra,
    nodes: nodes.map((node) => ({ name: node.name, listen: [node.listen, { path: `${node.name}.sock` }], partner: node.partner, ...node.extra })),
    storage: {
      level: 'raid5',
      members: members.map((member) => path.basename(member)),
      ...(options.cacheBytes !== undefined ? { cache: options.cacheBytes } : {}),
    },
    volumes: volumes.map((volume) => ({
      name: volume.name,
      size: volume.sizeBytes,
      owner: volume.owner,
      description: volume.description ?? '',
      readOnly: volume.readOnly ?? false,
      ...(volume.pageBytes !== undefined ? { pageSize: volume.pageBytes } : {}),
    })),
  };
  const configFile = path.join(directory, 'cluster.json');
  await fs.writeFile(configFile, JSON.stringify(config, null, 2));
  // Every node of a cluster must hold the partner key (config partnerLink.keyFile, default beside the config).
  if (nodes.length > 1) await writePartnerKey(path.join(directory, 'partner.key'));
  return configFile;
}

/**
 * A cluster of node processes over one raid5 array of three files: volume i is owned by node
 * i mod N (`owner` in VolumeSpec overrides); every node exports every volume. Nodes start in order.
 */
export async function startCluster(volumes: Array<VolumeSpec & { owner?: string }>, options: ClusterOptions = {}): Promise<FtvmCluster> {
  const names = options.nodes ?? ['a', 'b'];
  const host = '127.0.0.1';
  const directory = await makeTempDirectory('ftvm-cluster-');
  startedDirectories.add(directory);
  const ports = new Map<string, { nbd: number; partner: number }>();
  for (const name of names) ports.set(name, { nbd: await freePort(host), partner: await freePort(host) });
  const configFile = await writeClusterConfig(
    directory,
    volumes.map((volume, index) => ({ ...volume, owner: volume.owner ?? (names[index % names.length] as string), pageBytes: options.pageBytes })),
    names.map((name) => ({ name, listen: { host, port: ports.get(name)?.nbd as number }, partner: { host, port: ports.get(name)?.partner as number }, extra: options.nodeExtra?.(name) })),
    {
      memoryBytes: options.memoryBytes ?? 64 * 1024 * 1024,
      cacheBytes: options.cacheBytes,
      partnerTimeoutMs: options.partnerTimeoutMs,
      leaseMs: options.leaseMs,
      takeoverAddresses: options.takeoverAddresses,
      warmFailback: options.warmFailback,
      limits: options.limits,
      extra: options.extra,
      spareBytes: options.spareBytes,
    },
  );
  const nodes = new Map<string, FtvmNode>();
  const start = async (name: string): Promise<FtvmNode> => {
    const node = await launch(configFile, name, { host, port: ports.get(name)?.nbd as number, directory, logLevel: options.logLevel ?? 'info', nodeArgs: options.nodeArgs });
    nodes.set(name, node);
    return node;
  };
  const cluster: FtvmCluster = {
    directory,
    configFile,
    nodes,
    node(name) {
      const node = nodes.get(name);
      if (!node) throw new Error(`node ${name} was never started`);
      return node;
    },
    start,
    partnerPort: (name) => ports.get(name)?.partner as number,
    async stop() {
      // Last started first: the others destage through the first.
      for (const node of [...nodes.values()].reverse()) await node.stop();
    },
  };
  try {
    for (const name of names) await start(name);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Runs `work` on a fresh cluster (startCluster), then stops it and removes its files, whatever happened. */
export async function withCluster<T>(volumes: Array<VolumeSpec & { owner?: string }>, options: ClusterOptions, work: (cluster: FtvmCluster) => Promise<T>): Promise<T> {
  const cluster = await startCluster(volumes, options);
  try {
    return await work(cluster);
  } finally {
    await cluster.stop();
    await fs.rm(cluster.directory, { recursive: true, force: true });
  }
}
