// The superblock of a RAID member, and where the member file's areas go.
//
// Member file:  | superblock copy A | copy B | bitmap slots (one per node) | checksum table | data |
//               0                  4096     8192                                           1 MiB-aligned
//
// Each member carries its own superblock, which records the whole array (level, member count, each
// member's state) as this member last saw it; the event counter orders those views, so on assembly
// the member with the highest counter tells the truth. Two copies alternate by counter parity (see
// crc.ts), so a torn superblock write loses at most the update being written.
import assert from 'node:assert/strict';
import layout from 'buffer-layout';
import { FormatError, expectMagic, newestValidCopy, sealTrailingCrc, trailingCrcMatches } from './crc.js';
import { checksumTableBytesFor } from './checksum-table.js';
import { BLOCK_BYTES, MEMBER_COUNT_MAX, type RaidLevel } from './layout.js';
import { BITMAP_PAGE_BYTES, bitmapSlotBytesFor } from './write-intent-bitmap.js';

export const SUPERBLOCK_BYTES = 4096;
export const SUPERBLOCK_FORMAT_VERSION = 1;
const SUPERBLOCK_MAGIC = Buffer.from('FTVMRAID', 'ascii');
/** The format has one state byte per member index, so it can describe at most 32 members. */
const MEMBER_STATE_BYTES = 32;
assert(MEMBER_COUNT_MAX <= MEMBER_STATE_BYTES, 'more members allowed than the superblock can describe');
/** The bitmap area starts after both superblock copies. */
export const BITMAP_AREA_OFFSET = 2 * SUPERBLOCK_BYTES;
/** 1 MiB alignment keeps data blocks aligned for O_DIRECT and page-cache friendly; chunks need only block alignment. */
export const DATA_AREA_ALIGNMENT_BYTES = 1024 * 1024;
/** 4 MiB regions: a 1 TiB member needs a 32 KiB bitmap slot, and a resync after a crash copies
 *  only the 4 MiB regions written in the last moments. */
export const DEFAULT_BITMAP_REGION_BYTES = 4 * 1024 * 1024;
/** One bitmap slot per node (md-cluster style), so nodes never share a bitmap page. */
export const BITMAP_SLOT_COUNT = 8;

export type MemberState = 'active' | 'failed' | 'rebuilding' | 'missing';

const LEVEL_BY_CODE = new Map<number, RaidLevel>([[1, 'raid1'], [10, 'raid10'], [5, 'raid5']]);
const CODE_BY_LEVEL: Record<RaidLevel, number> = { raid1: 1, raid10: 10, raid5: 5 };
/** Index = the state's byte on disk. */
const MEMBER_STATES: readonly MemberState[] = ['active', 'failed', 'rebuilding', 'missing'];
const FLAG_CLEAN = 1 << 0;
const FLAG_ZERO_ENTRIES = 1 << 1;
const KNOWN_FLAGS = FLAG_CLEAN | FLAG_ZERO_ENTRIES;

/**
 * A decoded superblock. Magic, version, reserved fields and the CRC belong to the codec and are not
 * here. `arrayUuid` is the canonical lowercase text form (as crypto.randomUUID() makes): comparable
 * with ===, printable, and converted to the 16 raw bytes only on disk.
 */
export interface Superblock {
  arrayUuid: string;
  level: RaidLevel;
  memberCount: number;
  memberIndex: number;
  chunkBytes: number;
  blockBytes: number;
  memberDataBytes: number;
  dataOffset: number;
  bitmapOffset: number;
  bitmapRegionBytes: number;
  bitmapSlotBytes: number;
  bitmapSlotCount: number;
  checksumOffset: number;
  checksumBytes: number;
  /** Below 2^53: one increment per state change would take millennia to get there. */
  eventCounter: number;
  createdAtMs: number;
  /** The array was stopped cleanly: no bitmap replay needed on assembly. */
  clean: boolean;
  /**
   * The checksum tables' zero entry means "zeroes" (checksum-table.ts), so blocks it marks are read
   * without I/O. Set on arrays created since 2026-12-07; an older array keeps the plain CRC rule
   * (one of its written blocks may have the zero block's CRC). An ftvm without this flag refuses
   * the array instead of writing entries that break the rule.
   */
  zeroEntries: boolean;
  /** One per member index, length memberCount. */
  memberStates: MemberState[];
  /** Bytes of the data area already rebuilt on the member whose state is 'rebuilding'. */
  rebuildPositionBytes: number;
}

/** The wire form: the same fields, with the uuid, level, flags and member states as stored. */
type SuperblockFields = Omit<Superblock, 'arrayUuid' | 'level' | 'clean' | 'memberStates'> & {
  magic: Buffer;
  formatVersion: number;
  arrayUuid: Buffer;
  levelCode: number;
  reserved84: number;
  flags: number;
  reserved124: number;
  memberStates: Buffer;
};

/** Bytes 0..167; the rest up to the CRC at 4092 is zero. nu64be is exact below 2^53. */
export const superblockLayout = layout.struct<SuperblockFields>([
  layout.blob(8, 'magic'),
  layout.u32be('formatVersion'),
  layout.blob(16, 'arrayUuid'),
  layout.u32be('levelCode'),
  layout.u32be('memberCount'),
  layout.u32be('memberIndex'),
  layout.u32be('chunkBytes'),
  layout.u32be('blockBytes'),
  layout.nu64be('memberDataBytes'),
  layout.nu64be('dataOffset'),
  layout.nu64be('bitmapOffset'),
  layout.u32be('bitmapRegionBytes'),
  layout.u32be('bitmapSlotBytes'),
  layout.u32be('bitmapSlotCount'),
  layout.u32be('reserved84'),
  layout.nu64be('checksumOffset'),
  layout.nu64be('checksumBytes'),
  layout.nu64be('eventCounter'),
  layout.nu64be('createdAtMs'),
  layout.u32be('flags'),
  layout.u32be('reserved124'),
  layout.blob(MEMBER_STATE_BYTES, 'memberStates'),
  layout.nu64be('rebuildPositionBytes'),
]);

export class SuperblockError extends FormatError {
  override name = 'SuperblockError';
}

/** Writers alternate copies, so a torn write leaves the previous superblock intact in the other. */
export function superblockCopyOffset(eventCounter: number): number {
  return eventCounter % 2 === 0 ? 0 : SUPERBLOCK_BYTES;
}

export function encodeSuperblock(superblock: Superblock): Buffer {
  const problem = impossibleValue(superblock);
  assert(problem === null, `encoding an impossible superblock: ${problem}`);
  const memberStates = Buffer.alloc(MEMBER_STATE_BYTES);
  superblock.memberStates.forEach((state, index) => (memberStates[index] = MEMBER_STATES.indexOf(state)));
  const out = Buffer.alloc(SUPERBLOCK_BYTES);
  superblockLayout.encode(
    {
      ...superblock,
      magic: SUPERBLOCK_MAGIC,
      formatVersion: SUPERBLOCK_FORMAT_VERSION,
      arrayUuid: Buffer.from(superblock.arrayUuid.replaceAll('-', ''), 'hex'),
      levelCode: CODE_BY_LEVEL[superblock.level],
      reserved84: 0,
      flags: (superblock.clean ? FLAG_CLEAN : 0) | (superblock.zeroEntries ? FLAG_ZERO_ENTRIES : 0),
      reserved124: 0,
      memberStates,
    },
    out,
  );
  return sealTrailingCrc(out);
}

export function decodeSuperblock(buffer: Buffer): Superblock {
  if (buffer.length !== SUPERBLOCK_BYTES) {
    throw new SuperblockError('bad-value', `superblock is ${buffer.length} bytes, expected ${SUPERBLOCK_BYTES}`);
  }
  expectMagic(buffer, SUPERBLOCK_MAGIC, SuperblockError, 'not an ftvm RAID member');
  const fields = superblockLayout.decode(buffer);
  if (fields.formatVersion !== SUPERBLOCK_FORMAT_VERSION) {
    throw new SuperblockError('bad-version', `unsupported superblock format version ${fields.formatVersion}`);
  }
  if (!trailingCrcMatches(buffer)) throw new SuperblockError('bad-checksum', 'superblock checksum mismatch');
  const level = LEVEL_BY_CODE.get(fields.levelCode);
  if (level === undefined) throw new SuperblockError('bad-value', `unknown RAID level code ${fields.levelCode}`);
  if (fields.flags & ~KNOWN_FLAGS) throw new SuperblockError('bad-value', `unknown superblock flags 0x${fields.flags.toString(16)}`);
  const stateCodes = [...fields.memberStates];
  const badState = stateCodes.findIndex((code) => code >= MEMBER_STATES.length);
  if (badState >= 0) throw new SuperblockError('bad-value', `unknown member state ${stateCodes[badState]} at index ${badState}`);
  const superblock: Superblock = {
    arrayUuid: uuidText(fields.arrayUuid),
    level,
    memberCount: fields.memberCount,
    memberIndex: fields.memberIndex,
    chunkBytes: fields.chunkBytes,
    blockBytes: fields.blockBytes,
    memberDataBytes: fields.memberDataBytes,
    dataOffset: fields.dataOffset,
    bitmapOffset: fields.bitmapOffset,
    bitmapRegionBytes: fields.bitmapRegionBytes,
    bitmapSlotBytes: fields.bitmapSlotBytes,
    bitmapSlotCount: fields.bitmapSlotCount,
    checksumOffset: fields.checksumOffset,
    checksumBytes: fields.checksumBytes,
    eventCounter: fields.eventCounter,
    createdAtMs: fields.createdAtMs,
    clean: (fields.flags & FLAG_CLEAN) !== 0,
    zeroEntries: (fields.flags & FLAG_ZERO_ENTRIES) !== 0,
    memberStates: stateCodes.slice(0, fields.memberCount).map((code) => MEMBER_STATES[code]),
    rebuildPositionBytes: fields.rebuildPositionBytes,
  };
  const problem = impossibleValue(superblock);
  if (problem !== null) throw new SuperblockError('bad-value', `impossible superblock: ${problem}`);
  const strayState = stateCodes.findIndex((code, index) => index >= fields.memberCount && code !== 0);
  if (strayState >= 0) throw new SuperblockError('bad-value', `member state set at index ${strayState}, past the last member`);
  return superblock;
}

/** The valid copy with the higher event counter; throws only when both copies are invalid. */
export function newestSuperblock(copyA: Buffer, copyB: Buffer): Superblock {
  return newestValidCopy(copyA, copyB, decodeSuperblock, (sb) => sb.eventCounter, SuperblockError, 'superblock');
}

/** Why `sb` cannot describe a real member, or null. Shared by encode (assertion) and decode (error). */
function impossibleValue(sb: Superblock): string | null {
  const checks: Array<[boolean, string]> = [
    [/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(sb.arrayUuid), 'array uuid is not a lowercase uuid'],
    [sb.memberCount >= 1 && sb.memberCount <= MEMBER_COUNT_MAX, `member count ${sb.memberCount} not in 1..${MEMBER_COUNT_MAX}`],
    [sb.memberIndex < sb.memberCount, `member index ${sb.memberIndex} >= member count ${sb.memberCount}`],
    [sb.memberStates.length === sb.memberCount, `${sb.memberStates.length} member states for ${sb.memberCount} members`],
    [sb.blockBytes === BLOCK_BYTES, `block bytes ${sb.blockBytes}, format ${SUPERBLOCK_FORMAT_VERSION} uses ${BLOCK_BYTES}`],
    [sb.memberDataBytes % sb.blockBytes === 0, `data bytes ${sb.memberDataBytes} not a multiple of block bytes`],
    [sb.chunkBytes > 0 && sb.chunkBytes % sb.blockBytes === 0, `chunk bytes ${sb.chunkBytes} not a multiple of block bytes`],
    [sb.bitmapSlotBytes % BITMAP_PAGE_BYTES === 0, `bitmap slot bytes ${sb.bitmapSlotBytes} not whole pages`],
    [sb.bitmapOffset >= BITMAP_AREA_OFFSET, `bitmap offset ${sb.bitmapOffset} overlaps the superblocks`],
    [sb.bitmapOffset + sb.bitmapSlotBytes * sb.bitmapSlotCount <= sb.checksumOffset, 'bitmap area overlaps the checksum table'],
    [sb.checksumOffset + sb.checksumBytes <= sb.dataOffset, 'checksum table overlaps the data area'],
    [Number.isSafeInteger(sb.eventCounter) && sb.eventCounter >= 0, `event counter ${sb.eventCounter} is not a safe integer`],
    [sb.rebuildPositionBytes <= sb.memberDataBytes, `rebuild position ${sb.rebuildPositionBytes} past the data area`],
  ];
  const failed = checks.find(([ok]) => !ok);
  return failed === undefined ? null : failed[1];
}

function uuidText(raw: Buffer): string {
  const hex = raw.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export interface MemberLayout {
  bitmapOffset: number;
  bitmapSlotBytes: number;
  checksumOffset: number;
  checksumBytes: number;
  dataOffset: number;
  fileBytes: number;
}

/** Where each area of a member file goes, for a data area of `memberDataBytes`. */
export function computeMemberLayout(options: {
  memberDataBytes: number;
  blockBytes: number;
  bitmapRegionBytes: number;
  bitmapSlotCount: number;
}): MemberLayout {
  const { memberDataBytes, blockBytes, bitmapRegionBytes, bitmapSlotCount } = options;
  assert(memberDataBytes > 0 && memberDataBytes % blockBytes === 0, 'data bytes must be a positive multiple of block bytes');
  const bitmapSlotBytes = bitmapSlotBytesFor(bitmapRegionBytes, memberDataBytes);
  const checksumOffset = BITMAP_AREA_OFFSET + bitmapSlotCount * bitmapSlotBytes;
  const checksumBytes = checksumTableBytesFor(memberDataBytes / blockBytes);
  const dataOffset = roundUp(checksumOffset + checksumBytes, DATA_AREA_ALIGNMENT_BYTES);
  return { bitmapOffset: BITMAP_AREA_OFFSET, bitmapSlotBytes, checksumOffset, checksumBytes, dataOffset, fileBytes: dataOffset + memberDataBytes };
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
