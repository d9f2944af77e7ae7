export { RaidArray, type ArrayStatus, type MemberStatus, type RaidDependencies } from './raid-array.js';
export { assembleArray, createArray, DEFAULT_CHUNK_BYTES, RaidConfigError, type AssembleOptions, type CreateOptions } from './raid-assembly.js';
export { examineMembers, inspectArray, type ArrayInspection, type MemberExamination, type SuperblockCopy } from './raid-inspection.js';
export { claimDirectory, describeHolder, HolderClaim, listHolderClaims, MemberInUseError, type HolderClaimRecord, type HolderKind } from './holder-claims.js';
export { processAlive, processAliveAsync, statShowsAlive, thisHost, thisProcess, type ProcessIdentity } from './process-identity.js';
export { rebuildMember, replaceMember, scrubArray, type ProgressCallback, type ScrubReport } from './raid-maintenance.js';
export { BLOCK_BYTES, stripeDataBytes, dataChunksPerStripe, type RaidLevel } from './layout.js';
export { ArrayFailedError, survives } from './member-set.js';
export { MemberError, WriteRefusedError } from './member.js';
export { StorageStack, DEFAULT_STACK_OPTIONS, type StorageStackOptions } from './storage-stack.js';
export { NodeStateStore, type BlockStore } from './node-state-store.js';
export {
  AllocationError,
  checkVolumeRequest,
  dropAllocation,
  freeExtents,
  growAllocation,
  liveAllocation,
  markDeleting,
  placeAllocation,
  placeAllocations,
  type Extent,
  type OnlineVolumeRequest,
  type VolumeRequest,
} from './allocations.js';
export { NODE_STATE_REGION_BYTES, LEASE_COPY_BYTES, LEASE_SLOT_COUNT, encodeLease, newestLease, type Allocation, type ClusterRecord, type Lease } from './node-state.js';
export { FormatError } from './crc.js';
export { FileMember, type MemberDevice } from './member.js';
export { memberDataBytesFor, provisionArray, type ProvisionOptions } from './provision.js';
export { failArrayMember, rebuildArrayMember, replaceArrayMember, refuseExisting, checkMemberIndex, RaidAdminError } from './raid-admin.js';
export { memberIo, DiskQueue } from './disk-queue.js';
