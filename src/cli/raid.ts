// `ftvm raid ...`: administers a RAID array offline, on its member files, or online through a
// serving node's control socket (--control).
//
// `status` and `examine` offline only read the files (md's --detail and --examine never write
// either): they say what an assembly would do instead of doing it. Every other offline command
// first makes sure nobody else uses the members (a node's live lease, another holder's claim:
// cluster/member-guard.ts; --force overrides), then assembles the array in this process (which
// resyncs after an unclean stop), runs one operation, and stops the array cleanly, md-style:
// `mdadm --assemble` + one action + `--stop`. The operations themselves take a RaidArray, so an
// online variant (through a running node) can call the same functions. Checks that need the array
// (member in range, enough redundancy left) happen before the operation writes anything, so a
// refused command leaves the data as it was (the assembly has rewritten the superblocks by then).
import path from 'node:path';
import type { Argv } from 'yargs';
import { DEFAULT_GUARD_LEASE_MS, guardMembers, memberUsers, type ControlRequest, type ControlResult, type MemberHolder } from '../cluster/index.js';
import { formatSize, parseSize } from '../config/index.js';
import { askNode } from './control-client.js';
import { createLogger, type Logger, type LogLevel } from '../observe/index.js';
import {
  assembleArray,
  createArray,
  DEFAULT_CHUNK_BYTES,
  examineMembers,
  failArrayMember,
  inspectArray,
  RaidAdminError,
  rebuildArrayMember,
  refuseExisting,
  replaceArrayMember,
  scrubArray,
  type ArrayInspection,
  type ArrayStatus,
  type MemberExamination,
  type ProgressCallback,
  type RaidArray,
  type RaidDependencies,
  type RaidLevel,
  type ScrubReport,
} from '../storage/index.js';

const RAID_LEVELS: readonly RaidLevel[] = ['raid1', 'raid10', 'raid5'];
/** The TTY bar is redrawn at most this often; a 1 TiB rebuild reports millions of stripes. */
const PROGRESS_REDRAW_MS = 100;
const PROGRESS_BAR_CHARS = 30;
const MIB = 1024 * 1024;
/** Exit code of a scrub that found blocks no redundancy could repair. */
export const SCRUB_UNRECOVERABLE_EXIT_CODE = 3;

/** `status --test` exit codes, as `mdadm --detail --test`. */
export const TEST_EXIT = { ok: 0, degraded: 1, failed: 2, unreadable: 4 } as const;

/** optimal → 0; degraded or rebuilding (redundancy missing) → 1; failed (data lost or unusable) → 2. */
export function testExitCode(state: ArrayStatus['state']): number {
  if (state === 'optimal') return TEST_EXIT.ok;
  return state === 'failed' ? TEST_EXIT.failed : TEST_EXIT.degraded;
}

// ---- rendering: pure, state in, text out ----

function describeBytes(bytes: number): string {
  const short = formatSize(bytes);
  return short.endsWith(' bytes') ? short : `${short} (${bytes} bytes)`;
}

/** Left-aligned columns; the last column is not padded. */
function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] as number))).join('  ').trimEnd());
}

export function formatStatus(status: ArrayStatus): string {
  const members = table([
    ['#', 'state', 'read errors', 'repaired blocks', 'path', 'reason'],
    ...status.members.map((member) => [
      String(member.index),
      member.rebuildPositionBytes === undefined ? member.state : `${member.state} ${formatMiB(member.rebuildPositionBytes)} MiB`,
      String(member.readErrors),
      String(member.repairedBlocks),
      member.path || '-',
      member.reason,
    ]),
  ]);
  const lines = [
    `uuid:           ${status.uuid}`,
    `level:          ${status.level}, ${status.memberCount} members, ${formatSize(status.chunkBytes)} chunks`,
    `size:           ${describeBytes(status.sizeBytes)}`,
    `state:          ${status.state}`,
    `event counter:  ${status.eventCounter}`,
    `dirty regions:  ${status.dirtyRegions}`,
    'members:',
    ...members.map((line) => `  ${line}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** The offline additions to a status: clean flag, who uses the files, what an assembly would do. */
export function formatInspection(inspection: ArrayInspection, users: readonly MemberHolder[]): string {
  const lines = [`clean:          ${inspection.clean ? 'yes (stopped cleanly)' : 'no (not stopped cleanly, or open in a running node)'}`];
  for (const user of users) lines.push(`in use:         ${user.who} ${user.why}`);
  lines.push('at assembly (nothing of this is done by status):');
  for (const line of inspection.atAssembly) lines.push(`  - ${line}`);
  return `${lines.join('\n')}\n`;
}

export function formatExamination(found: MemberExamination): string {
  const sb = found.superblock;
  const lines = [found.path];
  if (!sb) {
    lines.push(`  not a member:   ${found.problem}`);
    return `${lines.join('\n')}\n`;
  }
  const copies = found.copies.map((copy) => `copy ${copy.copy}: ${copy.eventCounter ?? `invalid (${copy.problem})`}`).join(', ');
  const dirty = found.bitmapSlots.map((slot, node) => (slot === 0 ? null : `slot ${node}: ${typeof slot === 'number' ? `${slot} dirty region(s)` : slot}`)).filter((text) => text !== null);
  lines.push(
    `  array uuid:     ${sb.arrayUuid}`,
    `  level:          ${sb.level}, ${sb.memberCount} members, ${formatSize(sb.chunkBytes)} chunks, ${describeBytes(sb.memberDataBytes)} of data per member`,
    `  member index:   ${sb.memberIndex}`,
    `  event counter:  ${sb.eventCounter} (${copies})`,
    `  clean:          ${sb.clean ? 'yes' : 'no'}`,
    `  member states:  ${sb.memberStates.map((state, index) => `${index} ${state}`).join(', ')} (as this member last saw the array)`,
    ...(sb.memberStates.includes('rebuilding') ? [`  rebuilt up to:  ${describeBytes(sb.rebuildPositionBytes)}`] : []),
    `  created:        ${new Date(sb.createdAtMs).toISOString()}`,
    `  layout:         bitmap at ${sb.bitmapOffset} (${sb.bitmapSlotCount} slots, ${formatSize(sb.bitmapRegionBytes)} regions), checksums at ${sb.checksumOffset}, data at ${sb.dataOffset}; file ${found.sizeBytes ?? '?'} bytes`,
    `  bitmap:         ${dirty.length === 0 ? 'clean' : dirty.join('; ')}`,
    `  checksums:      ${sb.zeroEntries ? 'zero entry means zeroes (never-written blocks read without I/O)' : 'CRC only (an array made before 2026-12-07: every block is read)'}`,
  );
  return `${lines.join('\n')}\n`;
}

export function formatScrubReport(report: ScrubReport): string {
  return [
    `stripes:              ${report.stripes}`,
    `blocks checked:       ${report.blocksChecked}`,
    `checksum repairs:     ${report.checksumRepairs}`,
    `parity repairs:       ${report.parityRepairs}`,
    `unrecoverable blocks: ${report.unrecoverableBlocks}`,
    '',
  ].join('\n');
}

export interface ProgressState {
  /** What is being done, e.g. "rebuild member 1". */
  label: string;
  doneBytes: number;
  totalBytes: number;
  elapsedMs: number;
}

function formatMiB(bytes: number): string {
  return (bytes / MIB).toFixed(1);
}

function percentOf(state: ProgressState): number {
  return state.totalBytes === 0 ? 100 : Math.floor((100 * state.doneBytes) / state.totalBytes);
}

function progressFigures(state: ProgressState): string {
  const rate = state.elapsedMs > 0 ? `${formatMiB((state.doneBytes * 1000) / state.elapsedMs)} MiB/s` : '- MiB/s';
  return `${formatMiB(state.doneBytes)}/${formatMiB(state.totalBytes)} MiB, ${rate}`;
}

/** The TTY line: `rebuild member 1 [###############...............]  50%  4.0/8.0 MiB, 2.0 MiB/s`. */
export function renderProgressBar(state: ProgressState, barChars = PROGRESS_BAR_CHARS): string {
  const percent = percentOf(state);
  const filled = Math.min(barChars, Math.floor((percent * barChars) / 100));
  const bar = '#'.repeat(filled) + '.'.repeat(barChars - filled);
  return `${state.label} [${bar}] ${String(percent).padStart(3)}%  ${progressFigures(state)}`;
}

/** The log line for a pipe or file: `rebuild member 1: 50% (4.0/8.0 MiB, 2.0 MiB/s)`. */
export function renderProgressLogLine(state: ProgressState): string {
  return `${state.label}: ${percentOf(state)}% (${progressFigures(state)})`;
}

/** Which tenth of the work is complete (0..10): a log line is due each time it grows. */
export function progressTenth(doneBytes: number, totalBytes: number): number {
  return totalBytes === 0 ? 10 : Math.floor((10 * doneBytes) / totalBytes);
}

export interface ProgressReporter {
  onProgress: ProgressCallback;
  /** Ends an unfinished TTY line (the operation failed) so later output starts on a fresh one. */
  finish(): void;
}

/** A bar redrawn in place on a terminal, otherwise a log line every 10%. */
export function progressReporter(label: string, output: { logger: Logger; stream: NodeJS.WriteStream; now: () => number }): ProgressReporter {
  const startedMs = output.now();
  const isTTY = output.stream.isTTY === true;
  let lastTenth = 0;
  let lastDrawMs = -Infinity;
  let drawn = false;
  const onProgress: ProgressCallback = (doneBytes, totalBytes) => {
    const nowMs = output.now();
    const state = { label, doneBytes, totalBytes, elapsedMs: nowMs - startedMs };
    const complete = doneBytes >= totalBytes;
    if (isTTY) {
      if (!complete && nowMs - lastDrawMs < PROGRESS_REDRAW_MS) return;
      lastDrawMs = nowMs;
      // The finished bar ends its line at once, before the operation's own closing log line.
      drawn = !complete;
      output.stream.write(`\r${renderProgressBar(state)}${complete ? '\n' : ''}`);
      return;
    }
    const tenth = progressTenth(doneBytes, totalBytes);
    if (tenth <= lastTenth) return;
    lastTenth = tenth;
    output.logger.info(renderProgressLogLine(state));
  };
  return {
    onProgress,
    finish: () => {
      if (drawn) output.stream.write('\n');
      drawn = false;
    },
  };
}

// ---- running a command offline ----

interface CommonArgs {
  logLevel: LogLevel;
}

/** What an offline command that writes needs to decide whether the members are free. */
interface GuardArgs {
  /** The subcommand, for its claim and messages: 'rebuild'. */
  command: string;
  force: boolean;
  leaseMs: number;
}

function dependencies(logLevel: LogLevel): RaidDependencies {
  return { logger: createLogger({ level: logLevel }), now: () => Date.now() };
}

function print(text: string): void {
  process.stdout.write(text);
}

/**
 * Runs `operation` on `files` once this process holds them alone (or --force): nobody else's live
 * lease or claim on them, and this process's claim recorded until the operation is over.
 */
async function withGuardedMembers<T>(files: string[], options: CommonArgs & GuardArgs, operation: (deps: RaidDependencies) => Promise<T>): Promise<T> {
  const deps = dependencies(options.logLevel);
  const claim = await guardMembers(files, { command: `ftvm raid ${options.command}`, force: options.force, leaseMs: options.leaseMs, logger: deps.logger });
  try {
    return await operation(deps);
  } finally {
    await claim.release();
  }
}

/**
 * Assembles the array from `files`, runs `operation`, and stops the array cleanly whatever happened.
 * Every file named must be taken into the array: acting on an array while a file the administrator
 * believes is a member was left out (not a member, or an older duplicate) would change the others
 * behind its back. That is found by a read-only look first, so such a refusal writes nothing.
 */
async function withAssembledArray<T>(files: string[], options: CommonArgs & GuardArgs, operation: (array: RaidArray, deps: RaidDependencies) => Promise<T>): Promise<T> {
  return withGuardedMembers(files, options, async (deps) => {
    const { leftOut, status } = await inspectArray(files);
    if (leftOut.length > 0) {
      throw new RaidAdminError(`${leftOut.map((file) => file.path).join(', ')}: not taken into array ${status.uuid} (not one of its members, or an older copy of one)`);
    }
    const array = await assembleArray(files, deps);
    try {
      return await operation(array, deps);
    } finally {
      await array.stop();
    }
  });
}

/** Who uses the files, for the read-only commands: a failure to tell is a warning, not an error. */
async function usersOf(files: string[], deps: RaidDependencies): Promise<MemberHolder[]> {
  return memberUsers(files).catch((error: Error) => {
    deps.logger.warn(`could not tell whether the files are in use: ${error.message}`);
    return [];
  });
}

/** `status` offline: the array as an assembly would find it, read-only. */
async function offlineStatus(args: CommonArgs & { files: string[]; json: boolean; test: boolean }): Promise<void> {
  const deps = dependencies(args.logLevel);
  let inspection: ArrayInspection;
  try {
    inspection = await inspectArray(args.files);
  } catch (error) {
    if (!args.test) throw error;
    process.stderr.write(`ftvm: ${(error as Error).message}\n`);
    process.exitCode = TEST_EXIT.unreadable;
    return;
  }
  const users = await usersOf(args.files, deps);
  for (const file of inspection.leftOut) deps.logger.warn(`${file.path}: not taken into array ${inspection.status.uuid} (${file.reason})`);
  if (args.json) {
    const { status, ...offline } = inspection;
    print(`${JSON.stringify({ ...status, offline: { ...offline, inUse: users } }, null, 2)}\n`);
  } else {
    print(formatStatus(inspection.status) + formatInspection(inspection, users));
  }
  if (args.test) process.exitCode = testExitCode(inspection.status.state);
}

/** `examine`: each file's own superblock, read-only; exit code 1 if some file is not a member. */
async function examineCommand(args: CommonArgs & { files: string[]; json: boolean }): Promise<void> {
  const deps = dependencies(args.logLevel);
  const found = await examineMembers(args.files);
  const users = await usersOf(args.files, deps);
  if (args.json) print(`${JSON.stringify({ members: found, inUse: users }, null, 2)}\n`);
  else print(found.map(formatExamination).join('') + users.map((user) => `in use: ${user.who} ${user.why}\n`).join(''));
  if (found.some((member) => member.superblock === null)) process.exitCode = 1;
}

function sizeArgument(option: string, text: string): number {
  const bytes = parseSize(text);
  if (typeof bytes === 'string') throw new RaidAdminError(`${option}: ${bytes}`);
  return bytes;
}

async function createCommand(args: CommonArgs & GuardArgs & { level: RaidLevel; chunk: string; memberSize: string; files: string[] }): Promise<void> {
  const memberDataBytes = sizeArgument('--member-size', args.memberSize);
  const chunkBytes = sizeArgument('--chunk', args.chunk);
  await refuseExisting(args.files);
  // Lease files left beside the new names may still be renewed by a node of an array whose member
  // files were removed: a new array there would be opened by that node at its next start.
  await withGuardedMembers(args.files, args, async (deps) => {
    const array = await createArray({ level: args.level, memberPaths: args.files, memberDataBytes, chunkBytes }, deps);
    try {
      print(formatStatus(array.status()));
    } finally {
      await array.stop();
    }
  });
}

async function maintenanceCommand(label: string, args: CommonArgs & GuardArgs & { files: string[] }, run: (array: RaidArray, onProgress: ProgressCallback) => Promise<void>): Promise<void> {
  await withAssembledArray(args.files, args, async (array, deps) => {
    const reporter = progressReporter(label, { logger: deps.logger, stream: process.stderr, now: deps.now });
    try {
      await run(array, reporter.onProgress);
    } finally {
      reporter.finish();
    }
    print(formatStatus(array.status()));
  });
}

/**
 * Runs a request on a serving node through its control socket: the same operations, online, with
 * the node's array doing the work while it keeps serving.
 */
/**
 * The control socket of the node that holds the array open. Only that node runs RAID operations;
 * asked of another node, a command goes to the holder's socket when it sits beside the one given
 * (as `ftvm up` and the default config put them), else it stops with one line naming the holder.
 * After a failover the holder is not the node the banner named, so an admin should not need to know.
 */
export async function holderSocket(control: string, ask: typeof askNode = askNode): Promise<string> {
  const answer = await ask(control, { op: 'cluster' });
  if (!answer.ok) throw new RaidAdminError(answer.error ?? 'the node refused the request');
  const cluster = answer.cluster;
  if (answer.status || !cluster || cluster.arrayHolder === cluster.node) return control;
  const beside = path.join(path.dirname(control), `${cluster.arrayHolder}.control`);
  const there = await ask(beside, { op: 'cluster' }).catch(() => null);
  if (there?.ok && there.cluster?.node === cluster.arrayHolder && there.status) {
    process.stderr.write(`ftvm: node ${cluster.node} does not hold the array; asking node ${cluster.arrayHolder}, which does (${beside})\n`);
    return beside;
  }
  throw new RaidAdminError(`node ${cluster.node} does not hold the array; node ${cluster.arrayHolder} does: run again with --control and that node's control socket`);
}

async function online(label: string, args: CommonArgs & { control: string }, request: ControlRequest, json = false): Promise<void> {
  const deps = dependencies(args.logLevel);
  const control = await holderSocket(args.control);
  const reporter = progressReporter(label, { logger: deps.logger, stream: process.stderr, now: deps.now });
  let result: ControlResult;
  try {
    result = await askNode(control, request, reporter.onProgress);
  } finally {
    reporter.finish();
  }
  if (!result.ok) throw new RaidAdminError(result.error ?? 'the node refused the request');
  if (request.op === 'replace') deps.logger.warn(`member ${request.member} is now ${request.new}: update storage.members in the node's config to match`);
  if (result.report) print(formatScrubReport(result.report));
  else if (result.status) print(json ? `${JSON.stringify(result.status, null, 2)}\n` : formatStatus(result.status));
  if (result.report && result.report.unrecoverableBlocks > 0) process.exitCode = SCRUB_UNRECOVERABLE_EXIT_CODE;
}

/** `status --control`: exit code 4 when the node cannot be asked or does not answer with a status. */
async function onlineStatus(args: CommonArgs & { control: string; json: boolean; test: boolean }): Promise<void> {
  if (!args.test) return online('status', args, { op: 'status' }, args.json);
  let result: ControlResult;
  try {
    result = await askNode(await holderSocket(args.control), { op: 'status' });
  } catch (error) {
    result = { ok: false, error: (error as Error).message };
  }
  if (!result.ok || !result.status) {
    process.stderr.write(`ftvm: ${result.error ?? 'the node answered without a status'}\n`);
    process.exitCode = TEST_EXIT.unreadable;
    return;
  }
  print(args.json ? `${JSON.stringify(result.status, null, 2)}\n` : formatStatus(result.status));
  process.exitCode = testExitCode(result.status.state);
}

/** Offline (member files) or online (--control): exactly one of them. */
function where(args: { files?: string[]; control?: string }): 'online' | 'offline' {
  const files = args.files ?? [];
  if (args.control && files.length > 0) throw new RaidAdminError('give member files (offline) or --control (online), not both');
  if (args.control) return 'online';
  if (files.length === 0) throw new RaidAdminError('name the member files, or --control SOCKET of a serving node');
  return 'offline';
}

// ---- yargs wiring ----

const filesPositional = { type: 'string', array: true, demandOption: true, describe: 'member files of the array' } as const;
const optionalFiles = { type: 'string', array: true, describe: 'member files of the array (offline), or use --control' } as const;
const controlOption = { type: 'string', describe: 'control socket of a serving node (online), e.g. ftvm-data/a.control' } as const;
const memberOption = { type: 'number', demandOption: true, describe: 'member index (see status)' } as const;
const forceOption = {
  type: 'boolean',
  default: false,
  describe: 'offline: act even though a node or another command seems to use the files (a live lease or holder claim); only if you are sure nothing writes them',
} as const;
const leaseMsOption = {
  type: 'number',
  default: DEFAULT_GUARD_LEASE_MS,
  describe: "offline: the cluster's leaseMs; a lease written on another host counts as live if it is renewed within this long (the command waits up to this long for it)",
} as const;

/** --force and --lease-ms on a command that writes offline. */
function guarded<T>(sub: Argv<T>): Argv<T & { force: boolean; 'lease-ms': number }> {
  return sub.option('force', forceOption).option('lease-ms', leaseMsOption);
}

function guardArgs(command: string, args: { force: boolean; 'lease-ms': number }): GuardArgs {
  if (!Number.isFinite(args['lease-ms']) || args['lease-ms'] < 0) throw new RaidAdminError(`--lease-ms ${args['lease-ms']}: give a number of milliseconds`);
  return { command, force: args.force, leaseMs: args['lease-ms'] };
}

/** The global --log-level, which main.ts declares and the typed subcommand args do not show. */
function common(args: object): CommonArgs {
  return { logLevel: (args as Record<string, unknown>)['log-level'] as LogLevel };
}

/** Registers the `raid` subcommands; main.ts passes this as the builder of `ftvm raid`. */
export function raidCommands(command: Argv): Argv {
  return command
    .command(
      'create <files..>',
      'create a new array on new member files',
      (sub) =>
        guarded(
          sub
            .positional('files', { ...filesPositional, describe: 'member files to create (must not exist)' })
            .option('level', { choices: RAID_LEVELS, demandOption: true, describe: 'RAID level' })
            .option('chunk', { type: 'string', default: formatSize(DEFAULT_CHUNK_BYTES), describe: 'chunk size (power of two)' })
            .option('member-size', { type: 'string', demandOption: true, describe: 'data area of each member, e.g. 256MiB' }),
        ),
      (args) =>
        createCommand({ ...common(args), ...guardArgs('create', args), level: args.level as RaidLevel, chunk: args.chunk, memberSize: args['member-size'], files: args.files }),
    )
    .command(
      'status [files..]',
      'show the array and its members; offline it only reads the files and says what an assembly would do',
      (sub) =>
        sub
          .positional('files', optionalFiles)
          .option('control', controlOption)
          .option('json', { type: 'boolean', default: false, describe: 'print RaidArray.status() as JSON (offline: plus what an assembly would do)' })
          .option('test', {
            type: 'boolean',
            default: false,
            describe: `exit code: ${TEST_EXIT.ok} optimal, ${TEST_EXIT.degraded} degraded, ${TEST_EXIT.failed} failed, ${TEST_EXIT.unreadable} the array could not be read`,
          }),
      (args) =>
        where(args) === 'online'
          ? onlineStatus({ ...common(args), control: args.control as string, json: args.json, test: args.test })
          : offlineStatus({ ...common(args), files: args.files as string[], json: args.json, test: args.test }),
    )
    .command(
      'examine <files..>',
      "show each file's own superblock, read-only (mdadm --examine); exit code 1 if a file is not a member",
      (sub) => sub.positional('files', filesPositional).option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
      (args) => examineCommand({ ...common(args), files: args.files, json: args.json }),
    )
    .command(
      'assemble <files..>',
      'assemble (resyncing after an unclean stop), show status, stop cleanly',
      (sub) => guarded(sub.positional('files', filesPositional)),
      (args) => withAssembledArray(args.files, { ...common(args), ...guardArgs('assemble', args) }, async (array) => print(formatStatus(array.status()))),
    )
    .command(
      'fail [files..]',
      'mark a member failed',
      (sub) => guarded(sub.positional('files', optionalFiles).option('control', controlOption).option('member', memberOption)),
      (args) =>
        where(args) === 'online'
          ? online('fail', { ...common(args), control: args.control as string }, { op: 'fail', member: args.member })
          : withAssembledArray(args.files as string[], { ...common(args), ...guardArgs('fail', args) }, async (array) => {
              await failArrayMember(array, args.member);
              print(formatStatus(array.status()));
            }),
    )
    .command(
      'rebuild [files..]',
      'rebuild a failed or stale member in place from the others',
      (sub) => guarded(sub.positional('files', optionalFiles).option('control', controlOption).option('member', memberOption)),
      (args) =>
        where(args) === 'online'
          ? online(`rebuild member ${args.member}`, { ...common(args), control: args.control as string }, { op: 'rebuild', member: args.member })
          : maintenanceCommand(`rebuild member ${args.member}`, { ...common(args), ...guardArgs('rebuild', args), files: args.files as string[] }, (array, onProgress) =>
              rebuildArrayMember(array, args.member, onProgress),
            ),
    )
    .command(
      'replace [files..]',
      'put a new file in place of a member and rebuild onto it',
      (sub) =>
        guarded(
          sub
            .positional('files', optionalFiles)
            .option('control', controlOption)
            .option('member', memberOption)
            .option('new', { type: 'string', demandOption: true, describe: 'the new member file (must not exist)' }),
        ),
      (args) =>
        where(args) === 'online'
          ? online(`replace member ${args.member}`, { ...common(args), control: args.control as string }, { op: 'replace', member: args.member, new: path.resolve(args.new) })
          : maintenanceCommand(`replace member ${args.member}`, { ...common(args), ...guardArgs('replace', args), files: args.files as string[] }, (array, onProgress) =>
              replaceArrayMember(array, args.member, args.new, onProgress),
            ),
    )
    .command(
      'scrub [files..]',
      `check every block, repair from redundancy; exit code ${SCRUB_UNRECOVERABLE_EXIT_CODE} if some could not be repaired`,
      (sub) => guarded(sub.positional('files', optionalFiles).option('control', controlOption)),
      (args) =>
        where(args) === 'online'
          ? online('scrub', { ...common(args), control: args.control as string }, { op: 'scrub' })
          : withAssembledArray(args.files as string[], { ...common(args), ...guardArgs('scrub', args) }, async (array, deps) => {
              const reporter = progressReporter('scrub', { logger: deps.logger, stream: process.stderr, now: deps.now });
              let report: ScrubReport;
              try {
                report = await scrubArray(array, reporter.onProgress);
              } finally {
                reporter.finish();
              }
              print(formatScrubReport(report));
              if (report.unrecoverableBlocks > 0) process.exitCode = SCRUB_UNRECOVERABLE_EXIT_CODE;
            }),
    )
    .demandCommand(1, 'name a raid subcommand; see ftvm raid --help');
}
