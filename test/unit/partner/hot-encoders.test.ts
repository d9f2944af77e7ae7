// Proves the hand-written encoders of the hot partner messages (write page, command complete,
// forwarded I/O, I/O data) write exactly the bytes of the buffer-layout structs, for random
// messages, alone, in batches and in by-reference parts; and refuse what the layouts refuse.
import { expect } from 'chai';
import { encodeMessageByLayout } from '../../../src/partner/codec.js';
import { encodeBatch, encodeBatchParts, encodeMessage, IoOp, MessageType, Status, type Message } from '../../../src/partner/index.js';
import { hotMessages } from '../../support/hot-messages.js';
import { randomInt, seededRandom } from '../../support/seeded-random.js';

const generator = seededRandom(1515);
const { message: randomMessage, uuid } = hotMessages(generator);
const random = (below: number): number => randomInt(generator, below);

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
