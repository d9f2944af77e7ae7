// NBD wire constants (NetworkBlockDevice/nbd doc/proto.md) and the protocol limits this server
// enforces; every limit is checked before a buffer of that size is allocated. What a client may
// hold in flight, how many connections and for how long are configurable (server.ts, ServerLimits).

import { MAX_REQUEST_BYTES, PREFERRED_REQUEST_BYTES } from '../core/index.js';

export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server → client) and client flags (client → server). */
export const enum HandshakeFlag {
  FixedNewstyle = 1 << 0,
  NoZeroes = 1 << 1,
}
export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes;
export const KNOWN_CLIENT_FLAGS = HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes;

export const enum Option {
  ExportName = 1,
  Abort = 2,
  List = 3,
  PeekExport = 4,
  StartTls = 5,
  Info = 6,
  Go = 7,
  StructuredReply = 8,
  ListMetaContext = 9,
  SetMetaContext = 10,
  ExtendedHeaders = 11,
}

export const enum OptionReply {
  Ack = 1,
  Server = 2,
  Info = 3,
  MetaContext = 4,
}

/** Option reply error types have bit 31 set. */
export const enum OptionError {
  Unsupported = 0x80000001,
  Policy = 0x80000002,
  Invalid = 0x80000003,
  Platform = 0x80000004,
  TlsRequired = 0x80000005,
  Unknown = 0x80000006,
  Shutdown = 0x80000007,
  BlockSizeRequired = 0x80000008,
  TooBig = 0x80000009,
  ExtendedHeadersRequired = 0x8000000a,
}

export const enum InfoType {
  Export = 0,
  Name = 1,
  Description = 2,
  BlockSize = 3,
}

/** Transmission flags, sent with the export size. */
export const enum TransmissionFlag {
  HasFlags = 1 << 0,
  ReadOnly = 1 << 1,
  SendFlush = 1 << 2,
  SendFua = 1 << 3,
  Rotational = 1 << 4,
  SendTrim = 1 << 5,
  SendWriteZeroes = 1 << 6,
  SendDf = 1 << 7,
  CanMultiConn = 1 << 8,
  SendResize = 1 << 9,
  SendCache = 1 << 10,
  SendFastZero = 1 << 11,
}

export const enum Command {
  Read = 0,
  Write = 1,
  Disc = 2,
  Flush = 3,
  Trim = 4,
  Cache = 5,
  WriteZeroes = 6,
  BlockStatus = 7,
}

export const enum CommandFlag {
  Fua = 1 << 0,
  NoHole = 1 << 1,
  Df = 1 << 2,
  ReqOne = 1 << 3,
  FastZero = 1 << 4,
}

export const enum ReplyType {
  None = 0,
  OffsetData = 1,
  OffsetHole = 2,
  BlockStatus = 5,
  Error = 32769, // (1 << 15) + 1
  ErrorOffset = 32770,
}
export const REPLY_FLAG_DONE = 1;

/** Errno values on the wire: Linux numbering, independent of the host. */
export const enum NbdErrno {
  Ok = 0,
  Eperm = 1,
  Eio = 5,
  Enomem = 12,
  Einval = 22,
  Enospc = 28,
  Eoverflow = 75,
  Enotsup = 95,
  Eshutdown = 108,
}

export const BASE_ALLOCATION = 'base:allocation';
/** The one meta context this server offers; its id is fixed so a reply never needs a lookup. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;
export const enum AllocationFlag {
  Hole = 1 << 0,
  Zero = 1 << 1,
}

// ---- Limits ----

/** Largest READ/WRITE payload accepted; advertised as the maximum block size. */
export const MAX_PAYLOAD_BYTES = MAX_REQUEST_BYTES;
/** Largest option payload read during haggling: names are at most 4096 bytes, plus a few queries. */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Spec: strings (export names, contexts) must be no longer than 4096 bytes. */
export const MAX_STRING_BYTES = 4096;
/** Options a client may send before choosing an export; stops a client that haggles forever. */
export const MAX_OPTIONS_PER_HANDSHAKE = 256;
/** Advertised block size constraints: byte-granular, 4 KiB preferred. */
export const MIN_BLOCK_BYTES = 1;
export const PREFERRED_BLOCK_BYTES = PREFERRED_REQUEST_BYTES;

/** Header sizes on the wire. */
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
