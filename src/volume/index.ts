export { PINNED_READ_MIN_BYTES, VolumeError, type Extent, type PinnedRange, type Volume, type VolumeErrorCode, type ZeroOptions } from './volume.js';
export { nextTurn, PAGES_PER_TURN, REQUESTS_PER_TURN } from './turn.js';
