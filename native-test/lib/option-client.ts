// A raw NBD option-haggling client that can take NBD_OPT_STARTTLS's ACK and go on over TLS (Node's
// own TLS client), so tests can check the exact reply types before and after the upgrade.
import net from 'node:net';
import tls from 'node:tls';

export const NBD_OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
} as const;

const OPTION_MAGIC = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** PSK credentials for Node's TLS client: the identity and its key as psktool wrote it (hex). */
export interface PskCredentials {
  identity: string;
  hexKey: string;
}

export class OptionClient {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended = false;
  private socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.attach(socket);
  }

  static async connect(host: string, port: number): Promise<OptionClient> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new OptionClient(socket);
  }

  get secure(): boolean {
    return this.socket instanceof tls.TLSSocket;
  }

  /** Reads the 18-byte greeting and answers with client flags FIXED_NEWSTYLE|NO_ZEROES. */
  async greet(clientFlags = 3): Promise<number> {
    const greeting = await this.read(18);
    if (greeting.subarray(0, 8).toString('latin1') !== 'NBDMAGIC') throw new Error(`bad greeting ${greeting.toString('hex')}`);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.socket.write(flags);
    return greeting.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(OPTION_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error(`bad option reply magic ${header.toString('hex')}`);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(header.readUInt32BE(16)) };
  }

  /** Sends an option and collects its replies up to and including the ACK or the first error. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === NBD_REP.ACK || reply.type >= 0x80000000) return replies;
    }
  }

  /**
   * NBD_OPT_STARTTLS; on ACK the same TCP connection is handed to Node's TLS client and every later
   * byte goes over TLS. Resolves with the reply; rejects if the handshake fails.
   */
  async startTls(credentials: { psk: PskCredentials } | { ca: string; cert?: string; key?: string; servername?: string }): Promise<OptionReply> {
    const [reply] = await this.option(NBD_OPT.STARTTLS);
    if (!reply || reply.type !== NBD_REP.ACK) return reply as OptionReply;
    if (this.buffered.length > 0) throw new Error('server sent bytes after the STARTTLS ACK, before the TLS handshake');
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    const options: tls.ConnectionOptions =
      'psk' in credentials
        ? {
            socket: raw,
            pskCallback: () => ({ identity: credentials.psk.identity, psk: Buffer.from(credentials.psk.hexKey, 'hex') }),
            // No certificate is involved with PSK; Node still runs this check on the (absent) peer cert.
            checkServerIdentity: () => undefined,
          }
        : { socket: raw, ca: credentials.ca, cert: credentials.cert, key: credentials.key, servername: credentials.servername ?? 'localhost' };
    const secure = tls.connect(options);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return reply;
  }

  /** An NBD_CMD_READ of `length` bytes at `offset`; resolves with the reply's magic and the raw bytes after it. */
  async readCommand(offset: number, length: number, handle = 1n): Promise<{ magic: number; error: number; data: Buffer }> {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(0, 4);
    header.writeUInt16BE(0, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.socket.write(header);
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12);
      const error = rest.readUInt32BE(0);
      return { magic, error, data: error === 0 ? await this.read(length) : Buffer.alloc(0) };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const rest = await this.read(16);
      return { magic, error: 0, data: await this.read(rest.readUInt32BE(12)) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Resolves with whatever was left unread once the server closed the connection (or after `timeoutMs`: null). */
  async waitClosed(timeoutMs = 5000): Promise<Buffer | null> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.buffered;
  }

  close(): void {
    this.socket.destroy();
  }

  async read(length: number): Promise<Buffer> {
    while (this.buffered.length < length) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length} of ${length} bytes`);
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return out;
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO payload: the export name and no information requests. */
export function goPayload(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + bytes.length + 2);
  data.writeUInt32BE(bytes.length, 0);
  bytes.copy(data, 4);
  data.writeUInt16BE(0, 4 + bytes.length);
  return data;
}

/** Export names from the NBD_REP_SERVER replies of an NBD_OPT_LIST. */
export function listedNames(replies: OptionReply[]): string[] {
  return replies.filter((reply) => reply.type === NBD_REP.SERVER).map((reply) => reply.data.subarray(4, 4 + reply.data.readUInt32BE(0)).toString('utf8'));
}
