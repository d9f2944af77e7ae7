export { FramePool, FramePoolError, FRAME_BYTES, MAX_PAGE_BYTES } from './frame-pool.js';
export { MemoryManager, MAX_RUN_BYTES, PREFETCH_BRIDGE_BYTES, type AllocationSpec, type MemoryManagerOptions, type PagePointer, type PageWrite, type Replicator } from './memory-manager.js';
export { MemoryVolume } from './memory-volume.js';
export { MirrorStore } from './mirror-store.js';
export { LinkReplicator } from './link-replicator.js';
export { ResyncStage, STAGE_TTL_MS } from './resync-stage.js';
