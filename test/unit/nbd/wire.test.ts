// Proves the NBD codecs produce and accept the exact bytes of the spec (doc/proto.md), and that the
// hand-written hot-path codecs agree with the buffer-layout declarations.
import { expect } from 'chai';
import {
  decodeRequestHeader,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
  encodeServerGreeting,
  requestHeaderLayout,
  simpleReplyHeaderLayout,
  structuredReplyHeaderLayout,
  writeOffset64,
  writeSimpleReplyHeader,
  writeStructuredReplyHeader,
} from '../../../src/nbd/wire.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

describe('nbd wire codecs', () => {
  it('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', () => {
    expect(encodeServerGreeting().toString('hex')).to.equal('4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('decodes a request header (READ, handle 0x0102030405060708, offset 2^40+5, 4096 bytes)', () => {
    const bytes = hex('25609513 0001 0000 0102030405060708 0000010000000005 00001000');
    const request = decodeRequestHeader(bytes, 0);
    expect(request).to.include({ flags: 1, type: 0, handleHigh: 0x01020304, handleLow: 0x05060708, offset: 2 ** 40 + 5, length: 4096 });
    const viaLayout = requestHeaderLayout.decode(bytes);
    expect(viaLayout.offset).to.equal(request.offset);
    expect(viaLayout.handle.toString('hex')).to.equal('0102030405060708');
  });

  it('decodes a header at a non-zero position of a larger buffer', () => {
    const bytes = Buffer.concat([hex('ffff'), hex('25609513 0000 0001 ffffffffffffffff 0000000000000200 00000200')]);
    const request = decodeRequestHeader(bytes, 2);
    expect(request).to.include({ type: 1, handleHigh: 0xffffffff, handleLow: 0xffffffff, offset: 512, length: 512 });
  });

  it('writes a simple reply header that echoes the handle', () => {
    const request = decodeRequestHeader(hex('25609513 0000 0000 a1a2a3a4b1b2b3b4 0000000000000000 00000001'), 0);
    const out = Buffer.alloc(16);
    writeSimpleReplyHeader(out, 0, 22, request);
    expect(out.toString('hex')).to.equal('67446698' + '00000016' + 'a1a2a3a4b1b2b3b4');
    expect(simpleReplyHeaderLayout.decode(out)).to.deep.include({ magic: 0x67446698, error: 22 });
  });

  it('writes a structured reply chunk header (OFFSET_DATA, DONE) and a 64-bit offset', () => {
    const request = decodeRequestHeader(hex('25609513 0000 0000 0000000000000007 0000000000000000 00000001'), 0);
    const out = Buffer.alloc(28);
    writeStructuredReplyHeader(out, 0, 1, 1, request, 8 + 4096);
    writeOffset64(out, 20, 2 ** 45 + 3);
    expect(out.toString('hex')).to.equal('668e33ef' + '0001' + '0001' + '0000000000000007' + '00001008' + '0000200000000003');
    const decoded = structuredReplyHeaderLayout.decode(out);
    expect(decoded).to.deep.include({ magic: 0x668e33ef, flags: 1, type: 1, length: 4104 });
  });

  it('encodes option replies with the reply magic, echoed option, type and length', () => {
    expect(encodeOptionReply(8, 1).toString('hex')).to.equal('0003e889045565a9' + '00000008' + '00000001' + '00000000');
    expect(encodeOptionError(5, 0x80000001, 'no').toString('hex')).to.equal(
      '0003e889045565a9' + '00000005' + '80000001' + '00000002' + '6e6f',
    );
  });

  it('encodes NBD_INFO_EXPORT, NAME, BLOCK_SIZE payloads', () => {
    expect(encodeInfoExport(1 << 30, 0x0d6d).toString('hex')).to.equal('0000' + '0000000040000000' + '0d6d');
    expect(encodeInfoString(1, 'vol0').toString('hex')).to.equal('0001' + '766f6c30');
    expect(encodeInfoBlockSize(1, 4096, 32 << 20).toString('hex')).to.equal('0003' + '00000001' + '00001000' + '02000000');
  });

  it('encodes NBD_REP_SERVER and NBD_REP_META_CONTEXT payloads', () => {
    expect(encodeServerEntry('a', 'd').toString('hex')).to.equal('00000001' + '61' + '64');
    expect(encodeMetaContext(1, 'base:allocation').toString('hex')).to.equal('00000001' + Buffer.from('base:allocation').toString('hex'));
  });

  it('encodes the EXPORT_NAME reply with and without the 124 zero bytes', () => {
    expect(encodeExportNameReply(4096, 3, true).toString('hex')).to.equal('0000000000001000' + '0003');
    const padded = encodeExportNameReply(4096, 3, false);
    expect(padded.length).to.equal(134);
    expect(padded.subarray(10).every((byte) => byte === 0)).to.equal(true);
  });
});
