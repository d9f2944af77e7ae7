// The commands' side of a node's control socket: requestControl, with the ways it fails when the
// node is not there said in one line with an exit code of their own.
import fs from 'node:fs/promises';
import path from 'node:path';
import { requestControl, subscribeEvents, type ControlRequest, type ControlResult } from '../cluster/index.js';
import type { ClusterEvent } from '../observe/index.js';
import { CliError, EXIT } from './failure.js';

const WHERE = "a node's control socket is its config's nodes[].control: <node>.control beside the config, /run/ftvm/<node>.control for a config under /etc";

export async function askNode(socket: string, request: ControlRequest, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<ControlResult> {
  await checkSocket(socket);
  try {
    return await requestControl(socket, request, onProgress);
  } catch (error) {
    throw explain(socket, error);
  }
}

/** Streams the node's events to `onEvent`; resolves with the stream once the node accepted it. */
export async function watchNode(socket: string, onEvent: (event: ClusterEvent) => void): Promise<{ ended: Promise<void>; close: () => void }> {
  await checkSocket(socket);
  try {
    return await subscribeEvents(socket, onEvent);
  } catch (error) {
    throw explain(socket, error);
  }
}

/**
 * The control socket to ask when the command names none: the first `<node>.control` in the data
 * directory of `ftvm up` (./ftvm-data unless --data says otherwise) whose node answers, by name.
 * Any node can answer for the cluster, so the first live one will do.
 */
export async function findControlSocket(dataDirectory: string): Promise<string> {
  let names: string[];
  try {
    names = (await fs.readdir(dataDirectory)).filter((name) => name.endsWith('.control')).sort();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CliError(`no --control given and no data directory ${dataDirectory}: give --control SOCKET (${WHERE}), or --data DIR of ftvm up`, EXIT.noInput);
    throw explain(dataDirectory, error);
  }
  if (names.length === 0) throw new CliError(`no --control given and no control socket in ${dataDirectory}: is ftvm up running there? (or give --control SOCKET)`, EXIT.noInput);
  for (const name of names) {
    const socket = path.join(dataDirectory, name);
    if (await requestControl(socket, { op: 'cluster' }).then((result) => result.ok, () => false)) return socket;
  }
  throw new CliError(`no node answers on the control sockets in ${dataDirectory} (${names.join(', ')}): is ftvm up running there?`, EXIT.unavailable);
}

async function checkSocket(socket: string): Promise<void> {
  try {
    await fs.stat(socket);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CliError(`control socket ${socket} does not exist: is the node running? (${WHERE})`, EXIT.noInput);
    if (code === 'EACCES') throw new CliError(`control socket ${socket}: not allowed to look there (EACCES): run as the node's user`, EXIT.noPermission);
    throw error;
  }
}

function explain(socket: string, error: unknown): CliError {
  // The client functions name the socket and keep the system error's text, not its code.
  const message = (error as Error).message;
  if (/ECONNREFUSED/.test(message)) return new CliError(`control socket ${socket}: nothing listens there (ECONNREFUSED): the node is not running`, EXIT.unavailable);
  if (/EACCES|EPERM/.test(message)) return new CliError(`control socket ${socket}: permission denied: run as the node's user (the socket is mode 600)`, EXIT.noPermission);
  if (/ENOTSOCK/.test(message)) return new CliError(`${socket} is not a socket (ENOTSOCK): give the node's control socket (${WHERE})`, EXIT.noInput);
  return new CliError(message, EXIT.failure);
}
