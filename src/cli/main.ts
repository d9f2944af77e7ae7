// The ftvm command line.
import fs from 'node:fs/promises';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { PartnerSecurityError, writePartnerKey } from '../cluster/index.js';
import { ConfigError } from '../config/index.js';
import { LOG_FORMATS, LOG_LEVELS, setDefaultLogFormat, type LogFormat, type LogLevel } from '../observe/index.js';
import { TlsConfigError } from '../nbd/index.js';
import { AllocationError, ArrayFailedError, MemberError, MemberInUseError, RaidAdminError, RaidConfigError } from '../storage/index.js';
import { VolumeError } from '../volume/index.js';
import { findControlSocket } from './control-client.js';
import { events } from './events.js';
import { CliError, describeFailure, EXIT } from './failure.js';
import { raidCommands } from './raid.js';
import { serve } from './serve.js';
import { status } from './status.js';
import { up } from './up.js';
import { volumeCommands } from './volume.js';

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('ftvm')
    .usage('$0 <command> [options]')
    .option('log-level', { choices: LOG_LEVELS, default: 'info' as LogLevel, describe: 'log verbosity (logs go to stderr)' })
    .option('log-format', { choices: LOG_FORMATS, default: 'text' as LogFormat, describe: 'log lines as text, or one JSON object per line (for journald and log shippers)' })
    // Before any command runs, so every logger a command creates follows the flag.
    .middleware((args) => setDefaultLogFormat(args['log-format'] as LogFormat))
    .command(
      'serve',
      'run one node of a cluster in the foreground',
      (command) =>
        command
          .option('config', { type: 'string', demandOption: true, describe: 'cluster config file (JSON)' })
          .option('node', { type: 'string', demandOption: true, describe: 'this node\'s name in the config' }),
      (args) => serve({ config: args.config, node: args.node, logLevel: args['log-level'] as LogLevel, logFormat: args['log-format'] as LogFormat }),
    )
    .command(
      'up',
      'start the default local cluster on files in a data directory (the main job)',
      (command) =>
        command
          .option('data', { type: 'string', default: './ftvm-data', describe: 'data directory, created on first run; one ftvm up at a time runs on it (<data>/up.lock)' })
          .option('base-port', { type: 'string', default: '10809', describe: 'NBD port of node a; node b uses the next, their partner links the same +100, their metrics endpoints +200' })
          .option('host', { type: 'string', default: '127.0.0.1', describe: 'address the NBD and partner listeners bind to' })
          .option('size', { type: 'string', describe: 'size of vol0 and vol1 when the data directory is created [default: 1GiB]' })
          .option('tls', { choices: ['off', 'on', 'require'] as const, default: 'off' as const, describe: 'NBD TLS: on/require write a PSK file (identity ftvm) to <data>/tls/nbd.psk' }),
      (args) =>
        up({
          data: args.data,
          basePort: args['base-port'],
          host: args.host,
          size: args.size,
          tls: args.tls,
          logLevel: args['log-level'] as LogLevel,
          logFormat: args['log-format'] as LogFormat,
        }),
    )
    .command(
      'status',
      'show a running node\'s view of the cluster: array holder, write mode, partners, volume owners',
      (command) =>
        command
          .option('control', { type: 'string', describe: 'the node\'s control socket: <node>.control beside the config, or /run/ftvm/<node>.control for a config under /etc (default: the first node answering in --data)' })
          .option('data', { type: 'string', default: './ftvm-data', describe: 'without --control: the data directory of ftvm up, whose <node>.control sockets are tried in order' })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON (with --watch: one line per second)' })
          .option('watch', { type: 'boolean', default: false, describe: 'redraw every second until Ctrl-C; a node that stops answering is shown as such and asked again' }),
      async (args) => status({ control: args.control ?? (await findControlSocket(args.data)), json: args.json, watch: args.watch }),
    )
    .command(
      'events',
      'stream a running node\'s cluster events (link up/down, mode, takeover, handover, fenced, member failed, progress) as JSON lines until Ctrl-C',
      (command) =>
        command
          .option('control', { type: 'string', describe: 'the node\'s control socket (as for ftvm status; default: the first node answering in --data)' })
          .option('data', { type: 'string', default: './ftvm-data', describe: 'without --control: the data directory of ftvm up' }),
      async (args) => events({ control: args.control ?? (await findControlSocket(args.data)) }),
    )
    .command(
      'keygen <file>',
      'write a new partner key (the secret every node of a cluster must hold; mode 600, never overwritten)',
      (command) => command.positional('file', { type: 'string', demandOption: true, describe: 'where to write it (the config\'s partnerLink.keyFile, default partner.key beside it)' }),
      async (args) => {
        // Said here with the codes of the other commands; writePartnerKey's own refusals are config errors.
        if (await fs.lstat(args.file).then(() => true, () => false)) {
          throw new CliError(`${args.file} exists; a partner key is never overwritten (every node must keep the same one): copy that file to the nodes, or give another name`, EXIT.cannotCreate);
        }
        await fs.stat(path.dirname(path.resolve(args.file)));
        await writePartnerKey(args.file);
        process.stdout.write(`wrote ${args.file}: copy it to every node of the cluster (keep it mode 600)\n`);
      },
    )
    .command('raid', 'administer a RAID array: offline on its member files, or online with --control', raidCommands)
    .command('volume', 'list, create, grow and delete volumes on a running cluster', volumeCommands)
    .demandCommand(1, 'name a command; see --help')
    .strict()
    .help()
    .fail((message, error) => {
      if (error) throw error;
      process.stderr.write(`ftvm: ${message}\nRun 'ftvm --help' for usage.\n`);
      process.exit(EXIT.usage);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((error: unknown) => {
  const { line, exitCode } = describeFailure(error, {
    explained: [VolumeError, AllocationError, RaidConfigError, RaidAdminError, ArrayFailedError, MemberError, MemberInUseError],
    config: [ConfigError, PartnerSecurityError, TlsConfigError],
  });
  process.stderr.write(`${line}\n`);
  process.exit(exitCode);
});
