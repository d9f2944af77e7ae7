// The floor of a mirrored write on this machine: how fast can plain Node go with ftvm's own NBD
// layer in front and the least work a mirrored, RAID-5 backed write needs behind it? Issue 15 asks
// for a 1M sequential write at QD8 of at least 0.35x `nbdkit file` (which acknowledges from the page
// cache), on a machine with two cores shared by fio and every server. If even this floor cannot
// reach the ratio, the target is a property of the machine, not of ftvm's code.
//
// The primary (a child process) serves ftvm's NbdServer over a volume that copies each WRITE into a
// preallocated 1 GiB buffer, sends it by reference to a secondary process over TCP on 127.0.0.1,
// and completes when the secondary acknowledges. The secondary reads the link into one reused
// buffer (ftvm's readingInto), copies each payload into its own 1 GiB buffer and acknowledges.
// Variants, each against `nbdkit file` measured right before it in the same run:
//   mirror              only that
//   mirror+raid5        plus a background destage in 8 MiB batches to three member files, RAID-5
//                       with rotating parity in 64 KiB chunks, fdatasync per member per batch, and
//                       writes held back while more than 384 MiB wait for it (ftvm's high watermark
//                       is a quarter of its frame pool)
//   mirror+raid5+crc    plus a CRC32C of every 4 KiB block destaged, as ftvm's checksum table does
// The destage writes full stripes only, as a log (no read-modify-write, no placement by volume
// offset), so it is a lower bound on what ftvm's destager does, not a model of it.
// Reported per job: IOPS of both, their ratio, how many of the two cores were busy, V8 collections
// (minor/major) in the primary and the secondary and, with RAID-5, the batches written and the
// writes that waited for room. Then where the CPU went, in µs per MiB moved, for each side: the
// whole machine (/proc/stat, steal included: capacity the guest lost), the primary and the
// secondary (process.cpuUsage over IPC), nbdkit (/proc), fio (its usr+sys), kernel threads
// (writeback, jbd2, kworkers), interrupts and softirqs (where loopback TCP may be charged), steal,
// and the rest. With two cores, a CPU-bound side moves about 2 s / its machine µs per MiB: the
// ratio of the machine columns is the ceiling of the IOPS ratio, whatever the code.
// Usage: node dist/scripts/bench-mirror-floor.js [--seconds 5] [--variants mirror,mirror+raid5,mirror+raid5+crc]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { crc32c } from '@node-rs/crc32';
import { readingInto } from '../src/core/index.js';
import { Exports, NbdServer } from '../src/nbd/index.js';
import { silentLogger } from '../src/observe/index.js';
import { xorInto } from '../src/storage/parity.js';
import type { Extent, Volume, ZeroOptions } from '../src/volume/index.js';
import { freePort } from '../test/support/ftvm-process.js';
import { RawClient } from '../test/support/raw-client.js';
import { countCollections } from './gc-counter.js';
import { connectLoopback, corkForTurn } from './loopback-link.js';
import { prefill, startNbdkit } from './nbdkit-peer.js';

const run = promisify(execFile);
const SIZE = 1 << 30;
const MiB = 1 << 20;
const VARIANTS = ['mirror', 'mirror+raid5', 'mirror+raid5+crc'] as const;
type Variant = (typeof VARIANTS)[number];
const JOBS = [
  ['1M seq write QD8', 'write', '1M', 8],
  ['4k randwrite QD32', 'randwrite', '4k', 32],
] as const;

// The link: a header (offset in 6 bytes, 2 spare, length, sequence), then the payload; the answer
// is the sequence and 4 zero bytes.
const HEADER_BYTES = 16;
const ACK_BYTES = 8;
/** Headers in flight live in one ring; a slot is reused only after its write was acknowledged. */
const HEADER_SLOTS = 1024;
/** As ftvm's partner link (LINK_READ_BUFFER_BYTES). */
const LINK_READ_BUFFER_BYTES = 256 * 1024;

const BATCH_BYTES = 8 * MiB;
const HIGH_WATERMARK_BYTES = 384 * MiB;
const CHUNK_BYTES = 64 * 1024;
const DATA_MEMBERS = 2;
const MEMBERS = DATA_MEMBERS + 1;
const STRIPE_DATA_BYTES = CHUNK_BYTES * DATA_MEMBERS;
const MEMBER_BYTES = SIZE / DATA_MEMBERS;
const STRIPES_PER_MEMBER = MEMBER_BYTES / CHUNK_BYTES;
const CRC_BLOCK_BYTES = 4096;

/** A buffer whose pages are all resident already: page faults would otherwise be in the figures. */
function touched(bytes: number): Buffer {
  return Buffer.allocUnsafeSlow(bytes).fill(1);
}

class MirrorLink {
  private readonly pending = new Map<number, () => void>();
  private readonly waitingForSlot: Array<() => void> = [];
  private readonly headers = Buffer.alloc(HEADER_SLOTS * HEADER_BYTES);
  private readonly ackCarry = Buffer.alloc(ACK_BYTES);
  private ackCarried = 0;
  private nextSequence = 1;
  private socket!: net.Socket;

  static async connect(port: number): Promise<MirrorLink> {
    const link = new MirrorLink();
    link.socket = await connectLoopback(port, 64 * 1024, (bytes) => link.onAcks(bytes), 'primary');
    return link;
  }

  /** Sends `bytes` (which must not change until this resolves) for `offset`; resolves on the secondary's ack. */
  async send(offset: number, bytes: Buffer): Promise<void> {
    while (this.pending.size >= HEADER_SLOTS) await new Promise<void>((resolve) => this.waitingForSlot.push(resolve));
    const sequence = this.nextSequence;
    this.nextSequence = (this.nextSequence % 0xffff_ffff) + 1;
    const header = this.headers.subarray((sequence % HEADER_SLOTS) * HEADER_BYTES, (sequence % HEADER_SLOTS + 1) * HEADER_BYTES);
    header.writeUIntLE(offset, 0, 6);
    header.writeUInt32LE(bytes.length, 8);
    header.writeUInt32LE(sequence, 12);
    const acked = new Promise<void>((resolve) => this.pending.set(sequence, resolve));
    corkForTurn(this.socket);
    // write()'s return value is not waited on: what queues in the socket is references to bytes
    // that stay put until acknowledged, and no more than HEADER_SLOTS writes are in flight.
    this.socket.write(header);
    if (bytes.length > 0) this.socket.write(bytes);
    await acked;
  }

  private onAcks(bytes: Buffer): boolean {
    let at = 0;
    if (this.ackCarried > 0) {
      const take = Math.min(ACK_BYTES - this.ackCarried, bytes.length);
      bytes.copy(this.ackCarry, this.ackCarried, 0, take);
      this.ackCarried += take;
      at = take;
      if (this.ackCarried < ACK_BYTES) return true;
      this.ackCarried = 0;
      this.acknowledged(this.ackCarry.readUInt32LE(0));
    }
    for (; at + ACK_BYTES <= bytes.length; at += ACK_BYTES) this.acknowledged(bytes.readUInt32LE(at));
    if (at < bytes.length) this.ackCarried = bytes.copy(this.ackCarry, 0, at);
    return true;
  }

  private acknowledged(sequence: number): void {
    const resolve = this.pending.get(sequence);
    if (!resolve) throw new Error(`ack of unknown sequence ${sequence}`);
    this.pending.delete(sequence);
    resolve();
    this.waitingForSlot.shift()?.();
  }
}

/** Dirty ranges of the frames, written out in 8 MiB RAID-5 batches behind the writes. */
class Destager {
  /** Flat pairs (offset, length), oldest first from `head`. */
  private ranges: number[] = [];
  private head = 0;
  /** Bytes in `ranges` not yet taken into a batch. */
  private queuedBytes = 0;
  /** Queued plus the batch being written: what the high watermark counts. */
  private dirtyBytes = 0;
  private running = false;
  private roomWaiters: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];
  private readonly batch = touched(BATCH_BYTES);
  private readonly parity = touched(BATCH_BYTES / DATA_MEMBERS);
  private readonly crcs = new Uint32Array(BATCH_BYTES / CRC_BLOCK_BYTES);
  private readonly shares: Buffer[][] = Array.from({ length: MEMBERS }, () => []);
  /** Next stripe of the members to write: the batches go round them as a log. */
  private stripe = 0;
  /** Since the parent last asked: batches written, writes that waited for one. */
  readonly counts = { batches: 0, stalls: 0 };

  constructor(
    private readonly frames: Buffer,
    private readonly members: fs.FileHandle[],
    private readonly withCrc: boolean,
  ) {}

  async room(): Promise<void> {
    if (this.dirtyBytes <= HIGH_WATERMARK_BYTES) return;
    this.counts.stalls++;
    while (this.dirtyBytes > HIGH_WATERMARK_BYTES) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
  }

  add(offset: number, length: number): void {
    this.ranges.push(offset, length);
    this.queuedBytes += length;
    this.dirtyBytes += length;
    if (this.queuedBytes >= BATCH_BYTES) this.pump();
  }

  /** Resolves once everything added so far (and since) is on the members and synced. */
  async idle(): Promise<void> {
    if (this.dirtyBytes === 0 && !this.running) return;
    await new Promise<void>((resolve) => {
      this.idleWaiters.push(resolve);
      this.pump();
    });
  }

  private pump(): void {
    if (this.running) return;
    this.running = true;
    this.loop().catch((error: unknown) => {
      process.stderr.write(`primary: destage failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    });
  }

  private async loop(): Promise<void> {
    while (this.queuedBytes >= BATCH_BYTES || (this.idleWaiters.length > 0 && this.queuedBytes > 0)) {
      await this.destageBatch();
      const waiting = this.roomWaiters;
      this.roomWaiters = [];
      for (const resume of waiting) resume();
    }
    this.running = false;
    if (this.queuedBytes === 0) {
      const waiting = this.idleWaiters;
      this.idleWaiters = [];
      for (const resume of waiting) resume();
    }
  }

  private async destageBatch(): Promise<void> {
    let filled = 0;
    while (filled < BATCH_BYTES && this.head < this.ranges.length) {
      const offset = this.ranges[this.head] as number;
      const length = this.ranges[this.head + 1] as number;
      const take = Math.min(length, BATCH_BYTES - filled);
      this.frames.copy(this.batch, filled, offset, offset + take);
      filled += take;
      if (take === length) this.head += 2;
      else {
        this.ranges[this.head] = offset + take;
        this.ranges[this.head + 1] = length - take;
      }
    }
    if (this.head === this.ranges.length) {
      this.ranges.length = 0;
      this.head = 0;
    } else if (this.head > 1 << 16) {
      this.ranges.splice(0, this.head);
      this.head = 0;
    }
    this.queuedBytes -= filled;
    const stripes = Math.ceil(filled / STRIPE_DATA_BYTES);
    this.batch.fill(0, filled, stripes * STRIPE_DATA_BYTES);
    if (this.withCrc) {
      for (let block = 0; block * CRC_BLOCK_BYTES < filled; block++) {
        this.crcs[block] = crc32c(this.batch.subarray(block * CRC_BLOCK_BYTES, (block + 1) * CRC_BLOCK_BYTES));
      }
    }
    if ((this.stripe % STRIPES_PER_MEMBER) + stripes > STRIPES_PER_MEMBER) this.stripe += STRIPES_PER_MEMBER - (this.stripe % STRIPES_PER_MEMBER);
    for (const share of this.shares) share.length = 0;
    for (let index = 0; index < stripes; index++) {
      const parityMember = (this.stripe + index) % MEMBERS;
      const data = this.batch.subarray(index * STRIPE_DATA_BYTES, (index + 1) * STRIPE_DATA_BYTES);
      const first = data.subarray(0, CHUNK_BYTES);
      const second = data.subarray(CHUNK_BYTES);
      const parity = this.parity.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES);
      parity.set(first);
      xorInto(parity, second);
      this.shares[parityMember]?.push(parity);
      this.shares[(parityMember + 1) % MEMBERS]?.push(first);
      this.shares[(parityMember + 2) % MEMBERS]?.push(second);
    }
    const position = (this.stripe % STRIPES_PER_MEMBER) * CHUNK_BYTES;
    await Promise.all(
      this.members.map(async (member, index) => {
        const { bytesWritten } = await member.writev(this.shares[index] as Buffer[], position);
        if (bytesWritten !== stripes * CHUNK_BYTES) throw new Error(`short write to member ${index}: ${bytesWritten} of ${stripes * CHUNK_BYTES} bytes`);
      }),
    );
    await Promise.all(this.members.map((member) => member.datasync()));
    this.stripe += stripes;
    this.dirtyBytes -= filled;
    this.counts.batches++;
  }
}

class FloorVolume implements Volume {
  readonly sizeBytes = SIZE;
  readonly flushCoversAllConnections = true;
  constructor(
    // Each write has its place in the frames at its own offset, unlike ftvm's pool of frames: two
    // writes in flight to one range may mix, which a client cannot tell from any order of them.
    private readonly frames: Buffer,
    private readonly link: MirrorLink,
    private readonly destager: Destager | null,
  ) {}

  async read(offset: number, into: Buffer): Promise<void> {
    this.frames.copy(into, 0, offset, offset + into.length);
  }

  async write(offset: number, data: readonly Buffer[]): Promise<void> {
    // The payload pieces are the NBD connection's until this settles, so waiting first is safe.
    if (this.destager) await this.destager.room();
    let at = offset;
    for (const piece of data) at += piece.copy(this.frames, at);
    this.destager?.add(offset, at - offset);
    await this.link.send(offset, this.frames.subarray(offset, at));
  }

  async flush(): Promise<void> {
    await this.destager?.idle();
  }

  async trim(): Promise<void> {}

  async zero(offset: number, lengthBytes: number, _options: ZeroOptions): Promise<void> {
    if (this.destager) await this.destager.room();
    this.frames.fill(0, offset, offset + lengthBytes);
    this.destager?.add(offset, lengthBytes);
    await this.link.send(offset, this.frames.subarray(offset, offset + lengthBytes));
  }

  async cache(): Promise<void> {}

  async blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    return [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {}
}

/**
 * Answers the parent's 'stats' with CPU time and collections since the last question, and its
 * 'checksum' with the CRC32C of `bytes` (both copies must agree after a run, or the figures are void).
 */
function answerStats(bytes: Buffer, extra: () => Record<string, number> = () => ({})): void {
  const gcs = countCollections();
  let cpu = process.cpuUsage();
  process.on('message', (message) => {
    if (message === 'checksum') {
      process.send?.({ checksum: crc32c(bytes) });
      return;
    }
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    // GC entries are delivered asynchronously: let the last ones of the job arrive.
    setTimeout(() => {
      process.send?.({ userMicros: used.user, systemMicros: used.system, ...gcs, ...extra() });
      gcs.minor = gcs.major = 0;
    }, 100);
  });
}

async function secondaryChild(): Promise<void> {
  const store = touched(SIZE);
  const readBuffer = Buffer.allocUnsafeSlow(LINK_READ_BUFFER_BYTES);
  const header = Buffer.alloc(HEADER_BYTES);
  let headerHave = 0;
  let writeAt = 0;
  let remaining = 0;
  let sequence = 0;
  let inPayload = false;
  const acks: number[] = [];
  let socket: net.Socket | null = null;
  const onBytes = (bytes: Buffer): void => {
    let at = 0;
    while (at < bytes.length) {
      if (!inPayload) {
        const take = Math.min(HEADER_BYTES - headerHave, bytes.length - at);
        bytes.copy(header, headerHave, at, at + take);
        headerHave += take;
        at += take;
        if (headerHave < HEADER_BYTES) break;
        headerHave = 0;
        writeAt = header.readUIntLE(0, 6);
        remaining = header.readUInt32LE(8);
        sequence = header.readUInt32LE(12);
        if (remaining === 0) acks.push(sequence);
        else inPayload = true;
        continue;
      }
      const take = Math.min(remaining, bytes.length - at);
      bytes.copy(store, writeAt, at, at + take);
      writeAt += take;
      remaining -= take;
      at += take;
      if (remaining === 0) {
        inPayload = false;
        acks.push(sequence);
      }
    }
    if (acks.length === 0 || !socket) return;
    const answer = Buffer.allocUnsafe(acks.length * ACK_BYTES);
    for (const [index, acked] of acks.entries()) {
      answer.writeUInt32LE(acked, index * ACK_BYTES);
      answer.writeUInt32LE(0, index * ACK_BYTES + 4);
    }
    acks.length = 0;
    socket.write(answer);
  };
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (accepted) => {
    const reading = readingInto(accepted, () => readBuffer, onBytes);
    if (!reading) throw new Error('the link socket could not be read into a buffer of ours');
    socket = reading;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(Number(process.env.FLOOR_LINK_PORT), '127.0.0.1', resolve));
  answerStats(store);
  process.on('disconnect', () => process.exit(0));
  process.send?.('ready');
}

async function primaryChild(): Promise<void> {
  const variant = process.env.FLOOR_VARIANT as Variant;
  const link = await MirrorLink.connect(Number(process.env.FLOOR_LINK_PORT));
  const frames = touched(SIZE);
  let destager: Destager | null = null;
  let directory: string | null = null;
  if (variant !== 'mirror') {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-floor-'));
    const members: fs.FileHandle[] = [];
    for (let index = 0; index < MEMBERS; index++) {
      const member = await fs.open(path.join(directory, `member${index}`), 'w+');
      await member.truncate(MEMBER_BYTES);
      members.push(member);
    }
    destager = new Destager(frames, members, variant === 'mirror+raid5+crc');
  }
  const volume = new FloorVolume(frames, link, destager);
  const exports = new Exports();
  exports.add({ name: 'vol0', description: '', volume, readOnly: false });
  const server = new NbdServer(exports, silentLogger());
  await server.listen({ host: '127.0.0.1', port: Number(process.env.FLOOR_NBD_PORT) });
  answerStats(frames, () => {
    const counts = { batches: destager?.counts.batches ?? 0, stalls: destager?.counts.stalls ?? 0 };
    if (destager) destager.counts.batches = destager.counts.stalls = 0;
    return counts;
  });
  process.on('disconnect', () => {
    if (directory) void fs.rm(directory, { recursive: true, force: true }).finally(() => process.exit(0));
    else process.exit(0);
  });
  process.send?.('ready');
}

interface ChildStats {
  userMicros: number;
  systemMicros: number;
  minor: number;
  major: number;
  batches?: number;
  stalls?: number;
}

function ask<T>(child: ChildProcess, question: 'stats' | 'checksum'): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (message) => resolve(message as T));
    child.send(question);
  });
}

function statsOf(child: ChildProcess): Promise<ChildStats> {
  return ask<ChildStats>(child, 'stats');
}

function startChild(role: string, env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, [process.argv[1] as string, role], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
  });
}

interface FioResult {
  iops: number;
  bytesPerSecond: number;
  /** fio's own user + system CPU, percent of one core. */
  cpuPercent: number;
}

async function fio(uri: string, rw: string, bs: string, depth: number, seconds: number): Promise<FioResult> {
  const { stdout } = await run(
    'fio',
    ['--name=b', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`, `--size=${SIZE}`,
      '--time_based', `--runtime=${seconds}`, '--ramp_time=1', '--output-format=json'],
    { maxBuffer: 1 << 26 },
  );
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<{ write: { iops: number; bw_bytes: number }; usr_cpu: number; sys_cpu: number }> }).jobs[0];
  if (!job) throw new Error('fio printed no job');
  return { iops: job.write.iops, bytesPerSecond: job.write.bw_bytes, cpuPercent: job.usr_cpu + job.sys_cpu };
}

/** An NBD FLUSH, so one job's destage (or nbdkit's writeback) does not run into the next. */
async function flush(uri: string): Promise<void> {
  const { hostname, port, pathname } = new URL(uri);
  const client = await RawClient.connect({ host: hostname, port: Number(port) });
  try {
    await client.attach(decodeURIComponent(pathname.slice(1)));
    client.request(3, { handle: 1n });
    const reply = await client.readReply();
    if (reply.error !== 0) throw new Error(`FLUSH of ${uri} failed with errno ${reply.error}`);
  } finally {
    client.close();
  }
}

const CLOCK_TICKS_PER_SECOND = 100;

async function processCpuMicros(pid: number): Promise<number> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS_PER_SECOND;
}

interface MachineTime {
  /** Every core's time but idle and iowait (steal included: capacity the guest lost), µs. */
  busyMicros: number;
  /** Interrupts and softirqs (loopback TCP is delivered there), µs. */
  irqMicros: number;
  /** Time the host took the virtual cores away, µs. */
  stealMicros: number;
  /** Kernel threads (writeback, jbd2, ksoftirqd, kworkers), µs. */
  kernelThreadMicros: number;
  /** Cores busy on average. */
  cores: number;
}

const PF_KTHREAD = 0x0020_0000;

/** user nice system idle iowait irq softirq steal (/proc/stat, all cores) and the kernel threads' user+system, in jiffies. */
async function machineTicks(): Promise<{ ticks: number[]; kernelThreads: number }> {
  const line = (await fs.readFile('/proc/stat', 'utf8')).split('\n')[0] as string;
  let kernelThreads = 0;
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null);
    if (stat === null) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if ((Number(fields[6]) & PF_KTHREAD) !== 0) kernelThreads += Number(fields[11]) + Number(fields[12]);
  }
  return { ticks: line.trim().split(/\s+/).slice(1, 9).map(Number), kernelThreads };
}

/** Runs `work` and says what the whole machine spent meanwhile (every process and the kernel). */
async function machineTime<T>(work: () => Promise<T>): Promise<[T, MachineTime]> {
  const before = await machineTicks();
  const result = await work();
  const after = await machineTicks();
  const delta = after.ticks.map((tick, index) => tick - (before.ticks[index] ?? 0));
  const total = delta.reduce((sum, tick) => sum + tick, 0);
  const idle = (delta[3] ?? 0) + (delta[4] ?? 0);
  const micros = (ticks: number): number => (ticks * 1e6) / CLOCK_TICKS_PER_SECOND;
  return [
    result,
    {
      busyMicros: micros(total - idle),
      irqMicros: micros((delta[5] ?? 0) + (delta[6] ?? 0)),
      stealMicros: micros(delta[7] ?? 0),
      kernelThreadMicros: micros(after.kernelThreads - before.kernelThreads),
      cores: ((total - idle) / total) * os.cpus().length,
    },
  ];
}

function perMiB(cpuMicros: number, bytes: number): string {
  return bytes > 0 ? ((cpuMicros * MiB) / bytes).toFixed(0) : '-';
}

function option(name: string, fallback: string): string {
  const index = process.argv.indexOf(name);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

async function main(): Promise<void> {
  const seconds = Number(option('--seconds', '5')) || 5;
  const variants = option('--variants', VARIANTS.join(',')).split(',') as Variant[];
  for (const variant of variants) if (!VARIANTS.includes(variant)) throw new Error(`unknown variant ${variant}; known: ${VARIANTS.join(', ')}`);
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-floor-nbdkit-'));
  const rates = ['| variant | job | floor IOPS | nbdkit IOPS | ratio | cores busy floor / nbdkit | GCs minor/major primary; secondary | batches, stalls |', '| --- | --- | --- | --- | --- | --- | --- | --- |'];
  const costs = [
    '| variant | job | side | machine | primary usr+sys | secondary usr+sys | nbdkit | fio | kernel threads | irq+softirq | steal | rest |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  let nbdkit: { child: ChildProcess; uri: string } | null = null;
  const children: ChildProcess[] = [];
  try {
    const file = path.join(directory, 'nbdkit.img');
    await prefill(file, SIZE);
    nbdkit = await startNbdkit(file);
    // Its first writes after the fill ran slow in a trial (0.4x of later ones): not the row's partner.
    await fio(nbdkit.uri, 'write', '1M', 8, 2);
    for (const variant of variants) {
      const linkPort = await freePort();
      const nbdPort = await freePort();
      const secondary = await startChild('--secondary', { FLOOR_LINK_PORT: String(linkPort) });
      children.push(secondary);
      const primary = await startChild('--primary', { FLOOR_LINK_PORT: String(linkPort), FLOOR_NBD_PORT: String(nbdPort), FLOOR_VARIANT: variant });
      children.push(primary);
      const floorUri = `nbd://127.0.0.1:${nbdPort}/vol0`;
      for (const [name, rw, bs, depth] of JOBS) {
        await Promise.all([flush(nbdkit.uri), flush(floorUri)]);
        const nbdkitBefore = await processCpuMicros(nbdkit.child.pid as number);
        const [theirs, theirMachine] = await machineTime(() => fio((nbdkit as { uri: string }).uri, rw, bs, depth, seconds));
        const nbdkitMicros = (await processCpuMicros(nbdkit.child.pid as number)) - nbdkitBefore;
        await Promise.all([statsOf(primary), statsOf(secondary)]);
        const [ours, ourMachine] = await machineTime(() => fio(floorUri, rw, bs, depth, seconds));
        const [primaryStats, secondaryStats] = await Promise.all([statsOf(primary), statsOf(secondary)]);
        // fio's ramp second is not in its figures but is in the servers' CPU time: counted in the bytes too.
        const ourBytes = ours.bytesPerSecond * (seconds + 1);
        const theirBytes = theirs.bytesPerSecond * (seconds + 1);
        const primaryMicros = primaryStats.userMicros + primaryStats.systemMicros;
        const secondaryMicros = secondaryStats.userMicros + secondaryStats.systemMicros;
        const fioMicros = (result: FioResult): number => result.cpuPercent * 1e4 * (seconds + 1);
        // What no column names: other processes (this script, fio's parent process, anyone else's), and system time charged to no task.
        const rest = (time: MachineTime, named: number): number => time.busyMicros - time.irqMicros - time.stealMicros - time.kernelThreadMicros - named;
        const split = (stats: ChildStats): string => `${perMiB(stats.userMicros, ourBytes)}+${perMiB(stats.systemMicros, ourBytes)}`;
        rates.push(
          `| ${variant} | ${name} | ${ours.iops.toFixed(0)} | ${theirs.iops.toFixed(0)} | ${(ours.iops / theirs.iops).toFixed(2)} | ${ourMachine.cores.toFixed(2)} / ${theirMachine.cores.toFixed(2)} ` +
            `| ${primaryStats.minor}/${primaryStats.major}; ${secondaryStats.minor}/${secondaryStats.major} | ${primaryStats.batches ?? 0}, ${primaryStats.stalls ?? 0} |`,
        );
        costs.push(
          `| ${variant} | ${name} | floor | ${perMiB(ourMachine.busyMicros, ourBytes)} | ${split(primaryStats)} | ${split(secondaryStats)} | - | ${perMiB(fioMicros(ours), ourBytes)} ` +
            `| ${perMiB(ourMachine.kernelThreadMicros, ourBytes)} | ${perMiB(ourMachine.irqMicros, ourBytes)} | ${perMiB(ourMachine.stealMicros, ourBytes)} ` +
            `| ${perMiB(rest(ourMachine, primaryMicros + secondaryMicros + fioMicros(ours)), ourBytes)} |`,
          `| ${variant} | ${name} | nbdkit | ${perMiB(theirMachine.busyMicros, theirBytes)} | - | - | ${perMiB(nbdkitMicros, theirBytes)} | ${perMiB(fioMicros(theirs), theirBytes)} ` +
            `| ${perMiB(theirMachine.kernelThreadMicros, theirBytes)} | ${perMiB(theirMachine.irqMicros, theirBytes)} | ${perMiB(theirMachine.stealMicros, theirBytes)} ` +
            `| ${perMiB(rest(theirMachine, nbdkitMicros + fioMicros(theirs)), theirBytes)} |`,
        );
        process.stderr.write(`bench-mirror-floor: ${variant} ${name} done\n`);
      }
      const [primarySum, secondarySum] = await Promise.all([ask<{ checksum: number }>(primary, 'checksum'), ask<{ checksum: number }>(secondary, 'checksum')]);
      if (primarySum.checksum !== secondarySum.checksum) throw new Error(`${variant}: the secondary's copy differs from the primary's`);
      await stop(primary);
      await stop(secondary);
      children.length = 0;
    }
  } finally {
    for (const child of children) child.kill('SIGKILL');
    nbdkit?.child.kill('SIGTERM');
    await fs.rm(directory, { recursive: true, force: true });
  }
  process.stdout.write(`${rates.join('\n')}\n\nCPU µs per MiB moved:\n\n${costs.join('\n')}\n`);
}

/** Ends a child through its IPC channel (the primary removes its member files then) and waits for it. */
async function stop(child: ChildProcess): Promise<void> {
  child.removeAllListeners('exit');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.disconnect();
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

const role = process.argv[2];
(role === '--primary' ? primaryChild() : role === '--secondary' ? secondaryChild() : main()).catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
