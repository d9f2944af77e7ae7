// What a node runs on: time, the network to its partners, the shared disks, its own process, and
// the outside world's doors (NBD listeners, the control socket). Production passes the real ones
// (productionEnvironment); test/sim passes simulated time, links and disks, and runs whole nodes,
// the real ClusterNode with its memory manager, authority, links and lease keeper, under a seed.
import { systemClock, type Clock } from '../core/index.js';
import type { ClusterConfig } from '../config/index.js';
import type { Logger } from '../observe/index.js';
import { tcpTransport, type LinkSecurity, type PartnerTransport } from '../partner/index.js';
import { FileMember, memberIo, type Lease, type MemberDevice } from '../storage/index.js';
import type { LeaseDisk, ProcessIdentity } from './lease.js';
import { LeaseFiles, processGone, thisProcess } from './lease-files.js';
import { partnerSecurity } from './partner-security.js';

/** The lease slots beside the members, as a node holds them open. */
export interface LeaseArea extends LeaseDisk {
  close(): Promise<void>;
}

/**
 * Bugs planted on purpose, only by test/sim, to prove its checks catch what they claim to catch.
 * Production has none.
 */
export interface PlantedFaults {
  /** A node taking a dead owner's volume over drops that owner's mirrored pages instead of destaging them. */
  dropMirrorsAtTakeover?: boolean;
}

export interface NodeEnvironment {
  readonly clock: Clock;
  /** How this node judges partner links: the partner key, address bindings, plausible epochs. */
  linkSecurity(config: ClusterConfig, plausibleEpoch: (epoch: number) => boolean, logger: Logger): Promise<LinkSecurity>;
  /** How partner links are made, given how this node judges them (TLS or not). */
  transport(security: LinkSecurity): PartnerTransport;
  /** Opens one member file of the shared array (the holder only). */
  openMember(path: string): Promise<MemberDevice>;
  /** Opens the lease slots beside the members. */
  openLeases(memberPaths: readonly string[]): Promise<LeaseArea>;
  /** This process, as its lease slot names it. */
  readonly process: ProcessIdentity;
  /** Whether the process behind a lease is known to be gone (same host): true, false, or null (cannot tell). */
  processGone(lease: Lease): boolean | null;
  /** Whether the node opens its NBD listeners and control socket (test/sim talks to its volumes directly). */
  readonly doors: boolean;
  /** Whether the holder records itself in claim files beside the members, for offline commands (real files only). */
  readonly claimMembers: boolean;
  /** One member operation at a time while a lease renewal is late (true), all again after (false). */
  paceMemberIo(on: boolean): void;
  readonly faults?: PlantedFaults;
}

export const productionEnvironment: NodeEnvironment = {
  clock: systemClock,
  linkSecurity: partnerSecurity,
  transport: (security) => tcpTransport(security.tls ? security.key : null),
  openMember: (path) => FileMember.open(path),
  openLeases: (memberPaths) => LeaseFiles.open(memberPaths),
  process: thisProcess(),
  processGone,
  doors: true,
  claimMembers: true,
  paceMemberIo: (on) => memberIo.pace(on),
};
