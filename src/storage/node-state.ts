// The node-state region: the first 1 MiB of the array's own address space, so it gets the same RAID
// redundancy and block checksums as user data.
//
// Array offset   0 KiB  cluster record, copy 0   (256 KiB)
//              256 KiB  cluster record, copy 1   (256 KiB)
//              512 KiB  lease slots: slot i copy c at 512 KiB + (i*2 + c) * 4096   (16 slots, 128 KiB)
//              640 KiB  unused up to 1 MiB
//
// Both records are stored twice and written alternately by sequence parity; readers take the valid
// copy with the higher sequence (see crc.ts), so a torn write never loses the previous state.
import assert from 'node:assert/strict';
import layout from 'buffer-layout';
import { z } from 'zod';
import { FormatError, crc32cOf, expectMagic, newestValidCopy, sealTrailingCrc, trailingCrcMatches } from './crc.js';

const KIB = 1024;
export const NODE_STATE_REGION_BYTES = 1024 * KIB;
/** 256 KiB holds thousands of allocations of JSON; the cluster record is small and rarely written. */
export const CLUSTER_RECORD_COPY_BYTES = 256 * KIB;
export const LEASE_AREA_OFFSET = 2 * CLUSTER_RECORD_COPY_BYTES;
/** One slot per node that may ever hold a lease; twice the bitmap's eight node slots leaves room. */
export const LEASE_SLOT_COUNT = 16;
/** One block per copy, so a lease renewal is one aligned block write. */
export const LEASE_COPY_BYTES = 4096;
/** Node names are at most 64 characters of [A-Za-z0-9._-] in the configuration, so 64 bytes. */
export const LEASE_HOLDER_BYTES_MAX = 64;
/** Host names are at most 64 bytes (HOST_NAME_MAX on Linux). */
export const LEASE_HOST_BYTES_MAX = 64;
export const NODE_STATE_FORMAT_VERSION = 1;
assert(LEASE_AREA_OFFSET + LEASE_SLOT_COUNT * 2 * LEASE_COPY_BYTES <= NODE_STATE_REGION_BYTES, 'leases overflow the region');

const CLUSTER_RECORD_MAGIC = Buffer.from('FTVMSTAT', 'ascii');
const LEASE_MAGIC = Buffer.from('FTVMLEAS', 'ascii');
/** Records are padded to whole blocks so that each write is block-aligned in the array. */
const WRITE_ALIGNMENT_BYTES = 4096;

export class NodeStateError extends FormatError {
  override name = 'NodeStateError';
}

// ---- Cluster record ----

export interface Allocation {
  guid: string;
  name: string;
  /** Where the allocation's bytes start in the array's address space (stripe-aligned). */
  arrayOffset: number;
  sizeBytes: number;
  pageBytes: number;
  /** The node that serves it now (the holder writes it at every takeover and handover). */
  owner: string;
  /** Volumes made online (`ftvm volume create`) say here what a config entry says of the others. */
  home?: string;
  readOnly?: boolean;
  description?: string;
  /** A delete is under way: served nowhere, its extent being zeroed; the space is not free yet. */
  deleting?: boolean;
}

export interface ClusterRecord {
  cluster: string;
  allocations: Allocation[];
  nodes: string[];
  /** Config volumes deleted online: a start does not make them again from the config. */
  deleted?: string[];
}

/** The body is JSON: the record is small and written rarely, and recovery tools can read it with jq. */
const clusterRecordSchema: z.ZodType<ClusterRecord> = z.object({
  cluster: z.string(),
  allocations: z.array(
    z.object({
      guid: z.guid(),
      name: z.string(),
      arrayOffset: z.number().int().nonnegative(),
      sizeBytes: z.number().int().nonnegative(),
      pageBytes: z.number().int().positive(),
      owner: z.string(),
      home: z.string().optional(),
      readOnly: z.boolean().optional(),
      description: z.string().max(1024).optional(),
      deleting: z.boolean().optional(),
    }),
  ),
  nodes: z.array(z.string()),
  deleted: z.array(z.string()).optional(),
});

interface ClusterRecordHeader {
  magic: Buffer;
  formatVersion: number;
  sequence: number;
  bodyBytes: number;
  crc: number;
}

/** The CRC (bytes 24..27) covers header bytes 0..23 and then the body. */
export const clusterRecordHeaderLayout = layout.struct<ClusterRecordHeader>([
  layout.blob(8, 'magic'),
  layout.u32be('formatVersion'),
  layout.nu64be('sequence'),
  layout.u32be('bodyBytes'),
  layout.u32be('crc'),
]);
const HEADER_BYTES = clusterRecordHeaderLayout.span;
const CRC_AT = HEADER_BYTES - 4;
export const CLUSTER_RECORD_BODY_BYTES_MAX = CLUSTER_RECORD_COPY_BYTES - HEADER_BYTES;

export function clusterRecordOffset(sequence: number): number {
  return (sequence % 2) * CLUSTER_RECORD_COPY_BYTES;
}

/** Header and body, zero-padded to whole blocks (at most one copy's bytes). */
export function encodeClusterRecord(record: ClusterRecord, sequence: number): Buffer {
  assert(Number.isSafeInteger(sequence) && sequence >= 0, 'sequence must be a safe integer');
  const json = JSON.stringify(record);
  const bodyBytes = Buffer.byteLength(json, 'utf8');
  if (bodyBytes > CLUSTER_RECORD_BODY_BYTES_MAX) {
    throw new NodeStateError('too-large', `cluster record is ${bodyBytes} bytes, at most ${CLUSTER_RECORD_BODY_BYTES_MAX} fit`);
  }
  const out = Buffer.alloc(Math.ceil((HEADER_BYTES + bodyBytes) / WRITE_ALIGNMENT_BYTES) * WRITE_ALIGNMENT_BYTES);
  const body = out.subarray(HEADER_BYTES, HEADER_BYTES + bodyBytes);
  body.write(json, 'utf8');
  const header = { magic: CLUSTER_RECORD_MAGIC, formatVersion: NODE_STATE_FORMAT_VERSION, sequence, bodyBytes, crc: 0 };
  clusterRecordHeaderLayout.encode(header, out);
  out.writeUInt32BE(crc32cOf(out.subarray(0, CRC_AT), body), CRC_AT);
  return out;
}

/** Accepts the encoded bytes or a whole 256 KiB copy; bytes after the body are ignored. */
export function decodeClusterRecord(buffer: Buffer): { record: ClusterRecord; sequence: number } {
  if (buffer.length < HEADER_BYTES) throw new NodeStateError('bad-value', `cluster record truncated at ${buffer.length} bytes`);
  expectMagic(buffer, CLUSTER_RECORD_MAGIC, NodeStateError, 'not an ftvm cluster record');
  const header = clusterRecordHeaderLayout.decode(buffer);
  if (header.formatVersion !== NODE_STATE_FORMAT_VERSION) {
    throw new NodeStateError('bad-version', `unsupported cluster record format version ${header.formatVersion}`);
  }
  if (header.bodyBytes > CLUSTER_RECORD_BODY_BYTES_MAX || HEADER_BYTES + header.bodyBytes > buffer.length) {
    throw new NodeStateError('bad-value', `cluster record body of ${header.bodyBytes} bytes does not fit`);
  }
  const body = buffer.subarray(HEADER_BYTES, HEADER_BYTES + header.bodyBytes);
  if (crc32cOf(buffer.subarray(0, CRC_AT), body) !== header.crc) {
    throw new NodeStateError('bad-checksum', 'cluster record checksum mismatch');
  }
  checkSequence(header.sequence, 'cluster record');
  return { record: parseClusterRecordBody(body), sequence: header.sequence };
}

export function newestClusterRecord(copyA: Buffer, copyB: Buffer): { record: ClusterRecord; sequence: number } {
  return newestValidCopy(copyA, copyB, decodeClusterRecord, (decoded) => decoded.sequence, NodeStateError, 'cluster record');
}

function parseClusterRecordBody(body: Buffer): ClusterRecord {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new NodeStateError('bad-value', `cluster record body is not JSON: ${(error as Error).message}`);
  }
  const parsed = clusterRecordSchema.safeParse(json);
  if (!parsed.success) throw new NodeStateError('bad-value', `cluster record body: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

// ---- Leases ----

export interface Lease {
  slot: number;
  sequence: number;
  /** Raised on every takeover, so a stale holder's writes can be fenced. */
  epoch: number;
  expiresAtMs: number;
  /** Node name; '' for a released slot. */
  holder: string;
  /**
   * The writing process, so a node on the same host can prove it dead (no such pid, or a pid reused
   * by a process that started at another time) instead of waiting for the lease to run out.
   */
  pid: number;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22); 0 if unknown. */
  processStart: number;
  /** The host name the process runs on ('' if unknown). */
  host: string;
}

interface LeaseFields {
  magic: Buffer;
  formatVersion: number;
  slot: number;
  sequence: number;
  epoch: number;
  expiresAtMs: number;
  holderBytes: number;
  holder: Buffer;
  pid: number;
  processStart: number;
  hostBytes: number;
  host: Buffer;
}

/** Bytes 0..183; the name fields are fixed-size, zero past their length; CRC of 0..4091 at 4092. */
export const leaseLayout = layout.struct<LeaseFields>([
  layout.blob(8, 'magic'),
  layout.u32be('formatVersion'),
  layout.u32be('slot'),
  layout.nu64be('sequence'),
  layout.nu64be('epoch'),
  layout.nu64be('expiresAtMs'),
  layout.u16be('holderBytes'),
  layout.blob(LEASE_HOLDER_BYTES_MAX, 'holder'),
  layout.u32be('pid'),
  layout.nu64be('processStart'),
  layout.u16be('hostBytes'),
  layout.blob(LEASE_HOST_BYTES_MAX, 'host'),
]);

export function leaseCopyOffset(slot: number, sequence: number): number {
  assert(Number.isInteger(slot) && slot >= 0 && slot < LEASE_SLOT_COUNT, `no lease slot ${slot}`);
  return LEASE_AREA_OFFSET + (slot * 2 + (sequence % 2)) * LEASE_COPY_BYTES;
}

export function encodeLease(lease: Lease): Buffer {
  assert(Number.isInteger(lease.slot) && lease.slot >= 0 && lease.slot < LEASE_SLOT_COUNT, `no lease slot ${lease.slot}`);
  for (const counter of [lease.sequence, lease.epoch, lease.expiresAtMs, lease.processStart]) {
    assert(Number.isSafeInteger(counter) && counter >= 0, 'lease counters must be safe integers');
  }
  assert(Number.isInteger(lease.pid) && lease.pid >= 0 && lease.pid <= 0xffffffff, 'lease pid must be a u32');
  const holder = fixedText(lease.holder, LEASE_HOLDER_BYTES_MAX, 'lease holder name');
  const host = fixedText(lease.host, LEASE_HOST_BYTES_MAX, 'lease host name');
  const out = Buffer.alloc(LEASE_COPY_BYTES);
  leaseLayout.encode(
    { ...lease, magic: LEASE_MAGIC, formatVersion: NODE_STATE_FORMAT_VERSION, holderBytes: holder.bytes, holder: holder.field, hostBytes: host.bytes, host: host.field },
    out,
  );
  return sealTrailingCrc(out);
}

function fixedText(text: string, bytesMax: number, what: string): { field: Buffer; bytes: number } {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > bytesMax) throw new NodeStateError('too-large', `${what} is ${bytes} bytes, at most ${bytesMax}`);
  const field = Buffer.alloc(bytesMax);
  field.write(text, 'utf8');
  return { field, bytes };
}

export function decodeLease(buffer: Buffer): Lease {
  if (buffer.length !== LEASE_COPY_BYTES) {
    throw new NodeStateError('bad-value', `lease copy is ${buffer.length} bytes, expected ${LEASE_COPY_BYTES}`);
  }
  expectMagic(buffer, LEASE_MAGIC, NodeStateError, 'not an ftvm lease');
  const fields = leaseLayout.decode(buffer);
  if (fields.formatVersion !== NODE_STATE_FORMAT_VERSION) {
    throw new NodeStateError('bad-version', `unsupported lease format version ${fields.formatVersion}`);
  }
  if (!trailingCrcMatches(buffer)) throw new NodeStateError('bad-checksum', 'lease checksum mismatch');
  if (fields.slot >= LEASE_SLOT_COUNT) throw new NodeStateError('bad-value', `lease slot ${fields.slot} out of range`);
  if (fields.holderBytes > LEASE_HOLDER_BYTES_MAX) {
    throw new NodeStateError('bad-value', `lease holder name of ${fields.holderBytes} bytes is too long`);
  }
  if (fields.hostBytes > LEASE_HOST_BYTES_MAX) throw new NodeStateError('bad-value', `lease host name of ${fields.hostBytes} bytes is too long`);
  checkSequence(fields.sequence, 'lease');
  const { slot, sequence, epoch, expiresAtMs, pid, processStart } = fields;
  return {
    slot,
    sequence,
    epoch,
    expiresAtMs,
    holder: fields.holder.subarray(0, fields.holderBytes).toString('utf8'),
    pid,
    processStart,
    host: fields.host.subarray(0, fields.hostBytes).toString('utf8'),
  };
}

/** The valid copy with the higher sequence; both copies blank (code 'blank') means a free slot. */
export function newestLease(copyA: Buffer, copyB: Buffer): Lease {
  return newestValidCopy(copyA, copyB, decodeLease, (lease) => lease.sequence, NodeStateError, 'lease');
}

/** nu64be rounds above 2^53; a sequence that large was not written by us. */
function checkSequence(sequence: number, what: string): void {
  if (!Number.isSafeInteger(sequence)) throw new NodeStateError('bad-value', `${what} sequence ${sequence} is not a safe integer`);
}
