// The well-behaved client of a server round: it writes known patterns to its own export, reads them
// back and checks every byte against its model while hostile sessions run beside it. Requests in
// one batch never overlap, so their order does not matter and the model stays exact.
import {
  Command,
  CommandFlag,
  REPLY_FLAG_DONE,
  ReplyType,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
} from '../../src/nbd/constants.js';
import { RawClient } from '../support/raw-client.js';
import type { Problem } from './decoder-checks.js';
import type { FuzzRandom } from './random.js';
import type { VolumeModel } from './volume-model.js';

interface Op {
  type: number;
  offset: number;
  length: number;
  flags: number;
  data?: Buffer;
}

/** Races a step against the round's deadline: a server that stops answering is a finding, not a stuck test. */
async function within<T>(deadlineMs: number, what: string, step: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${deadlineMs} ms to ${what}`)), deadlineMs);
  });
  try {
    return await Promise.race([step, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Non-overlapping ranges of one batch. */
function batch(random: FuzzRandom, sizeBytes: number): Op[] {
  const count = random.between(1, 6);
  const slot = Math.floor(sizeBytes / count);
  return Array.from({ length: count }, (_, index) => {
    const length = random.between(1, Math.min(slot, 64 * 1024));
    const offset = index * slot + random.below(slot - length + 1);
    const roll = random.float();
    if (roll < 0.4) return { type: Command.Write, offset, length, flags: random.chance(0.2) ? CommandFlag.Fua : 0, data: random.bytes(length) };
    if (roll < 0.8) return { type: Command.Read, offset, length, flags: 0 };
    if (roll < 0.9) return { type: Command.WriteZeroes, offset, length, flags: random.chance(0.5) ? CommandFlag.NoHole : 0 };
    if (roll < 0.95) return { type: Command.Trim, offset, length, flags: 0 };
    return { type: Command.Flush, offset: 0, length: 0, flags: 0 };
  });
}

/**
 * One reply, matched to its request by handle before its data is read: a simple reply says nothing
 * of its length, so only the request tells whether (and how much) read data follows.
 */
async function readReply(client: RawClient, byHandle: ReadonlyMap<bigint, Op>): Promise<{ handle: bigint; error: number; data: Buffer }> {
  const magic = (await client.read(4)).readUInt32BE(0);
  if (magic === SIMPLE_REPLY_MAGIC) {
    const header = await client.read(SIMPLE_REPLY_HEADER_BYTES - 4);
    const error = header.readUInt32BE(0);
    const handle = header.readBigUInt64BE(4);
    const op = byHandle.get(handle);
    const data = error === 0 && op?.type === Command.Read ? await client.read(op.length) : Buffer.alloc(0);
    return { handle, error, data };
  }
  if (magic !== STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  const header = await client.read(STRUCTURED_REPLY_HEADER_BYTES - 4);
  const type = header.readUInt16BE(2);
  const handle = header.readBigUInt64BE(4);
  const payload = await client.read(header.readUInt32BE(12));
  if ((header.readUInt16BE(0) & REPLY_FLAG_DONE) === 0) throw new Error('the server split a reply into chunks (it documents one chunk per reply)');
  if (type === ReplyType.OffsetData) return { handle, error: 0, data: payload.subarray(8) };
  return { handle, error: type >= 0x8000 ? payload.readUInt32BE(0) : 0, data: Buffer.alloc(0) };
}

export async function connectModelClient(target: { host: string; port: number }, name: string, structured: boolean): Promise<RawClient> {
  const client = await RawClient.connect({ host: target.host, port: target.port });
  await client.attach(name, { structured });
  return client;
}

/** Runs `batches` batches against `name`; every reply must be OK and every read must match the model. */
export async function runModelClient(
  target: { host: string; port: number },
  name: string,
  model: VolumeModel,
  random: FuzzRandom,
  batches: number,
  deadlineMs: number,
): Promise<Problem[]> {
  const structured = random.chance(0.5);
  let client: RawClient | null = null;
  let handle = 1n;
  try {
    client = await within(deadlineMs, 'the model client handshake', connectModelClient(target, name, structured));
    for (let round = 0; round < batches; round++) {
      const ops = batch(random, model.sizeBytes);
      const byHandle = new Map<bigint, Op>();
      for (const op of ops) {
        byHandle.set(handle, op);
        client.request(op.type, { handle: handle++, offset: op.offset, length: op.length, flags: op.flags, payload: op.data });
      }
      for (let i = 0; i < ops.length; i++) {
        const reply = await within(deadlineMs, `model client batch ${round}`, readReply(client, byHandle));
        const op = byHandle.get(reply.handle);
        if (!op) throw new Error(`reply for handle ${reply.handle}, never sent or answered twice`);
        byHandle.delete(reply.handle);
        if (reply.error !== 0) throw new Error(`command ${op.type} at ${op.offset}+${op.length} failed with errno ${reply.error}`);
        if (op.type === Command.Read) {
          const mismatch = model.firstMismatch(reply.data, op.offset);
          if (mismatch) {
            model.forget(0, model.sizeBytes);
            return [{ kind: 'good-client-read', detail: `read ${op.offset}+${op.length}: byte ${mismatch.at} is ${mismatch.actual}, model says ${mismatch.expected}` }];
          }
        }
      }
      for (const op of ops) {
        if (op.type === Command.Write && op.data) model.write(op.offset, op.data);
        else if (op.type === Command.WriteZeroes) model.zero(op.offset, op.length);
        else if (op.type === Command.Trim) model.forget(op.offset, op.length);
      }
    }
    return [];
  } catch (error) {
    // Writes of the failed batch may or may not have landed.
    model.forget(0, model.sizeBytes);
    return [{ kind: 'good-client-failed', detail: (error as Error).message }];
  } finally {
    client?.close();
  }
}

/** Reads a whole export through NBD (for a server in another process) in pieces of at most 1 MiB. */
export async function readExport(target: { host: string; port: number }, name: string, sizeBytes: number, deadlineMs: number): Promise<Buffer> {
  const client = await within(deadlineMs, `attaching to ${name}`, connectModelClient(target, name, false));
  try {
    const pieces: Buffer[] = [];
    for (let offset = 0; offset < sizeBytes; offset += 1 << 20) {
      const length = Math.min(1 << 20, sizeBytes - offset);
      client.request(Command.Read, { handle: BigInt(offset + 1), offset, length });
      const reply = await within(deadlineMs, `reading ${name}`, client.readReply(length));
      if (reply.error !== 0) throw new Error(`reading ${name} at ${offset} failed with errno ${reply.error}`);
      pieces.push(reply.data);
    }
    return Buffer.concat(pieces);
  } finally {
    client.close();
  }
}

/** Writes `data` over a whole export through NBD, so the model knows every byte again. */
export async function fillExport(target: { host: string; port: number }, name: string, data: Buffer, deadlineMs: number): Promise<void> {
  const client = await within(deadlineMs, `attaching to ${name}`, connectModelClient(target, name, false));
  try {
    for (let offset = 0; offset < data.length; offset += 1 << 20) {
      const piece = data.subarray(offset, offset + (1 << 20));
      client.request(Command.Write, { handle: BigInt(offset + 1), offset, payload: piece });
      const reply = await within(deadlineMs, `filling ${name}`, client.readReply());
      if (reply.error !== 0) throw new Error(`filling ${name} at ${offset} failed with errno ${reply.error}`);
    }
  } finally {
    client.close();
  }
}
