export { RaidArray, type ArrayStatus, type MemberStatus, type RaidDependencies } from './raid-array.js';
export { assembleArray, createArray, DEFAULT_CHUNK_BYTES, RaidConfigError, type CreateOptions } from './raid-assembly.js';
export { rebuildMember, replaceMember, scrubArray, type ProgressCallback, type ScrubReport } from './raid-maintenance.js';
export { BLOCK_BYTES, type RaidLevel } from './layout.js';
