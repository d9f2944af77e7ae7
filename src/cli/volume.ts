// `ftvm volume list|create|resize|delete`: the cluster's volumes, changed while it runs. Asked of
// any node's control socket; a node that does not hold the shared array passes the question to the
// one that does when its socket lies beside (holderSocket), as the RAID commands do.
import type { Argv } from 'yargs';
import type { ControlRequest, ControlResult, VolumeInfo } from '../cluster/index.js';
import { formatSize, parseSize } from '../config/index.js';
import { createLogger, type LogLevel } from '../observe/index.js';
import { askNode, findControlSocket } from './control-client.js';
import { CliError, EXIT } from './failure.js';
import { holderSocket, progressReporter } from './raid.js';

/** One line per volume, aligned; sizes in binary units. */
export function formatVolumes(volumes: readonly VolumeInfo[]): string {
  if (volumes.length === 0) return 'no volumes\n';
  const rows = [
    ['NAME', 'SIZE', 'PAGE', 'OWNER', 'HOME', 'MODE', 'FROM', 'STATE'],
    ...volumes.map((volume) => [volume.name, formatSize(volume.sizeBytes), formatSize(volume.pageBytes), volume.owner, volume.home, volume.readOnly ? 'ro' : 'rw', volume.origin, volume.state]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function bytes(text: string, what: string): number {
  const parsed = parseSize(text);
  if (typeof parsed === 'string') throw new CliError(`${what}: ${parsed}`, EXIT.usage);
  return parsed;
}

async function ask(control: string, request: ControlRequest, logLevel: LogLevel, label?: string): Promise<ControlResult> {
  const holder = await holderSocket(control);
  let result: ControlResult;
  if (label) {
    const reporter = progressReporter(label, { logger: createLogger({ level: logLevel }), stream: process.stderr, now: () => performance.now() });
    try {
      result = await askNode(holder, request, reporter.onProgress);
    } finally {
      reporter.finish();
    }
  } else {
    result = await askNode(holder, request);
  }
  if (!result.ok) throw new CliError(result.error ?? 'the node refused the request');
  return result;
}

interface Common {
  control?: string;
  data: string;
  json: boolean;
  'log-level': string;
}

async function socketOf(args: Common): Promise<string> {
  return args.control ?? (await findControlSocket(args.data));
}

function show(volume: VolumeInfo | undefined, json: boolean, what: string): void {
  if (!volume) return;
  if (json) process.stdout.write(`${JSON.stringify(volume)}\n`);
  else process.stdout.write(`${what} ${volume.name}: ${formatSize(volume.sizeBytes)}, ${formatSize(volume.pageBytes)} pages, owner ${volume.owner}${volume.readOnly ? ', read-only' : ''}\n`);
}

export function volumeCommands(command: Argv): Argv {
  return command
    .option('control', { type: 'string', describe: 'a node\'s control socket (default: the first node answering in --data); the array holder does the change' })
    .option('data', { type: 'string', default: './ftvm-data', describe: 'without --control: the data directory of ftvm up' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
    .command(
      'list',
      'list the cluster\'s volumes: size, page size, owner now and home, from the config or made online',
      (sub) => sub,
      async (args) => {
        const result = await ask(await socketOf(args as unknown as Common), { op: 'volume-list' }, args['log-level'] as LogLevel);
        const volumes = result.volumes ?? [];
        process.stdout.write(args.json ? `${JSON.stringify(volumes, null, 2)}\n` : formatVolumes(volumes));
      },
    )
    .command(
      'create <name>',
      'make a volume on the running cluster: every node exports it once its owner and the owner\'s partners hold its allocation',
      (sub) =>
        sub
          .positional('name', { type: 'string', demandOption: true, describe: 'export name: 1 to 64 of A-Z a-z 0-9 . _ -' })
          .option('size', { type: 'string', demandOption: true, describe: 'size, a multiple of 4 KiB (e.g. 10GiB)' })
          .option('page-size', { type: 'string', describe: 'memory manager page size, a power of two from 4 KiB to 1 MiB [default: as for a config volume of that size]' })
          .option('owner', { type: 'string', describe: 'the node that serves it (its home) [default: the node asked]' })
          .option('read-only', { type: 'boolean', default: false, describe: 'clients may only read it' })
          .option('description', { type: 'string', describe: 'shown to NBD clients that list exports' }),
      async (args) => {
        const control = await socketOf(args as unknown as Common);
        // The default owner is the node asked, not whichever node the request is passed on to.
        const asked = await askNode(control, { op: 'cluster' });
        const owner = args.owner ?? asked.cluster?.node;
        const request: ControlRequest = {
          op: 'volume-create',
          name: args.name as string,
          size: bytes(args.size, '--size'),
          ...(args['page-size'] !== undefined ? { pageSize: bytes(args['page-size'], '--page-size') } : {}),
          ...(owner !== undefined ? { owner } : {}),
          readOnly: args['read-only'],
          ...(args.description !== undefined ? { description: args.description } : {}),
        };
        show((await ask(control, request, args['log-level'] as LogLevel)).volume, args.json, 'created');
      },
    )
    .command(
      'resize <name>',
      'grow a volume in place (never shrink); clients see the new size when they reconnect',
      (sub) =>
        sub
          .positional('name', { type: 'string', demandOption: true })
          .option('size', { type: 'string', demandOption: true, describe: 'the new size, larger than the old one, a multiple of its page size' }),
      async (args) => {
        const request: ControlRequest = { op: 'volume-resize', name: args.name as string, size: bytes(args.size, '--size') };
        show((await ask(await socketOf(args as unknown as Common), request, args['log-level'] as LogLevel)).volume, args.json, 'resized');
      },
    )
    .command(
      'delete <name>',
      'delete a volume and zero its space: refused while a client has it open on any node, unless --force',
      (sub) =>
        sub
          .positional('name', { type: 'string', demandOption: true })
          .option('force', { type: 'boolean', default: false, describe: 'cut off clients that have it open' }),
      async (args) => {
        const request: ControlRequest = { op: 'volume-delete', name: args.name as string, force: args.force };
        await ask(await socketOf(args as unknown as Common), request, args['log-level'] as LogLevel, `zeroing ${args.name as string}`);
        process.stdout.write(`deleted ${args.name as string}\n`);
      },
    )
    .demandCommand(1, 'name a volume command: list, create, resize or delete');
}
