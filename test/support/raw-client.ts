// A deliberately simple NBD client that speaks raw bytes, so tests can send exactly what a real
// client would never send (bad magic, pipelined garbage, oversized lengths) and read every reply.
import net from 'node:net';

export interface OptionReplyMessage {
  option: number;
  type: number;
  data: Buffer;
}

export interface ReplyMessage {
  handle: bigint;
  error: number;
  /** Simple reply: the read data. Structured: the chunk payload. */
  data: Buffer;
  structured: boolean;
  chunkType?: number;
  flags?: number;
}

export class RawClient {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
    socket.on('error', () => undefined);
  }

  /** `localAddress`: the client's own address (another loopback address is another client). */
  static async connect(target: { port: number; host?: string; localAddress?: string } | { path: string }): Promise<RawClient> {
    const socket = 'path' in target ? net.connect(target.path) : net.connect({ port: target.port, host: target.host ?? '127.0.0.1', ...(target.localAddress ? { localAddress: target.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new RawClient(socket);
  }

  /** Reads the greeting and sends client flags (FIXED_NEWSTYLE|NO_ZEROES by default). */
  async greet(clientFlags = 3): Promise<Buffer> {
    const greeting = await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.socket.write(flags);
    return greeting;
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(0x49484156454f5054n, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReplyMessage> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== 0x3e889045565a9n) throw new Error(`bad option reply magic ${header.toString('hex')}`);
    const data = await this.read(header.readUInt32BE(16));
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** Sends an option and collects replies up to and including the ACK or the first error. */
  async option(option: number, data?: Buffer): Promise<OptionReplyMessage[]> {
    this.sendOption(option, data);
    const replies: OptionReplyMessage[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === 1 || reply.type >= 0x80000000) return replies;
    }
  }

  /** Full handshake to transmission with NBD_OPT_GO; optionally structured replies and base:allocation. */
  async attach(name: string, options: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<OptionReplyMessage[]> {
    await this.greet();
    if (options.structured) await this.option(8);
    if (options.baseAllocation) await this.option(10, metaContextRequest(name, ['base:allocation']));
    const replies = await this.option(7, infoRequest(name, []));
    const last = replies[replies.length - 1];
    if (!last || last.type !== 1) throw new Error(`GO failed: ${JSON.stringify(replies.map((reply) => reply.type))}`);
    return replies;
  }

  request(type: number, options: { handle?: bigint; offset?: number; length?: number; flags?: number; payload?: Buffer; magic?: number } = {}): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(options.magic ?? 0x25609513, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(options.handle ?? 1n, 8);
    header.writeBigUInt64BE(BigInt(options.offset ?? 0), 16);
    header.writeUInt32BE(options.length ?? options.payload?.length ?? 0, 24);
    this.socket.write(options.payload ? Buffer.concat([header, options.payload]) : header);
  }

  /** Reads one reply; `readLength` says how many data bytes follow a successful simple READ reply. */
  async readReply(readLength = 0): Promise<ReplyMessage> {
    const magic = (await this.peek(4)).readUInt32BE(0);
    if (magic === 0x67446698) {
      const header = await this.read(16);
      const error = header.readUInt32BE(4);
      const data = error === 0 && readLength > 0 ? await this.read(readLength) : Buffer.alloc(0);
      return { handle: header.readBigUInt64BE(8), error, data, structured: false };
    }
    if (magic === 0x668e33ef) {
      const header = await this.read(20);
      const data = await this.read(header.readUInt32BE(16));
      const chunkType = header.readUInt16BE(6);
      const error = chunkType >= 0x8000 ? data.readUInt32BE(0) : 0;
      return { handle: header.readBigUInt64BE(8), error, data, structured: true, chunkType, flags: header.readUInt16BE(4) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  async read(length: number): Promise<Buffer> {
    await this.waitFor(length);
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return out;
  }

  /** Resolves when the server closed the connection, with whatever bytes were left unread. */
  async waitClosed(): Promise<Buffer> {
    await this.closed;
    return this.buffered;
  }

  close(): void {
    this.socket.destroy();
  }

  private async peek(length: number): Promise<Buffer> {
    await this.waitFor(length);
    return this.buffered.subarray(0, length);
  }

  private async waitFor(length: number): Promise<void> {
    while (this.buffered.length < length) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length} of ${length} bytes`);
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

export function infoRequest(name: string, requests: number[]): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.alloc(4 + nameBytes.length + 2 + requests.length * 2);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.writeUInt16BE(requests.length, 4 + nameBytes.length);
  requests.forEach((request, i) => out.writeUInt16BE(request, 6 + nameBytes.length + i * 2));
  return out;
}

export function metaContextRequest(name: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
  (parts[0] as Buffer).writeUInt32BE(Buffer.byteLength(name));
  (parts[2] as Buffer).writeUInt32BE(queries.length);
  for (const query of queries) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(Buffer.byteLength(query));
    parts.push(length, Buffer.from(query));
  }
  return Buffer.concat(parts);
}
