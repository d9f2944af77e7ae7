export { VolumeError, type Extent, type Volume, type VolumeErrorCode, type ZeroOptions } from './volume.js';
