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
import { createLogger, type Logger, type LogLevel } from '../observe/index.js';
import { requestControl, writePartnerKey } from '../cluster/index.js';
import { provisionArray } from '../storage/index.js';

const BIN = fileURLToPath(new URL('../../../bin/ftvm', import.meta.url));
const CHILD_READY_TIMEOUT_MS = 30_000;
const CHILD_STOP_TIMEOUT_MS = 30_000;
/** Long enough to watch the survivor take over; short enough that the failback follows soon. */
const RESTART_DELAY_MS = 3000;
/** A node that cannot start this many times in a row stops the cluster. */
const RESTARTS_MAX = 5;

export interface UpOptions {
  data: string;
  basePort: number;
  host: string;
  size: number;
  /** NBD TLS: `on` or `require` make a PSK file (identity `ftvm`) on first use and print nbds:// URIs. */
  tls: 'off' | 'on' | 'require';
  logLevel: LogLevel;
}

/** The PSK identity `ftvm up --tls` writes; clients name it (libnbd: tls-username=ftvm). */
export const UP_TLS_IDENTITY = 'ftvm';
const UP_PSK_FILE = 'tls/nbd.psk';

export async function up(options: UpOptions): Promise<void> {
  const logger = createLogger({ level: options.logLevel, node: 'up' });
  const dataDirectory = path.resolve(options.data);
  const configFile = await prepareDataDirectory(dataDirectory, options, logger);
  const config = await loadConfig(configFile);
  const children = new Map<string, ChildProcess>();
  let stopping = false;
  const stopAll = async (code: number): Promise<never> => {
    stopping = true;
    // The array holder last: the others destage through it. After a failover it may be any node.
    const holder = await arrayHolder(config);
    const order = [...children.entries()].sort(([a], [b]) => Number(a === holder) - Number(b === holder) || b.localeCompare(a));
    for (const [, child] of order) await stopChild(child);
    process.exit(code);
  };
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));
  const restart = (name: string, failures: number): void => {
    setTimeout(() => {
      if (stopping) return;
      startChild(configFile, name, options.logLevel).then(
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
  for (const node of config.nodes) supervise(node.name, await startChild(configFile, node.name, options.logLevel));
  printAttachInstructions(config);
}

/** Creates config and the raid5 member files on first run; later runs keep the data and update the ports. */
async function prepareDataDirectory(dataDirectory: string, options: UpOptions, logger: Logger): Promise<string> {
  const configFile = path.join(dataDirectory, 'cluster.json');
  // The member files hold every volume's bytes and the key lets anyone join the cluster: the
  // directory is its owner's alone.
  await fs.mkdir(dataDirectory, { recursive: true, mode: 0o700 });
  await fs.chmod(dataDirectory, 0o700);
  const keyFile = path.join(dataDirectory, 'partner.key');
  if (!(await exists(keyFile))) {
    await writePartnerKey(keyFile);
    logger.info(`wrote a new partner key to ${keyFile} (mode 600): the nodes prove to each other that they hold it`);
  }
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await fs.readFile(configFile, 'utf8')) as Record<string, unknown>;
    logger.info(`using existing data directory ${dataDirectory}`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    logger.info(`creating data directory ${dataDirectory}: raid5 over 3 files for two ${formatSize(options.size)} volumes`);
    const members = await provisionArray(dataDirectory, { level: 'raid5', memberCount: 3, volumeBytes: [options.size, options.size] }, { logger, now: () => Date.now() });
    config = {
      version: CONFIG_VERSION,
      cluster: `ftvm-${Date.now().toString(36)}`,
      nodes: [],
      storage: { level: 'raid5', members: members.map((member) => path.basename(member)) },
      volumes: [
        { name: 'vol0', size: options.size, owner: 'a', description: 'ftvm volume owned by node a' },
        { name: 'vol1', size: options.size, owner: 'b', description: 'ftvm volume owned by node b' },
      ],
    };
  }
  // A survivor also serves a dead node's NBD address, so a client of either port rides over a failover.
  config.takeoverAddresses = true;
  if (options.tls === 'off') delete config.tls;
  else {
    await writePskFileIfMissing(path.join(dataDirectory, UP_PSK_FILE), logger);
    config.tls = { mode: options.tls, pskFile: UP_PSK_FILE };
  }
  // Node a on the base port, b on the next; partner links 100 ports up. Every node exports every volume.
  config.nodes = ['a', 'b'].map((name, index) => ({
    name,
    listen: [{ host: options.host, port: options.basePort + index }, { path: `${name}.sock` }],
    partner: { host: options.host, port: options.basePort + 100 + index },
  }));
  await fs.writeFile(`${configFile}.tmp`, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await fs.rename(`${configFile}.tmp`, configFile);
  return configFile;
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

function startChild(configFile: string, node: string, logLevel: LogLevel): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', configFile, '--node', node, '--log-level', logLevel], {
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

function printAttachInstructions(config: ClusterConfig): void {
  const lines = ['', `ftvm cluster ${config.cluster} is up${config.tls.mode === 'off' ? '' : ` (NBD TLS ${config.tls.mode}, PSK identity '${UP_TLS_IDENTITY}' in ${config.tls.pskFile})`}.`];
  for (const node of config.nodes) {
    for (const volume of config.volumes) {
      for (const address of node.listen) lines.push(`  node ${node.name}: ${volume.name} (${formatSize(volume.size)}) at ${exportUri(config, address, volume.name)}`);
    }
  }
  const first = config.nodes[0]?.listen.find((address) => 'port' in address);
  if (first && 'port' in first) {
    const volume = config.volumes[0]?.name ?? 'vol0';
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
  lines.push('', 'Stop with Ctrl-C.', '');
  process.stdout.write(lines.join('\n'));
}
