// What every layer shares: the clock, the error tree, the limits that span layers.
export { every, sleep, systemClock, type Clock } from './clock.js';
export * from './constants.js';
export { ClusterError, FtvmError, InputError, StorageError } from './errors.js';
export { MIN_SEGMENT_CLASS_BYTES, SegmentPool, segmentClassOf, sizeClassOf } from './segment-pool.js';
export { readingInto } from './socket-reader.js';
export { eachInFlight } from './in-flight.js';
