export { FramePool, FramePoolError, FRAME_BYTES, MAX_PAGE_BYTES } from './frame-pool.js';
