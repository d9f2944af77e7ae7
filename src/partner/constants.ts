// Partner link wire values (docs/protocol.md) and the limits the link enforces.
// Every limit is checked before a buffer of that size is allocated; the relations between the
// limits and the message layouts are asserted when codec.ts loads.
import { MAX_PAGE_BYTES, MAX_RUN_BYTES, MIN_PAGE_BYTES } from '../core/index.js';

/** "FTVM": a frame that does not start with it is not ours (a stray client, a desynchronised stream). */
export const PARTNER_MAGIC = 0x4654564d;

/**
 * Bumped on any change to a layout or to what a field may hold. 2: a write page range may run on
 * into the following pages (one message per run of pages). 3: the link opens with a challenge
 * exchange and an authenticated hello (handshake.ts); nothing else is read before it. Only the
 * challenge layout is frozen for every later version, so a node can tell which version a peer speaks.
 * 4: takeover's four meanings became four messages (volume handover, holder announcement, mirror
 * reclaim, owner notice). 5: catalog change and volume removal (volumes made, grown and deleted online).
 */
export const PROTOCOL_VERSION = 5;

/**
 * Message types. 0x00xx are the patent's Figure 10 messages, 0x01xx our extensions. A response has
 * bit 0x0080 set; a response that belongs to one request type is that type | 0x0080.
 */
export const enum MessageType {
  // Figure 10 requests, in the order of the figure.
  SpaceRequest = 0x0001,
  AllocateMemory = 0x0002,
  ReleaseMemory = 0x0003,
  LockRequest = 0x0004,
  ReadHeader = 0x0005,
  WritePage = 0x0006,
  SenseRequest = 0x0007,
  AllocateRead = 0x0008,
  AllocateWrite = 0x0009,
  ReleasePointer = 0x000a,
  // Figure 10 responses.
  CommandComplete = 0x0080,
  SpaceStatus = 0x0081,
  LockStatus = 0x0084,
  Header = 0x0085,
  SenseInformation = 0x0087,
  // Extensions: what a real cluster needs and the patent leaves out.
  Hello = 0x0101,
  Heartbeat = 0x0102,
  PageClean = 0x0103,
  /** The holder moves a volume: `toNodeId` serves it from now on, `fromNodeId` served it. */
  VolumeHandover = 0x0104,
  ResyncBegin = 0x0105,
  ResyncEnd = 0x0106,
  ForwardedIo = 0x0107,
  Challenge = 0x0108,
  HolderAnnouncement = 0x0109,
  MirrorReclaim = 0x010a,
  OwnerNotice = 0x010b,
  CatalogChange = 0x010c,
  VolumeRemoval = 0x010d,
  HelloReply = 0x0181,
  HelloRefusal = 0x0182,
  IoData = 0x0187,
}

export const RESPONSE_TYPE_BIT = 0x0080;

/** Command complete status. A request may always be answered by command complete with a non-Ok status instead of its own response. */
export const enum Status {
  Ok = 0,
  /** Not enough free frames (the patent's "request denied"). */
  NoSpace = 1,
  /** The page is locked by another node in a mode that conflicts. */
  Locked = 2,
  UnknownAllocation = 3,
  NotResident = 4,
  /** The sender's epoch is older than the receiver's: the sender has been fenced. */
  StaleEpoch = 5,
  /** No accepted hello on this link yet, or the receiver is still being resynchronised. */
  NotPartner = 6,
  /** Well-formed but not acceptable (a page beyond the allocation, a range beyond the page). */
  Invalid = 7,
  /** Paging in from the shared disks failed. */
  IoError = 8,
  ShuttingDown = 9,
}

/** Lock modes: reads share a page, a write holds it alone, cluster-wide. */
export const enum LockMode {
  None = 0,
  Shared = 1,
  Exclusive = 2,
}

/** Why a hello was refused; the link is closed after the refusal is sent. */
export const enum RefusalReason {
  VersionMismatch = 1,
  ClusterMismatch = 2,
  /** The peer claims the receiver's node id, or a link from that node id is already up. */
  NodeIdConflict = 3,
  /** The peer's epoch is older than one the receiver has seen: it was fenced and must rejoin. */
  StaleEpoch = 4,
  /** The peer's node id is not in the receiver's config, or the link comes from another address than its configured one. */
  UnknownNode = 5,
  /** The peer's epoch is further ahead of every epoch the receiver has seen than claims could have taken it. */
  ImplausibleEpoch = 6,
}

/** What a sense request asks about. */
export const enum SenseKind {
  /** The receiver's whole frame pool and queues. */
  Node = 1,
  /** One allocation's resident and dirty pages (pool figures still describe the node). */
  Allocation = 2,
}

/** What a forwarded I/O asks for: the NBD commands, plus a probe for the node that holds the shared array open. */
export const enum IoOp {
  /** "Do you hold the array open?" (NIL_ALLOCATION, offset 0, length 0): command complete Ok or NotResident. */
  Probe = 0,
  Read = 1,
  Write = 2,
  Flush = 3,
  Zero = 4,
  Trim = 5,
}

/** A node id that names no node: "no owner", "no lock holder". */
export const NO_NODE = 0xffff_ffff;

/** The nil uuid: "every allocation" in a takeover, "no allocation" in a node-wide sense request, "the shared array itself" in a forwarded I/O. */
export const NIL_ALLOCATION = '00000000-0000-0000-0000-000000000000';

// ---- Limits ----

export const FRAME_HEADER_BYTES = 16;

/** Random bytes each end of a link contributes to its handshake, so no proof can be replayed. */
export const NONCE_BYTES = 32;
/** An HMAC-SHA256 over the handshake (handshake.ts). */
export const PROOF_BYTES = 32;
/**
 * Before a link is authenticated only the handshake's small frames may arrive: a larger declared
 * length closes the socket before a stranger can make the node buffer anything.
 */
export const MAX_HANDSHAKE_PAYLOAD_BYTES = 128;

/** Page sizes the policy assignment module may pick (docs/protocol.md). */
export { MAX_PAGE_BYTES, MIN_PAGE_BYTES };

/** The most data one forwarded read or write carries; the sender splits bigger NBD requests. */
export const MAX_IO_BYTES = MAX_RUN_BYTES;

/** Room for the fixed fields in front of a whole page in one write page frame. */
export const PAYLOAD_HEADER_ALLOWANCE_BYTES = 4 * 1024;

/** Largest payload a frame may declare; a larger declared length closes the link before anything is allocated. */
export const MAX_PAYLOAD_BYTES = MAX_PAGE_BYTES + PAYLOAD_HEADER_ALLOWANCE_BYTES;
export const MAX_FRAME_BYTES = FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES;

/**
 * Pages one page clean names: a run of consecutive pages destaged at one version, or, after a
 * partner joins, a whole allocation (MemoryManager.resync: every mirror up to that version goes).
 * Any u32 but 0: the partner walks the pages it holds, not the run.
 */
export const MAX_PAGE_CLEAN_PAGES = 0xffff_ffff;

/** Page entries in one header response; a longer page table is read in several round trips. */
export const MAX_HEADER_ENTRIES = 16 * 1024;

/** Per link and direction: past either bound the sender queues requests instead of writing them. */
export const MAX_REQUESTS_IN_FLIGHT = 1024;
export const MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024;
