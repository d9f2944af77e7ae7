// Proves the hand-written decoders of the hot partner messages (write page, command complete,
// forwarded I/O, I/O data) read the messages the buffer-layout structs read, for random frames
// whole and split across chunks, and refuse the damaged frames the layouts refuse, with the same
// reason.
import { expect } from 'chai';
import { decodeFrameByLayout, MessageFramer, PartnerFramingError } from '../../../src/partner/codec.js';
import { encodeMessage, FRAME_HEADER_BYTES, IoOp, MAX_IO_BYTES, MessageType, type Message } from '../../../src/partner/index.js';
import { hotMessages } from '../../support/hot-messages.js';
import { randomInt, seededRandom } from '../../support/seeded-random.js';

/** The message, or the framing reason it was refused for. */
function outcome(decode: () => Message): Message | string {
  try {
    return decode();
  } catch (error) {
    if (!(error instanceof PartnerFramingError)) throw error;
    return error.reason;
  }
}

function framed(frame: Buffer): Message {
  const messages = new MessageFramer().push(frame);
  expect(messages).to.have.length(1);
  return messages[0] as Message;
}

describe('hand-written partner decoders', () => {
  it('read the messages of the buffer-layout structs for 2000 random frames, whole and in two chunks', () => {
    const random = seededRandom(2024);
    const { message } = hotMessages(random);
    for (let index = 0; index < 2000; index++) {
      const frame = encodeMessage(message());
      const expected = decodeFrameByLayout(frame);
      expect(framed(frame), `frame ${index}`).to.deep.equal(expected);
      const cut = 1 + randomInt(random, frame.length - 1);
      const framer = new MessageFramer();
      const split = [...framer.push(frame.subarray(0, cut)), ...framer.push(frame.subarray(cut))];
      expect(split, `frame ${index} cut at ${cut}`).to.deep.equal([expected]);
    }
  });

  it('refuse the damaged frames the layouts refuse, for the same reason, and read the others alike', () => {
    const random = seededRandom(77);
    const { message } = hotMessages(random);
    let refused = 0;
    for (let index = 0; index < 3000; index++) {
      const frame = encodeMessage(message());
      // Damage only the payload's first 46 bytes (the largest fixed part): the header stays true.
      const damageable = Math.min(46, frame.length - FRAME_HEADER_BYTES);
      if (damageable === 0) continue;
      for (let hit = 0; hit < 1 + randomInt(random, 3); hit++) frame[FRAME_HEADER_BYTES + randomInt(random, damageable)] = randomInt(random, 256);
      const expected = outcome(() => decodeFrameByLayout(frame));
      expect(outcome(() => framed(frame)), `frame ${index}: ${frame.subarray(0, 62).toString('hex')}`).to.deep.equal(expected);
      if (typeof expected === 'string') refused++;
    }
    // The damage must reach the checks, or this proves nothing about them.
    expect(refused).to.be.greaterThan(300);
  });

  it('read allocations right when several alternate on one link, the nil one included', () => {
    const random = seededRandom(9);
    const { uuid } = hotMessages(random);
    // Ids that differ in one byte only, in each of the four words, besides random ones.
    const near = ['00', '08', '14', '18', '1e'].map((at) => {
      const hex = '0123456789abcdef0123456789abcdef'.split('');
      hex[Number.parseInt(at, 16)] = 'f';
      const text = hex.join('');
      return `${text.slice(0, 8)}-${text.slice(8, 12)}-${text.slice(12, 16)}-${text.slice(16, 20)}-${text.slice(20)}`;
    });
    const allocations = [...near, ...Array.from({ length: 40 }, uuid), '00000000-0000-0000-0000-000000000000', '01234567-89ab-cdef-0123-456789abcdef'];
    const framer = new MessageFramer();
    for (let index = 0; index < 2000; index++) {
      const allocation = allocations[randomInt(random, index < 1000 ? near.length : allocations.length)] as string;
      const io: Message = { type: MessageType.ForwardedIo, requestId: index + 1, op: IoOp.Flush, fua: false, allocation, offset: 0, length: 0, data: Buffer.alloc(0) };
      const [decoded] = framer.push(encodeMessage(io));
      expect((decoded as { allocation: string }).allocation).to.equal(allocation);
    }
  });

  it('refuse io data longer than one forwarded I/O may be', () => {
    const frame = encodeMessage({ type: MessageType.IoData, requestId: 7, data: Buffer.alloc(MAX_IO_BYTES) });
    expect(framed(frame).type).to.equal(MessageType.IoData);
    const longer = Buffer.concat([frame, Buffer.alloc(1)]);
    longer.writeUInt32BE(MAX_IO_BYTES + 1, 12);
    expect(outcome(() => decodeFrameByLayout(longer))).to.equal('bad-length');
    expect(() => framed(longer)).to.throw(PartnerFramingError, /io data \(request 7\): .* at most/);
  });

  it('byte vectors: a forwarded read, and refusals of an unknown op, a flag of 2 and an offset past 2^53', () => {
    const frame = Buffer.from(
      '4654564d' + '0005' + '0107' + '0000002a' + '00000022' + // magic "FTVM", version 5, forwarded io, request 42, 34 payload bytes
        '01' + '00' + '0123456789abcdef0123456789abcdef' + '0000000000001000' + '0000000000002000',
      'hex',
    );
    expect(framed(frame)).to.deep.equal({ type: MessageType.ForwardedIo, requestId: 42, op: IoOp.Read, fua: false, allocation: '01234567-89ab-cdef-0123-456789abcdef', offset: 4096, length: 8192, data: Buffer.alloc(0) });
    const damaged = (at: number, value: number): Buffer => {
      const copy = Buffer.from(frame);
      copy[FRAME_HEADER_BYTES + at] = value;
      return copy;
    };
    expect(() => framed(damaged(0, 9))).to.throw(PartnerFramingError, /forwarded io \(request 42\): op 9 is not a known value/);
    expect(() => framed(damaged(1, 2))).to.throw(PartnerFramingError, /fua 2 is neither 0 nor 1/);
    expect(() => framed(damaged(19, 0x20))).to.throw(PartnerFramingError, /offset exceeds 2\^53 - 1/);
  });
});
