// Every partner link message as a tagged union on `type` (the wire code). Field names are the
// patent's concepts (Fig. 10) and the design's; byte layouts are in codec.ts and docs/protocol.md.
//
// Conventions: an allocation is named by its GUID as a canonical lowercase uuid string; node ids
// are u32 (NO_NODE for none); 64-bit counters (bytes, virtual pages, versions, epochs) are safe
// integers, and a decoded value beyond 2^53 - 1 is refused rather than rounded. Every message
// carries a request id: a response echoes the id of the request it answers, so many requests can
// be in flight at once and complete out of order. A heartbeat's id is its sequence number.
import type { IoOp, LockMode, MessageType, RefusalReason, SenseKind, Status } from './constants.js';

interface Framed {
  requestId: number;
}

/** Identifies a page everywhere in the cluster; frame numbers are local and never travel. */
interface PageAddress {
  allocation: string;
  virtualPage: number;
}

// ---- Figure 10 requests ----

/** Asks for the size of the partner's free memory pool before paging in or allocating. */
export interface SpaceRequest extends Framed {
  type: MessageType.SpaceRequest;
  bytesWanted: number;
}

/** Create the data structures (page map, attributes) for a new allocation. */
export interface AllocateMemory extends Framed {
  type: MessageType.AllocateMemory;
  allocation: string;
  sizeBytes: number;
  pageBytes: number;
  /** The node that owns the allocation (its lock master). */
  ownerNodeId: number;
}

/** Dismantle an allocation's data structures and free its frames. */
export interface ReleaseMemory extends Framed {
  type: MessageType.ReleaseMemory;
  allocation: string;
}

/** Asks for the lock status and owner of one page. */
export interface LockRequest extends Framed, PageAddress {
  type: MessageType.LockRequest;
  requestingNodeId: number;
  /** The mode the requester wants, so a lock master can answer for it. */
  mode: LockMode.Shared | LockMode.Exclusive;
}

/** Asks for the allocation header and its page attribute entries, from a page on. */
export interface ReadHeader extends Framed {
  type: MessageType.ReadHeader;
  allocation: string;
  firstVirtualPage: number;
  maxEntries: number;
}

/**
 * Copies a page, or only its modified byte range, into the partner's frame. `data` holds `length`
 * bytes for `offset` within the page, or nothing when `zeroFill` says the range is zeros. On
 * decode, `data` is a view into the received bytes (it aliases the framer's input).
 */
export interface WritePage extends Framed, PageAddress {
  type: MessageType.WritePage;
  /** Raised on every change of the page; page clean names the version it destaged. */
  version: number;
  pageBytes: number;
  /**
   * The range: `length` bytes from `offset` in page `virtualPage` on. It may run on into the
   * following pages (one write page for a run of consecutive pages, which all take `version`);
   * it starts in the named page and ends within MAX_PAGE_BYTES of that page's first byte.
   */
  offset: number;
  length: number;
  /** The range still has to reach the disks (false when a clean page is copied during resync). */
  dirty: boolean;
  zeroFill: boolean;
  /**
   * The range's bytes. Sent, they may be gathered from several buffers (the frames of a run of
   * pages, sent by reference); decoded, they are always one Buffer.
   */
  data: Buffer | readonly Buffer[];
}

export interface SenseRequest extends Framed {
  type: MessageType.SenseRequest;
  kind: SenseKind;
  /** NIL_ALLOCATION for SenseKind.Node. */
  allocation: string;
}

/**
 * Records a read (allocate read) or write (allocate write) lock for `nodeId`, which becomes an
 * owner of the page. With `pageIn` the page is not resident yet: the receiver takes a frame and
 * pages it in from the shared disks before it answers.
 */
export interface AllocateRead extends Framed, PageAddress {
  type: MessageType.AllocateRead;
  nodeId: number;
  pageIn: boolean;
}

export interface AllocateWrite extends Framed, PageAddress {
  type: MessageType.AllocateWrite;
  nodeId: number;
  pageIn: boolean;
}

/** `nodeId` gives up its `mode` lock; `modified` says the page went into the destage queue. */
export interface ReleasePointer extends Framed, PageAddress {
  type: MessageType.ReleasePointer;
  nodeId: number;
  mode: LockMode.Shared | LockMode.Exclusive;
  modified: boolean;
}

// ---- Figure 10 responses ----

/** Ends any request that has no response of its own, or any request that failed. */
export interface CommandComplete extends Framed {
  type: MessageType.CommandComplete;
  /** The type of the request this completes, so a mismatched id is caught. */
  requestType: MessageType;
  status: Status;
}

export interface SpaceStatus extends Framed {
  type: MessageType.SpaceStatus;
  freeBytes: number;
  /** Clean, unlocked pages the replacement queue could free. */
  reclaimableBytes: number;
}

export interface LockStatus extends Framed {
  type: MessageType.LockStatus;
  /** The strongest lock held on the page. */
  mode: LockMode;
  readerCount: number;
  /** The write lock holder, else the page owner; NO_NODE for none. */
  ownerNodeId: number;
}

export interface HeaderPageEntry {
  virtualPage: number;
  version: number;
  ownerNodeId: number;
  readerCount: number;
  lockMode: LockMode;
  /** The range not yet destaged; length 0 for a clean page. */
  dirtyOffset: number;
  dirtyLength: number;
}

/** The allocation header and the attributes of its resident pages from the requested page on. */
export interface Header extends Framed {
  type: MessageType.Header;
  sizeBytes: number;
  pageBytes: number;
  ownerNodeId: number;
  /** Where the next read header should start, when `final` is false. */
  nextVirtualPage: number;
  final: boolean;
  pages: HeaderPageEntry[];
}

export interface SenseInformation extends Framed {
  type: MessageType.SenseInformation;
  kind: SenseKind;
  epoch: number;
  poolBytes: number;
  freeBytes: number;
  residentPages: number;
  dirtyPages: number;
  pagingQueueLength: number;
  destageQueueLength: number;
}

// ---- Extensions ----

/** First frame each way on a new link: the version the sender speaks and its fresh random nonce. */
export interface Challenge extends Framed {
  type: MessageType.Challenge;
  protocolVersion: number;
  /** NONCE_BYTES random bytes. */
  nonce: Buffer;
}

/**
 * The connector's identity, after both challenges: who I am, in which cluster, epoch and protocol
 * version, and `proof`, an HMAC over both nonces and these fields under the cluster's partner key.
 */
export interface Hello extends Framed {
  type: MessageType.Hello;
  clusterId: string;
  nodeId: number;
  epoch: number;
  protocolVersion: number;
  proof: Buffer;
}

/** Hello accepted; carries the acceptor's identity and its own proof. */
export interface HelloReply extends Framed {
  type: MessageType.HelloReply;
  clusterId: string;
  nodeId: number;
  epoch: number;
  protocolVersion: number;
  proof: Buffer;
}

/**
 * Hello refused, sent only to a connector whose proof was good; carries the refuser's identity so
 * both ends log both sides, and a proof, so nobody else can make a node believe it was refused
 * (a forged stale-epoch refusal would fence it). The link then closes.
 */
export interface HelloRefusal extends Framed {
  type: MessageType.HelloRefusal;
  reason: RefusalReason;
  clusterId: string;
  nodeId: number;
  epoch: number;
  protocolVersion: number;
  proof: Buffer;
}

/** One-way liveness signal; never answered. */
export interface Heartbeat extends Framed {
  type: MessageType.Heartbeat;
  epoch: number;
}

/** The page's `version` is on the disks (written and fsynced): its mirrors may turn clean. */
/** Pages `virtualPage` … `virtualPage + pageCount - 1` are on the disks at `version` (a run destaged together). */
export interface PageClean extends Framed, PageAddress {
  type: MessageType.PageClean;
  version: number;
  pageCount: number;
}

/**
 * From the array holder: volume `allocation`, served by `fromNodeId`, is served by `toNodeId` from
 * now on. To `toNodeId`: serve it. To `fromNodeId` (when it is not the holder): release it (Fig. 9),
 * then forward. To every other node: forward to `toNodeId`.
 */
export interface VolumeHandover extends Framed {
  type: MessageType.VolumeHandover;
  allocation: string;
  fromNodeId: number;
  toNodeId: number;
  epoch: number;
}

/** From a node that now holds the shared array (after `previousNodeId`): page in and destage through it. */
export interface HolderAnnouncement extends Framed {
  type: MessageType.HolderAnnouncement;
  previousNodeId: number;
  holderNodeId: number;
  epoch: number;
}

/**
 * From `nodeId`, about to serve `allocation`: what you mirror of it for my previous process goes to
 * the disks (through the holder), synced, before you answer; Locked if you serve it yourself.
 */
export interface MirrorReclaim extends Framed {
  type: MessageType.MirrorReclaim;
  allocation: string;
  nodeId: number;
  epoch: number;
}

/** From the holder, repeated to a partner not told yet: `ownerNodeId` serves `allocation`. */
export interface OwnerNotice extends Framed {
  type: MessageType.OwnerNotice;
  allocation: string;
  ownerNodeId: number;
  epoch: number;
}

/**
 * From the array holder, which has just written the cluster record: `allocation` was made or grown
 * online. Read the record again and export what it says (the owner creates the allocation, Fig. 5,
 * before its export appears). The record, not the message, says what the volume is.
 */
export interface CatalogChange extends Framed {
  type: MessageType.CatalogChange;
  allocation: string;
  epoch: number;
}

/**
 * From the array holder, deleting `allocation` online. Without `commit`, a question: Locked if an
 * NBD client has it open here, Ok if not; nothing changes. With `commit`: the export goes (its
 * clients cut off) and, on its owner, the allocation is released (Fig. 9); still Locked if a client
 * has it open and not `force`.
 */
export interface VolumeRemoval extends Framed {
  type: MessageType.VolumeRemoval;
  allocation: string;
  epoch: number;
  commit: boolean;
  force: boolean;
}

/** What the holder tells the other nodes of the volumes it adds, grows and deletes online. */
export type CatalogMessage = CatalogChange | VolumeRemoval;

/** What the ownership loop tells other nodes; each carries the sender's epoch. */
export type OwnershipMessage = VolumeHandover | HolderAnnouncement | MirrorReclaim | OwnerNotice;

/** Brackets the copy of page tables and pages to a returning node; the counts let it check it got all. */
export interface ResyncBegin extends Framed {
  type: MessageType.ResyncBegin;
  epoch: number;
  allocationCount: number;
  pageCount: number;
}

export interface ResyncEnd extends Framed {
  type: MessageType.ResyncEnd;
  epoch: number;
  allocationCount: number;
  pageCount: number;
}

/**
 * Forwarded I/O. With an allocation's GUID: byte offsets within that volume, executed by the node that
 * owns the allocation (its lock master) through its memory manager, on behalf of a node that serves
 * the same volume on its own NBD address. With NIL_ALLOCATION: byte offsets on the shared array itself,
 * executed by the node that holds the array open (page-in and destage for nodes that do not).
 * Probe (NIL_ALLOCATION, offset 0, length 0) asks "do you hold the array open?": command complete Ok if yes, NotResident if not.
 */
export interface ForwardedIo extends Framed {
  type: MessageType.ForwardedIo;
  op: IoOp;
  allocation: string;
  offset: number; // u64
  length: number; // u64; for Read and Write at most MAX_IO_BYTES
  fua: boolean; // flag
  /**
   * Write: exactly `length` bytes, maybe in pieces (sent by reference, as a WRITE's pooled payload
   * segments are); on decode always one buffer (a view into the received bytes, or a pooled
   * segment, like write page). Other ops: empty buffer, and a non-empty one is a malformed frame.
   */
  data: Buffer | readonly Buffer[];
}

/** The bytes a forwarded read asked for. Errors are answered with command complete instead. */
export interface IoData extends Framed {
  type: MessageType.IoData;
  data: Buffer; // on decode a view into the received bytes; empty when `lent` holds the bytes
  /**
   * Not on the wire: the bytes as views lent by the volume (resident pages under read locks), sent
   * by reference instead of `data`; the link releases them once the frame is written or dropped.
   */
  lent?: { readonly pieces: readonly Buffer[]; release(): void };
}

export type Message =
  | SpaceRequest
  | AllocateMemory
  | ReleaseMemory
  | LockRequest
  | ReadHeader
  | WritePage
  | SenseRequest
  | AllocateRead
  | AllocateWrite
  | ReleasePointer
  | CommandComplete
  | SpaceStatus
  | LockStatus
  | Header
  | SenseInformation
  | Challenge
  | Hello
  | HelloReply
  | HelloRefusal
  | Heartbeat
  | PageClean
  | VolumeHandover
  | HolderAnnouncement
  | MirrorReclaim
  | OwnerNotice
  | CatalogChange
  | VolumeRemoval
  | ResyncBegin
  | ResyncEnd
  | ForwardedIo
  | IoData;
