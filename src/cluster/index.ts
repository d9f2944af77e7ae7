export { ClusterNode, DEFAULT_TIMINGS, FencedError, type NodeTimings } from './node.js';
export { productionEnvironment, type LeaseArea, type NodeEnvironment, type PlantedFaults } from './node-environment.js';
export { ControlServer, requestControl, subscribeEvents, parseRequest, MIRROR_DUMP_HEADER_BYTES, type ClusterStatus, type ControlRequest, type ControlResult, type RunningOperation } from './control.js';
export { isLoopbackHost, partnerTlsWanted, PartnerSecurityError, readPartnerKey, writePartnerKey } from './partner-security.js';
export { DEFAULT_GUARD_LEASE_MS, guardMembers, memberUsers, type GuardOptions, type MemberHolder } from './member-guard.js';
export { VolumeCatalog, NotHolderError, type VolumeInfo, type CreateRequest } from './volume-catalog.js';
