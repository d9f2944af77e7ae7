// Replays the byte vectors of fuzz findings (see fuzz-findings/ from `npm run fuzz`), one test per
// finding, against the same oracles that found them. A test here fails until its finding is fixed.
import { expect } from 'chai';
import { describeFinding } from './findings.js';
import type { HostileScript } from './hostile-connection.js';
import { BOUNDED_PROFILE, serverTarget } from './server-target.js';

const hex = (...pieces: string[]): Buffer => Buffer.from(pieces.join('').replace(/\s+/g, ''), 'hex');

/** Client flags FIXED_NEWSTYLE | NO_ZEROES, then NBD_OPT_GO for export "vol0" with no info requests. */
const ATTACH_VOL0 = hex('00000003', '49484156454f5054 00000007 0000000a', '00000004 766f6c30 0000');

/** A request header: magic | flags | type | handle | offset | length. */
function request(type: number, handle: number, offset: number, length: number): Buffer {
  return hex('25609513', '0000', type.toString(16).padStart(4, '0'), handle.toString(16).padStart(16, '0'), offset.toString(16).padStart(16, '0'), length.toString(16).padStart(8, '0'));
}

async function replay(scripts: HostileScript[]): Promise<string[]> {
  const target = serverTarget(BOUNDED_PROFILE);
  try {
    const result = await target.replayScripts(scripts);
    return result.problems.length === 0 ? [] : [describeFinding({ target: 'server', seed: 1, result })];
  } finally {
    await target.close();
  }
}

describe('fuzz regressions', function () {
  this.timeout(60_000);

  // Found by the server target (seed 3710892849, bounded profile): when a request follows
  // NBD_CMD_DISC in the same read, the connection is never released, not even after the client
  // closes its socket, and NbdServer.close() never resolves. Suspect: src/nbd/connection.ts
  // beginDisconnect pauses the socket and finishDisconnect only end()s it, so the peer's close is
  // never read and onSocketClosed never runs.
  it('server: a connection that sent a request after DISC is released once the client closes', async () => {
    // GO "vol0"; once attached, "DISC, handle 1" and right behind it (a second write) "READ 4 KiB at 0, handle 2".
    const disc = hex('25609513 0000 0002 0000000000000001 0000000000000000 00000000');
    const read = hex('25609513 0000 0000 0000000000000002 0000000000000000 00001000');
    const chunks = [ATTACH_VOL0, disc, read];
    const problems = await replay([{ bytes: Buffer.concat(chunks), chunks, gapsMs: [100], yieldBetweenChunks: false, stall: false }]);
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  // Found by the server target (seed 1880615366, bounded profile): requests framed from one socket
  // chunk are all started before the in-flight check can pause input, so one 16 KiB chunk of READ
  // headers puts ~590 reads in flight, past the documented 512 (fixed: the framer asks for admission per request). Was: src/nbd/connection.ts
  // track() pauses the socket, but RequestFramer.push keeps handing out the rest of the chunk.
  it('server: one chunk of 600 READ requests stays within the connection\'s requests in flight (limits.requestsInFlight)', async () => {
    const reads = Array.from({ length: 600 }, (_, index) => request(0, index + 1, 4096 * (index % 256), 4096));
    const bytes = Buffer.concat([ATTACH_VOL0, ...reads]);
    const problems = await replay([{ bytes, chunks: [bytes], yieldBetweenChunks: false, stall: false }]);
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  // Found by the server target (seed 2814145064, long profile, --no-disc): a client that asks for reads
  // and does not read the replies makes the server queue every reply in memory. Input is paused
  // only while requests are in flight, and a request stops counting once its reply is handed to
  // the socket, so 28 bytes of request buy 1 MiB of server memory without bound. Suspect:
  // src/nbd/connection.ts complete()/send() ignore socket.write()'s back-pressure (writableLength).
  it('server: replies a client does not read stay within the documented per-connection bound', async () => {
    // 4 writes of 100 READs of the whole 1 MiB export, 30 ms apart: each write stays within the
    // in-flight bounds, so only the unread replies grow (to 400 MiB, past 256 MiB + slack).
    const writes = Array.from({ length: 4 }, (_, write) => Buffer.concat(Array.from({ length: 100 }, (_, index) => request(0, write * 100 + index + 1, 0, 1 << 20))));
    const chunks = [ATTACH_VOL0, ...writes];
    const problems = await replay([{ bytes: Buffer.concat(chunks), chunks, gapsMs: chunks.map(() => 30), yieldBetweenChunks: false, stall: true }]);
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });
});
