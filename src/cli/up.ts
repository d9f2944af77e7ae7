// `ftvm up`: the embedded default cluster on local files, the project's main job. First run creates
// the data directory (config + backing files); every run starts the node processes, prints how to
// attach, and stops them all on SIGINT/SIGTERM. It supervises them: a node that dies (kill -9 it to
// see a failover) is started again after RESTART_DELAY_MS, rejoins, and gets its volumes back.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_VERSION, formatSize, loadConfig, type ClusterConfig } from '../config/index.js';
import { createLogger, metricsUrl, type LogFormat, type Logger, type LogLevel } from '../observe/index.js';
import { requestControl, writePartnerKey } from '../cluster/index.js';
import { provisionArray } from '../storage/index.js';
import { CliError, EXIT } from './failure.js';
import {
  checkFreeSpace,
  checkPortsFree,
  DataDirectoryLock,
  inspectDataDirectory,
  isLockEntry,
  METRICS_PORT_OFFSET,
  PARTNER_PORT_OFFSET,
  refuseForeignFiles,
  UP_MEMBER_COUNT,
  UP_NODES,
  validateUpFlags,
  type UpPlan,
} from './up-checks.js';

const BIN = fileURLToPath(new URL('../../../bin/ftvm', import.meta.url));
const CHILD_READY_TIMEOUT_MS = 30_000;
const CHILD_STOP_TIMEOUT_MS = 30_000;
/** Long enough to watch the survivor take over; short enough that the failback follows soon. */
const RESTART_DELAY_MS = 3000;
/** A node that cannot start this many times in a row stops the cluster. */
const RESTARTS_MAX = 5;

export interface UpOptions {
  data: string;
  basePort: string | number;
  host: string;
  /** --size as typed, or undefined when not given (1 GiB for a new data directory). */
  size: string | undefined;
  /** NBD TLS: `on` or `require` make a PSK file (identity `ftvm`) on first use and print nbds:// URIs. */
  tls: 'off' | 'on' | 'require';
  logLevel: LogLevel;
  logFormat: LogFormat;
}

/** The PSK identity `ftvm up --tls` writes; clients name it (libnbd: tls-username=ftvm). */
export const UP_TLS_IDENTITY = 'ftvm';
const UP_PSK_FILE = 'tls/nbd.psk';

export async function up(options: UpOptions): Promise<void> {
  const logger = createLogger({ level: options.logLevel, node: 'up', format: options.logFormat });
  // Everything that can be checked without writing is checked first: a refused `ftvm up` leaves
  // the disk as it found it.
  const plan = validateUpFlags(options);
  const found = await inspectDataDirectory(plan.dataDirectory);
  if (!found.initialised) {
    const warning = await checkFreeSpace(found.existingAncestor, plan.sizeBytes);
    if (warning) logger.warn(warning);
  }
  const created = found.exists ? undefined : await fs.mkdir(plan.dataDirectory, { recursive: true, mode: 0o700 });
  const undoCreate = async (): Promise<void> => {
    if (created) await fs.rm(created, { recursive: true, force: true });
  };
  let lock: DataDirectoryLock;
  try {
    lock = await DataDirectoryLock.acquire(plan.dataDirectory, { nbdHost: plan.host, basePort: plan.basePort });
  } catch (error) {
    await undoCreate();
    throw error;
  }
  process.once('exit', () => lock.releaseSync());
  let configFile: string;
  try {
    // Again under the lock: a first run still creating its array was named as in use above.
    refuseForeignFiles(plan.dataDirectory, await inspectDataDirectory(plan.dataDirectory));
    await checkPortsFree(plan.host, plan.basePort);
    configFile = await prepareDataDirectory(plan, options.tls, logger);
  } catch (error) {
    await lock.release();
    await undoCreate();
    throw error;
  }
  const config = await loadConfig(configFile);
  const children = new Map<string, ChildProcess>();
  let stopping = false;
  const stopAll = async (code: number): Promise<never> => {
    stopping = true;
    // The array holder last: the others destage through it. After a failover it may be any node.
    const holder = await arrayHolder(config);
    const order = [...children.entries()].sort(([a], [b]) => Number(a === holder) - Number(b === holder) || b.localeCompare(a));
    for (const [, child] of order) await stopChild(child);
    await lock.release();
    process.exit(code);
  };
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));
  const childOptions = { logLevel: options.logLevel, logFormat: options.logFormat };
  const restart = (name: string, failures: number): void => {
    setTimeout(() => {
      if (stopping) return;
      startChild(configFile, name, childOptions).then(
        (again) => {
          logger.info(`node ${name} is back`);
          supervise(name, again);
        },
        (error: Error) => {
          logger.error(`node ${name} did not start: ${error.message}`);
          if (failures + 1 >= RESTARTS_MAX) void stopAll(1);
          else restart(name, failures + 1);
        },
      );
    }, RESTART_DELAY_MS);
  };
  const supervise = (name: string, child: ChildProcess): void => {
    children.set(name, child);
    child.once('exit', (code, signal) => {
      if (stopping) return;
      logger.error(`node ${name} exited (${signal ?? `code ${code}`}); its partner serves its volumes; starting it again in ${RESTART_DELAY_MS} ms`);
      restart(name, 0);
    });
  };
  for (const node of config.nodes) {
    let child: ChildProcess;
    try {
      child = await startChild(configFile, node.name, childOptions);
    } catch (error) {
      // The node printed its reason above; the nodes already up stop with this process.
      stopping = true;
      for (const started of [...children.values()].reverse()) await stopChild(started);
      await lock.release();
      throw new CliError(`${(error as Error).message} (its log above says why); the data directory is kept`, EXIT.failure);
    }
    supervise(node.name, child);
  }
  // The volumes the cluster exports now: made and deleted online too, not only the config's.
  const first = config.nodes[0]?.control;
  const listed = first ? await requestControl(first, { op: 'volume-list' }).catch(() => null) : null;
  const volumes = listed?.ok && listed.volumes ? listed.volumes.filter((volume) => volume.state === 'ok').map((volume) => ({ name: volume.name, size: volume.sizeBytes })) : config.volumes;
  printAttachInstructions(config, volumes);
}

/**
 * Creates config and the raid5 member files on first run; later runs keep the data and update the
 * ports. A first run that fails removes what it wrote, so the next one starts from an empty directory.
 */
async function prepareDataDirectory(plan: UpPlan, tls: UpOptions['tls'], logger: Logger): Promise<string> {
  const dataDirectory = plan.dataDirectory;
  const configFile = path.join(dataDirectory, 'cluster.json');
  // The member files hold every volume's bytes and the key lets anyone join the cluster: the
  // directory is its owner's alone.
  await fs.chmod(dataDirectory, 0o700);
  let config: Record<string, unknown>;
  if (await exists(configFile)) {
    config = await readUpConfig(configFile);
    logger.info(`using existing data directory ${dataDirectory}`);
    await writePartnerKeyIfMissing(dataDirectory, logger);
    const sizes = Array.isArray(config.volumes) ? (config.volumes as Array<{ size?: unknown }>).map((volume) => volume.size) : [];
    if (plan.sizeGiven && sizes.some((size) => size !== plan.sizeBytes)) {
      logger.warn(`--size ${formatSize(plan.sizeBytes)} is ignored: the volumes of ${dataDirectory} were created with their sizes (${sizes.map((size) => (typeof size === 'number' ? formatSize(size) : String(size))).join(', ')}); use another --data for other sizes`);
    }
  } else {
    try {
      config = await createDataDirectory(plan, logger);
    } catch (error) {
      for (const entry of await fs.readdir(dataDirectory)) if (!isLockEntry(entry)) await fs.rm(path.join(dataDirectory, entry), { recursive: true, force: true });
      throw error;
    }
  }
  // A survivor also serves a dead node's NBD address, so a client of either port rides over a failover.
  config.takeoverAddresses = true;
  if (tls === 'off') delete config.tls;
  else {
    await writePskFileIfMissing(path.join(dataDirectory, UP_PSK_FILE), logger);
    config.tls = { mode: tls, pskFile: UP_PSK_FILE };
  }
  // Node a on the base port, b on the next; partner links PARTNER_PORT_OFFSET up, metrics
  // METRICS_PORT_OFFSET up. Every node exports every volume.
  config.nodes = UP_NODES.map((name, index) => ({
    name,
    listen: [{ host: plan.host, port: plan.basePort + index }, { path: `${name}.sock` }],
    partner: { host: plan.host, port: plan.basePort + PARTNER_PORT_OFFSET + index },
    metrics: { host: plan.host, port: plan.basePort + METRICS_PORT_OFFSET + index },
  }));
  await fs.writeFile(`${configFile}.tmp`, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await fs.rename(`${configFile}.tmp`, configFile);
  return configFile;
}

/** An existing data directory's cluster.json, as JSON; its schema is checked when it is loaded. */
async function readUpConfig(configFile: string): Promise<Record<string, unknown>> {
  const text = await fs.readFile(configFile, 'utf8');
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch (error) {
    throw new CliError(`${configFile} is not valid JSON (${(error as Error).message}): fix it, or remove the data directory to start afresh`, EXIT.config);
  }
  throw new CliError(`${configFile} is not a JSON object: fix it, or remove the data directory to start afresh`, EXIT.config);
}

/** First run: the partner key, the raid5 array over three files, and the config's storage and volumes. */
async function createDataDirectory(plan: UpPlan, logger: Logger): Promise<Record<string, unknown>> {
  const dataDirectory = plan.dataDirectory;
  await writePartnerKeyIfMissing(dataDirectory, logger);
  logger.info(`creating data directory ${dataDirectory}: raid5 over ${UP_MEMBER_COUNT} files for two ${formatSize(plan.sizeBytes)} volumes`);
  // Room for two more volumes of the same size, for `ftvm volume create`: the member files are
  // sparse, so space nobody wrote costs nothing on the disk.
  const volumeBytes = [plan.sizeBytes, plan.sizeBytes, plan.sizeBytes, plan.sizeBytes];
  const members = await provisionArray(dataDirectory, { level: 'raid5', memberCount: UP_MEMBER_COUNT, volumeBytes }, { logger, now: () => Date.now() });
  return {
    version: CONFIG_VERSION,
    cluster: `ftvm-${Date.now().toString(36)}`,
    nodes: [],
    storage: { level: 'raid5', members: members.map((member) => path.basename(member)) },
    volumes: [
      { name: 'vol0', size: plan.sizeBytes, owner: 'a', description: 'ftvm volume owned by node a' },
      { name: 'vol1', size: plan.sizeBytes, owner: 'b', description: 'ftvm volume owned by node b' },
    ],
  };
}

async function writePartnerKeyIfMissing(dataDirectory: string, logger: Logger): Promise<void> {
  const keyFile = path.join(dataDirectory, 'partner.key');
  if (await exists(keyFile)) return;
  await writePartnerKey(keyFile);
  logger.info(`wrote a new partner key to ${keyFile} (mode 600): the nodes prove to each other that they hold it`);
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** A PSK file in psktool's format (`identity:hexkey`), as nbdkit and libnbd read it. */
async function writePskFileIfMissing(file: string, logger: Logger): Promise<void> {
  if (await exists(file)) return;
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await fs.writeFile(file, `${UP_TLS_IDENTITY}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  // QEMU's tls-creds-psk reads keys.psk in the directory it is given: the same key, by that name.
  await fs.symlink(path.basename(file), path.join(path.dirname(file), 'keys.psk')).catch(() => undefined);
  logger.info(`wrote a TLS pre-shared key for identity '${UP_TLS_IDENTITY}' to ${file}`);
}

function startChild(configFile: string, node: string, log: { logLevel: LogLevel; logFormat: LogFormat }): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', configFile, '--node', node, '--log-level', log.logLevel, '--log-format', log.logFormat], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${node} did not start within ${CHILD_READY_TIMEOUT_MS} ms`)), CHILD_READY_TIMEOUT_MS);
    child.once('message', () => {
      clearTimeout(timer);
      resolve(child);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node ${node} exited with code ${code} while starting`));
    });
  });
}

/** The node that holds the shared array, as the first node that answers says; null if none does. */
async function arrayHolder(config: ClusterConfig): Promise<string | null> {
  for (const node of config.nodes) {
    const answer = await Promise.race([
      requestControl(node.control as string, { op: 'cluster' }).then((result) => result.cluster?.arrayHolder ?? null, () => null),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 2000)),
    ]);
    if (answer) return answer;
  }
  return null;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/** The URI a libnbd client (nbdinfo, nbdcopy, fio) opens an export with; nbds:// with the PSK file when TLS is on. */
export function exportUri(config: ClusterConfig, address: ClusterConfig['nodes'][number]['listen'][number], volume: string): string {
  // libnbd takes the PSK identity from the URI's user part (it ignores tls-username= in 1.14, and
  // would otherwise ask for the login name, which fails without a terminal).
  const psk = config.tls.mode !== 'off' && config.tls.pskFile ? `tls-psk-file=${config.tls.pskFile}` : null;
  if ('path' in address) return psk ? `nbds+unix://${UP_TLS_IDENTITY}@/${volume}?socket=${address.path}&${psk}` : `nbd+unix:///${volume}?socket=${address.path}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return psk ? `nbds://${UP_TLS_IDENTITY}@${host}:${address.port}/${volume}?${psk}` : `nbd://${host}:${address.port}/${volume}`;
}

function printAttachInstructions(config: ClusterConfig, volumes: ReadonlyArray<{ name: string; size: number }>): void {
  const lines = ['', `ftvm cluster ${config.cluster} is up${config.tls.mode === 'off' ? '' : ` (NBD TLS ${config.tls.mode}, PSK identity '${UP_TLS_IDENTITY}' in ${config.tls.pskFile})`}.`];
  for (const node of config.nodes) {
    for (const volume of volumes) {
      for (const address of node.listen) lines.push(`  node ${node.name}: ${volume.name} (${formatSize(volume.size)}) at ${exportUri(config, address, volume.name)}`);
    }
  }
  const first = config.nodes[0]?.listen.find((address) => 'port' in address);
  if (first && 'port' in first) {
    const volume = volumes[0]?.name ?? 'vol0';
    const uri = exportUri(config, first, volume);
    lines.push('', 'Attach with:');
    lines.push(`  nbdinfo '${uri}'`);
    if (config.tls.mode === 'off') {
      lines.push(`  qemu-img info ${uri}`);
      lines.push(`  nbd-client ${first.host} ${first.port} /dev/nbd0 -N ${volume} -b 4096`);
    } else {
      lines.push(`  qemu-img info --object tls-creds-psk,id=tls0,endpoint=client,dir=${path.dirname(config.tls.pskFile as string)},username=${UP_TLS_IDENTITY} --image-opts driver=nbd,host=${first.host},port=${first.port},export=${volume},tls-creds=tls0`);
    }
    lines.push(`  fio --name=t --ioengine=nbd --uri='${uri}' --rw=randwrite --bs=4k --iodepth=32 --size=256M`);
  }
  lines.push('', `Cluster state (owner, mode, partners) and the RAID (raid5 over ${config.storage.members.length} files, held open by the first node up):`);
  for (const node of config.nodes) lines.push(`  ftvm status --control ${node.control}`);
  lines.push(`  ftvm raid status --control ${config.nodes[0]?.control}`);
  lines.push('', 'Volumes, made, grown and deleted while the cluster runs:');
  lines.push(`  ftvm volume list --control ${config.nodes[0]?.control}`);
  lines.push(`  ftvm volume create vol2 --size 1GiB --control ${config.nodes[0]?.control}`);
  lines.push('', 'Events (JSON lines) and Prometheus metrics:');
  for (const node of config.nodes) lines.push(`  ftvm events --control ${node.control}`);
  for (const node of config.nodes) if (node.metrics) lines.push(`  node ${node.name}: ${metricsUrl(node.metrics)}`);
  lines.push('', 'Stop with Ctrl-C.', '');
  process.stdout.write(lines.join('\n'));
}
