// Option haggling (fixed newstyle), as a pure state machine: one option in, replies and a verdict out.
//
// The connection owns the socket and the option framing; this class owns the rules. The verdict
// 'starttls' tells the connection to wrap its socket in TLS (after sending the acknowledgement) and
// feed the options that follow to a new negotiator that knows the TLS identity: the spec says
// nothing agreed before TLS (structured replies, meta contexts) carries over.
//
// TLS modes, as nbdkit's --tls: off (STARTTLS unsupported), on (clients choose), require (before
// TLS every option but STARTTLS and ABORT is refused with NBD_REP_ERR_TLS_REQD, and the old-style
// EXPORT_NAME, which has no error reply, ends the connection). An export limited to TLS identities
// is invisible to every other client: absent from LIST, unknown to INFO, GO and EXPORT_NAME.
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_CONTEXT_ID,
  InfoType,
  MAX_PAYLOAD_BYTES,
  MAX_STRING_BYTES,
  MIN_BLOCK_BYTES,
  Option,
  OptionError,
  OptionReply,
  PREFERRED_BLOCK_BYTES,
  TransmissionFlag,
} from './constants.js';
import {
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
} from './wire.js';
import type { Volume } from '../volume/index.js';

export interface ExportEntry {
  readonly name: string;
  readonly description: string;
  readonly volume: Volume;
  readonly readOnly: boolean;
  /** Only clients that proved one of these TLS identities see the export; undefined: every client. */
  readonly tlsIdentities?: readonly string[];
}

/** Where TLS stands for one connection's negotiation. */
export interface TlsState {
  mode: 'off' | 'on' | 'require';
  /** The options are arriving inside TLS. */
  active: boolean;
  /** The identity the client proved in the TLS handshake (PSK identity, certificate CN), if any. */
  identity: string | null;
}

const NO_TLS: TlsState = { mode: 'off', active: false, identity: null };

export interface ExportCatalog {
  /** The empty name selects the default export, when there is one. */
  find(name: string): ExportEntry | undefined;
  all(): readonly ExportEntry[];
}

/** What the connection does after sending the replies. */
export type Verdict = 'continue' | 'close' | 'transmit' | 'starttls';

export interface Step {
  replies: Buffer[];
  verdict: Verdict;
  /** Why a 'close' happened, for the log. */
  reason?: string;
  /** The client asked to end (NBD_OPT_ABORT): routine, not a problem. */
  clientInitiated?: boolean;
}

/** The agreement the transmission phase runs under. */
export interface Session {
  entry: ExportEntry;
  transmissionFlags: number;
  structuredReplies: boolean;
  /** base:allocation was selected with SET_META_CONTEXT for this export. */
  baseAllocation: boolean;
}

export class Negotiator {
  private structuredReplies = false;
  /** The export SET_META_CONTEXT was called for; a later GO to another export drops the selection. */
  private metaContextExport: string | null = null;
  private baseAllocationSelected = false;
  private chosen: Session | null = null;

  constructor(
    private readonly catalog: ExportCatalog,
    private readonly noZeroes: boolean,
    private readonly tls: TlsState = NO_TLS,
  ) {}

  /** Set once the verdict was 'transmit'. */
  get session(): Session | null {
    return this.chosen;
  }

  handle(option: number, data: Buffer): Step {
    if (this.tls.mode === 'require' && !this.tls.active && option !== Option.StartTls && option !== Option.Abort) {
      // EXPORT_NAME has no error reply: hanging up is the only refusal it allows.
      if (option === Option.ExportName) return { replies: [], verdict: 'close', reason: 'EXPORT_NAME before STARTTLS (TLS is required)' };
      return refuse(option, OptionError.TlsRequired, 'TLS is required: send NBD_OPT_STARTTLS first');
    }
    switch (option) {
      case Option.ExportName:
        return this.exportName(data);
      case Option.Abort:
        return { replies: [encodeOptionReply(option, OptionReply.Ack)], verdict: 'close', reason: 'client aborted', clientInitiated: true };
      case Option.List:
        return this.list(data);
      case Option.Info:
      case Option.Go:
        return this.infoOrGo(option, data);
      case Option.StructuredReply:
        return this.structuredReply(data);
      case Option.ListMetaContext:
      case Option.SetMetaContext:
        return this.metaContext(option, data);
      case Option.StartTls:
        return this.startTls(data);
      default:
        return refuse(option, OptionError.Unsupported, `option ${option} is not supported`);
    }
  }

  private startTls(data: Buffer): Step {
    if (this.tls.mode === 'off') return refuse(Option.StartTls, OptionError.Unsupported, 'TLS is not enabled on this server');
    if (this.tls.active) return refuse(Option.StartTls, OptionError.Invalid, 'TLS is already in use');
    if (data.length !== 0) return refuse(Option.StartTls, OptionError.Invalid, 'NBD_OPT_STARTTLS takes no data');
    return { replies: [encodeOptionReply(Option.StartTls, OptionReply.Ack)], verdict: 'starttls' };
  }

  /** The export of that name, if this client may know of it. */
  private find(name: string): ExportEntry | undefined {
    const entry = this.catalog.find(name);
    return entry && this.visible(entry) ? entry : undefined;
  }

  private visible(entry: ExportEntry): boolean {
    if (entry.tlsIdentities === undefined) return true;
    return this.tls.active && this.tls.identity !== null && entry.tlsIdentities.includes(this.tls.identity);
  }

  private exportName(data: Buffer): Step {
    const name = data.toString('utf8');
    const entry = data.length <= MAX_STRING_BYTES ? this.find(name) : undefined;
    // The old-style option has no error reply: the only way to refuse is to hang up.
    if (!entry) return { replies: [], verdict: 'close', reason: `unknown export '${name.slice(0, 64)}'` };
    const session = this.choose(entry);
    return {
      replies: [encodeExportNameReply(entry.volume.sizeBytes, session.transmissionFlags, this.noZeroes)],
      verdict: 'transmit',
    };
  }

  private list(data: Buffer): Step {
    if (data.length !== 0) return refuse(Option.List, OptionError.Invalid, 'NBD_OPT_LIST takes no data');
    const replies = this.catalog
      .all()
      .filter((entry) => this.visible(entry))
      .map((entry) => encodeOptionReply(Option.List, OptionReply.Server, encodeServerEntry(entry.name, entry.description)));
    replies.push(encodeOptionReply(Option.List, OptionReply.Ack));
    return { replies, verdict: 'continue' };
  }

  private infoOrGo(option: Option.Info | Option.Go, data: Buffer): Step {
    const parsed = parseInfoRequest(data);
    if (typeof parsed === 'string') return refuse(option, OptionError.Invalid, parsed);
    const entry = this.find(parsed.name);
    if (!entry) return refuse(option, OptionError.Unknown, `no export named '${parsed.name}'`);
    const flags = transmissionFlagsFor(entry, this.structuredReplies);
    // Block size goes out even unrequested (the spec allows it; qemu does the same): our limits are
    // the defaults, so a client that ignores it loses nothing, and nbdinfo can show them.
    const replies = [
      encodeOptionReply(option, OptionReply.Info, encodeInfoExport(entry.volume.sizeBytes, flags)),
      encodeOptionReply(option, OptionReply.Info, encodeInfoBlockSize(MIN_BLOCK_BYTES, PREFERRED_BLOCK_BYTES, MAX_PAYLOAD_BYTES)),
    ];
    for (const request of new Set(parsed.requests)) {
      const info = this.infoPayload(request, entry);
      if (info) replies.push(encodeOptionReply(option, OptionReply.Info, info));
    }
    replies.push(encodeOptionReply(option, OptionReply.Ack));
    if (option === Option.Info) return { replies, verdict: 'continue' };
    this.choose(entry);
    return { replies, verdict: 'transmit' };
  }

  private infoPayload(request: number, entry: ExportEntry): Buffer | null {
    switch (request) {
      case InfoType.Name:
        return encodeInfoString(InfoType.Name, entry.name);
      case InfoType.Description:
        return entry.description ? encodeInfoString(InfoType.Description, entry.description) : null;
      default: // Export and block size went out already; unknown requests are ignored, as the spec asks.
        return null;
    }
  }

  private structuredReply(data: Buffer): Step {
    if (data.length !== 0) return refuse(Option.StructuredReply, OptionError.Invalid, 'NBD_OPT_STRUCTURED_REPLY takes no data');
    this.structuredReplies = true;
    return { replies: [encodeOptionReply(Option.StructuredReply, OptionReply.Ack)], verdict: 'continue' };
  }

  private metaContext(option: Option.ListMetaContext | Option.SetMetaContext, data: Buffer): Step {
    if (!this.structuredReplies) {
      return refuse(option, OptionError.Invalid, 'meta contexts need NBD_OPT_STRUCTURED_REPLY first');
    }
    const parsed = parseMetaContextRequest(data);
    if (typeof parsed === 'string') return refuse(option, OptionError.Invalid, parsed);
    if (!this.find(parsed.name)) return refuse(option, OptionError.Unknown, `no export named '${parsed.name}'`);
    const listing = option === Option.ListMetaContext;
    const matches = parsed.queries.some((query) => matchesBaseAllocation(query, listing)) || (listing && parsed.queries.length === 0);
    if (!listing) {
      this.metaContextExport = parsed.name;
      this.baseAllocationSelected = matches;
    }
    const replies = matches
      ? [encodeOptionReply(option, OptionReply.MetaContext, encodeMetaContext(listing ? 0 : BASE_ALLOCATION_CONTEXT_ID, BASE_ALLOCATION))]
      : [];
    replies.push(encodeOptionReply(option, OptionReply.Ack));
    return { replies, verdict: 'continue' };
  }

  private choose(entry: ExportEntry): Session {
    const sameExport = this.metaContextExport !== null && this.find(this.metaContextExport) === entry;
    this.chosen = {
      entry,
      transmissionFlags: transmissionFlagsFor(entry, this.structuredReplies),
      structuredReplies: this.structuredReplies,
      baseAllocation: this.structuredReplies && sameExport && this.baseAllocationSelected,
    };
    return this.chosen;
  }
}

export function transmissionFlagsFor(entry: ExportEntry, structuredReplies: boolean): number {
  let flags =
    TransmissionFlag.HasFlags |
    TransmissionFlag.SendFlush |
    TransmissionFlag.SendFua |
    TransmissionFlag.SendCache;
  if (entry.readOnly) flags |= TransmissionFlag.ReadOnly;
  else flags |= TransmissionFlag.SendTrim | TransmissionFlag.SendWriteZeroes | TransmissionFlag.SendFastZero;
  if (structuredReplies) flags |= TransmissionFlag.SendDf;
  if (entry.volume.flushCoversAllConnections) flags |= TransmissionFlag.CanMultiConn;
  return flags;
}

function refuse(option: number, error: OptionError, message: string): Step {
  return { replies: [encodeOptionError(option, error, message)], verdict: 'continue' };
}

/** LIST answers namespace queries ("base:") too; SET selects only exact names. */
function matchesBaseAllocation(query: string, listing: boolean): boolean {
  return query === BASE_ALLOCATION || (listing && query === 'base:');
}

/** Reads a length-prefixed string; returns the string and the next offset, or an error text. */
function readString(data: Buffer, at: number, what: string): { value: string; next: number } | string {
  if (at + 4 > data.length) return `${what}: length field truncated`;
  const length = data.readUInt32BE(at);
  if (length > MAX_STRING_BYTES) return `${what}: ${length} bytes is longer than ${MAX_STRING_BYTES}`;
  if (at + 4 + length > data.length) return `${what}: ${length} bytes declared, ${data.length - at - 4} present`;
  return { value: data.toString('utf8', at + 4, at + 4 + length), next: at + 4 + length };
}

/** NBD_OPT_INFO / NBD_OPT_GO payload: name, then a count of 16-bit information requests. */
export function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | string {
  const name = readString(data, 0, 'export name');
  if (typeof name === 'string') return name;
  let at = name.next;
  if (at + 2 > data.length) return 'information request count truncated';
  const count = data.readUInt16BE(at);
  at += 2;
  if (at + count * 2 !== data.length) return `${count} information requests declared, ${data.length - at} bytes present`;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(at + i * 2));
  return { name: name.value, requests };
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT payload: export name, query count, queries. */
export function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } | string {
  const name = readString(data, 0, 'export name');
  if (typeof name === 'string') return name;
  let at = name.next;
  if (at + 4 > data.length) return 'query count truncated';
  const count = data.readUInt32BE(at);
  at += 4;
  if (count * 4 > data.length - at) return `${count} queries declared, ${data.length - at} bytes present`;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const query = readString(data, at, `query ${i}`);
    if (typeof query === 'string') return query;
    queries.push(query.value);
    at = query.next;
  }
  if (at !== data.length) return `${data.length - at} trailing bytes after the queries`;
  return { name: name.value, queries };
}
