// `ftvm serve`: one node in the foreground until SIGINT/SIGTERM.
import { ClusterNode, FencedError } from '../cluster/index.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { findNode, INSTALLED_CONTROL_DIRECTORY, loadConfig } from '../config/index.js';
import { createLogger, watchEventLoop, type LogFormat, type LogLevel } from '../observe/index.js';
import { CliError, EXIT } from './failure.js';

/** EX_TEMPFAIL: this node was fenced; starting it again makes it rejoin. */
export const FENCED_EXIT_CODE = EXIT.fenced;

export async function serve(options: { config: string; node: string; logLevel: LogLevel; logFormat: LogFormat }): Promise<void> {
  const logger = createLogger({ level: options.logLevel, node: options.node, format: options.logFormat });
  const stalls = watchEventLoop(logger);
  const config = await loadConfig(options.config);
  await checkControlDirectory(findNode(config, options.node).control as string);
  const node = await ClusterNode.start(config, options.node, logger).catch((error: Error) => {
    // Fenced while starting (a takeover happened meanwhile): exit as fenced, to be started again.
    if (error instanceof FencedError) {
      logger.error(error.message);
      process.exit(FENCED_EXIT_CODE);
    }
    throw error;
  });
  // A fenced node must not serve on: it exits with EX_TEMPFAIL so a supervisor (ftvm up, systemd's
  // Restart=on-failure) starts it again, and it rejoins as a fresh partner.
  node.onFenced = () => {
    process.exitCode = FENCED_EXIT_CODE;
    setTimeout(() => process.exit(FENCED_EXIT_CODE), 200);
  };
  logger.info(`node ${options.node} of cluster ${config.cluster} serving ${config.volumes.length} volume(s)`);
  // The parent (`ftvm up`) waits for this before printing attach instructions.
  process.send?.({ ready: true });
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info(`${signal}: stopping`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('disconnect', () => stop('parent gone'));
  });
  await node.stop();
  stalls.stop();
  logger.info('stopped cleanly');
  // A 'disconnect' listener keeps the IPC channel (and so the process) alive; let it go.
  process.removeAllListeners('disconnect');
  process.disconnect?.();
}

/**
 * The control socket's directory must exist before the node starts: a socket under a missing
 * directory fails late and obscurely (EACCES from bind). /run/ftvm, the default for a config under
 * /etc, is made by systemd's RuntimeDirectory=ftvm and gone after a reboot without it.
 */
async function checkControlDirectory(socket: string): Promise<void> {
  const directory = path.dirname(socket);
  const found = await fs.stat(directory).catch((error: NodeJS.ErrnoException) => error);
  if (found instanceof Error) {
    if (found.code !== 'ENOENT') throw found;
    const hint = directory === INSTALLED_CONTROL_DIRECTORY ? ' (systemd makes it for ftvm@.service: RuntimeDirectory=ftvm)' : '';
    throw new CliError(`control socket ${socket}: directory ${directory} does not exist: create it (mkdir -m 700 ${directory})${hint}, or set nodes[].control in the config`, EXIT.noInput);
  }
  if (!found.isDirectory()) throw new CliError(`control socket ${socket}: ${directory} is not a directory: set nodes[].control in the config`, EXIT.noInput);
}
