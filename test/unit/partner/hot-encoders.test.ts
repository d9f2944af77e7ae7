// Proves the hand-written encoders of the hot partner messages (write page, command complete,
// forwarded I/O, I/O data) write exactly the bytes of the buffer-layout structs, for random
// messages, alone, in batches and in by-reference parts; and refuse what the layouts refuse.
import { expect } from 'chai';
import { encodeMessageByLayout } from '../../../src/partner/codec.js';
import { encodeBatch, encodeBatchParts, encodeMessage, IoOp, MessageType, Status, type Message } from '../../../src/partner/index.js';

let seed = 1515;
function random(below: number): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % below;
}
const u32 = (): number => random(2 ** 16) * 2 ** 16 + random(2 ** 16);
const u53 = (): number => random(2 ** 21) * 2 ** 32 + u32();
const uuid = (): string => {
  const hex = Array.from({ length: 32 }, () => random(16).toString(16)).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};
const bytes = (length: number): Buffer => Buffer.from(Array.from({ length }, () => random(256)));
const pick = <T>(values: readonly T[]): T => values[random(values.length)] as T;

const STATUSES = [Status.Ok, Status.NoSpace, Status.Locked, Status.UnknownAllocation, Status.NotResident, Status.StaleEpoch, Status.NotPartner, Status.Invalid, Status.IoError, Status.ShuttingDown];
const COMPLETABLE = [MessageType.WritePage, MessageType.LockRequest, MessageType.PageClean, MessageType.ForwardedIo, MessageType.AllocateWrite, MessageType.ResyncEnd];

function randomMessage(): Message {
  const requestId = u32();
  switch (random(4)) {
    case 0: {
      const pageBytes = pick([4096, 65536]);
      const zeroFill = random(4) === 0;
      const offset = random(pageBytes);
      const length = random(3) === 0 ? 0 : 1 + random(Math.min(3 * pageBytes, 1 << 20) - offset);
      // Data in pieces sometimes: the tail is gathered either way.
      const data = zeroFill ? Buffer.alloc(0) : random(2) === 0 ? bytes(length) : [bytes(Math.floor(length / 2)), bytes(length - Math.floor(length / 2))];
      return { type: MessageType.WritePage, requestId, allocation: uuid(), virtualPage: u53(), version: u53(), pageBytes, offset, length, dirty: random(2) === 0, zeroFill, data };
    }
    case 1:
      return { type: MessageType.CommandComplete, requestId, requestType: pick(COMPLETABLE), status: pick(STATUSES) };
    case 2: {
      const op = pick([IoOp.Probe, IoOp.Read, IoOp.Write, IoOp.Flush, IoOp.Zero, IoOp.Trim]);
      const length = op === IoOp.Read || op === IoOp.Write ? random(64 * 1024) : u53();
      return { type: MessageType.ForwardedIo, requestId, op, fua: random(2) === 0, allocation: uuid(), offset: u53(), length, data: op === IoOp.Write ? bytes(length) : Buffer.alloc(0) };
    }
    default:
      return { type: MessageType.IoData, requestId, data: bytes(random(20_000)) };
  }
}

describe('hand-written partner encoders', () => {
  it('write the bytes of the buffer-layout structs for 2000 random messages', () => {
    for (let index = 0; index < 2000; index++) {
      const message = randomMessage();
      const expected = encodeMessageByLayout(message);
      expect(encodeMessage(message).equals(expected), `message ${index}: ${JSON.stringify({ ...message, data: undefined })}`).to.equal(true);
    }
  });

  it('write the same bytes in batches and in by-reference parts', () => {
    for (let round = 0; round < 100; round++) {
      const messages = Array.from({ length: 1 + random(12) }, randomMessage);
      const expected = Buffer.concat(messages.map(encodeMessageByLayout));
      expect(encodeBatch(messages).equals(expected)).to.equal(true);
      expect(Buffer.concat(encodeBatchParts(messages)).equals(expected)).to.equal(true);
    }
  });

  it('refuse what the layouts refuse: a non-uuid, an unsafe integer, an unknown status, a missing flag', () => {
    const base = { type: MessageType.WritePage, requestId: 1, allocation: uuid(), virtualPage: 1, version: 1, pageBytes: 4096, offset: 0, length: 1, dirty: true, zeroFill: false, data: Buffer.alloc(1) } as const;
    const bad: Array<[string, Message]> = [
      ['allocation', { ...base, allocation: 'not-a-uuid' }],
      ['virtualPage', { ...base, virtualPage: 2 ** 53 }],
      ['version', { ...base, version: -1 }],
      ['dirty', { ...base, dirty: undefined as unknown as boolean }],
      ['status', { type: MessageType.CommandComplete, requestId: 1, requestType: MessageType.WritePage, status: 99 as Status }],
      ['requestType', { type: MessageType.CommandComplete, requestId: 1, requestType: MessageType.Heartbeat, status: Status.Ok }],
      ['op', { type: MessageType.ForwardedIo, requestId: 1, op: 42 as IoOp, fua: false, allocation: uuid(), offset: 0, length: 0, data: Buffer.alloc(0) }],
    ];
    for (const [field, message] of bad) {
      expect(() => encodeMessageByLayout(message), `layout, ${field}`).to.throw();
      expect(() => encodeMessage(message), `hand-written, ${field}`).to.throw(new RegExp(field));
    }
  });
});
