// Proves the option-haggling rules byte for byte: every option's replies, every refusal, and the
// session each way into transmission agrees on.
import { expect } from 'chai';
import { Negotiator, parseInfoRequest, parseMetaContextRequest } from '../../../src/nbd/negotiation.js';
import { Exports } from '../../../src/nbd/server.js';
import { RamVolume } from '../../support/ram-volume.js';
import { infoRequest, metaContextRequest } from '../../support/raw-client.js';

const REPLY_MAGIC = '0003e889045565a9';
const u32 = (value: number): string => value.toString(16).padStart(8, '0');

function catalog(): Exports {
  const exports = new Exports();
  exports.add({ name: 'vol0', description: 'first', volume: new RamVolume(1 << 20), readOnly: false });
  exports.add({ name: 'ro', description: '', volume: new RamVolume(8192), readOnly: true });
  return exports;
}

/** Splits concatenated option replies into [option, type, data-hex] triples. */
function replies(buffers: Buffer[]): Array<[number, number, string]> {
  return buffers.map((buffer) => {
    expect(buffer.subarray(0, 8).toString('hex')).to.equal(REPLY_MAGIC);
    expect(buffer.readUInt32BE(16)).to.equal(buffer.length - 20);
    return [buffer.readUInt32BE(8), buffer.readUInt32BE(12), buffer.subarray(20).toString('hex')];
  });
}

describe('Negotiator', () => {
  it('answers NBD_OPT_LIST with one NBD_REP_SERVER per export, then ACK', () => {
    const step = new Negotiator(catalog(), true).handle(3, Buffer.alloc(0));
    expect(step.verdict).to.equal('continue');
    expect(replies(step.replies)).to.deep.equal([
      [3, 2, u32(4) + Buffer.from('vol0first').toString('hex')],
      [3, 2, u32(2) + Buffer.from('ro').toString('hex')],
      [3, 1, ''],
    ]);
  });

  it('refuses NBD_OPT_LIST with data as invalid', () => {
    const step = new Negotiator(catalog(), true).handle(3, Buffer.from([1]));
    expect(replies(step.replies)[0]?.slice(0, 2)).to.deep.equal([3, 0x80000003]);
  });

  it('answers NBD_OPT_GO with EXPORT and BLOCK_SIZE info, requested NAME/DESCRIPTION, then ACK', () => {
    const negotiator = new Negotiator(catalog(), true);
    const step = negotiator.handle(7, infoRequest('vol0', [1, 2, 99]));
    expect(step.verdict).to.equal('transmit');
    const flags = 0x1 | 0x4 | 0x8 | 0x400 | 0x20 | 0x40 | 0x800 | 0x100;
    expect(replies(step.replies)).to.deep.equal([
      [7, 3, '0000' + '0000000000100000' + flags.toString(16).padStart(4, '0')],
      [7, 3, '0003' + u32(1) + u32(4096) + u32(32 << 20)],
      [7, 3, '0001' + Buffer.from('vol0').toString('hex')],
      [7, 3, '0002' + Buffer.from('first').toString('hex')],
      [7, 1, ''],
    ]);
    expect(negotiator.session).to.include({ structuredReplies: false, baseAllocation: false, transmissionFlags: flags });
  });

  it('answers NBD_OPT_INFO like GO but stays in haggling', () => {
    const negotiator = new Negotiator(catalog(), true);
    expect(negotiator.handle(6, infoRequest('ro', [])).verdict).to.equal('continue');
    expect(negotiator.session).to.equal(null);
  });

  it('advertises READ_ONLY and no write commands for a read-only export', () => {
    const step = new Negotiator(catalog(), true).handle(7, infoRequest('ro', []));
    const flags = Buffer.from(replies(step.replies)[0]?.[2] ?? '', 'hex').readUInt16BE(10);
    expect(flags & 0x2).to.equal(0x2);
    expect(flags & (0x20 | 0x40 | 0x800)).to.equal(0);
  });

  it('refuses GO for an unknown export with ERR_UNKNOWN and keeps haggling', () => {
    const step = new Negotiator(catalog(), true).handle(7, infoRequest('nope', []));
    expect(step.verdict).to.equal('continue');
    expect(replies(step.replies).map(([, type]) => type)).to.deep.equal([0x80000006]);
  });

  it('refuses a GO whose lengths do not add up with ERR_INVALID', () => {
    const bad = infoRequest('vol0', [1]);
    bad.writeUInt16BE(5, 8);
    const step = new Negotiator(catalog(), true).handle(7, bad);
    expect(replies(step.replies).map(([, type]) => type)).to.deep.equal([0x80000003]);
  });

  it('selects the default export for the empty name', () => {
    const negotiator = new Negotiator(catalog(), true);
    negotiator.handle(7, infoRequest('', []));
    expect(negotiator.session?.entry.name).to.equal('vol0');
  });

  it('answers NBD_OPT_EXPORT_NAME with size and flags, padded unless NO_ZEROES', () => {
    const step = new Negotiator(catalog(), false).handle(1, Buffer.from('vol0'));
    expect(step.verdict).to.equal('transmit');
    expect(step.replies[0]?.length).to.equal(134);
    expect(step.replies[0]?.subarray(0, 8).toString('hex')).to.equal('0000000000100000');
    expect(new Negotiator(catalog(), true).handle(1, Buffer.from('vol0')).replies[0]?.length).to.equal(10);
  });

  it('closes on NBD_OPT_EXPORT_NAME for an unknown export (no error reply exists)', () => {
    const step = new Negotiator(catalog(), true).handle(1, Buffer.from('nope'));
    expect(step).to.deep.include({ verdict: 'close', replies: [] });
  });

  it('acknowledges ABORT and closes', () => {
    const step = new Negotiator(catalog(), true).handle(2, Buffer.alloc(0));
    expect(step.verdict).to.equal('close');
    expect(replies(step.replies)).to.deep.equal([[2, 1, '']]);
  });

  it('answers STARTTLS, EXTENDED_HEADERS and unknown options with ERR_UNSUP', () => {
    for (const option of [5, 11, 4, 1234]) {
      const step = new Negotiator(catalog(), true).handle(option, Buffer.alloc(0));
      expect(step.verdict).to.equal('continue');
      expect(replies(step.replies).map(([echo, type]) => [echo, type])).to.deep.equal([[option, 0x80000001]]);
    }
  });

  it('negotiates structured replies, then SEND_DF appears and base:allocation can be set', () => {
    const negotiator = new Negotiator(catalog(), true);
    expect(replies(negotiator.handle(8, Buffer.alloc(0)).replies)).to.deep.equal([[8, 1, '']]);
    const set = negotiator.handle(10, metaContextRequest('vol0', ['base:allocation', 'qemu:dirty-bitmap:x']));
    expect(replies(set.replies)).to.deep.equal([
      [10, 4, u32(1) + Buffer.from('base:allocation').toString('hex')],
      [10, 1, ''],
    ]);
    negotiator.handle(7, infoRequest('vol0', []));
    expect(negotiator.session).to.include({ structuredReplies: true, baseAllocation: true });
    expect((negotiator.session?.transmissionFlags ?? 0) & 0x80).to.equal(0x80);
  });

  it('drops the meta context when GO picks another export than SET named', () => {
    const negotiator = new Negotiator(catalog(), true);
    negotiator.handle(8, Buffer.alloc(0));
    negotiator.handle(10, metaContextRequest('vol0', ['base:allocation']));
    negotiator.handle(7, infoRequest('ro', []));
    expect(negotiator.session?.baseAllocation).to.equal(false);
  });

  it('refuses SET_META_CONTEXT before structured replies', () => {
    const step = new Negotiator(catalog(), true).handle(10, metaContextRequest('vol0', ['base:allocation']));
    expect(replies(step.replies).map(([, type]) => type)).to.deep.equal([0x80000003]);
  });

  it('lists base:allocation for no queries and for "base:", with context id 0', () => {
    const negotiator = new Negotiator(catalog(), true);
    negotiator.handle(8, Buffer.alloc(0));
    for (const queries of [[], ['base:']]) {
      const step = negotiator.handle(9, metaContextRequest('vol0', queries));
      expect(replies(step.replies)).to.deep.equal([
        [9, 4, u32(0) + Buffer.from('base:allocation').toString('hex')],
        [9, 1, ''],
      ]);
    }
  });

  it('selects nothing for SET with "base:" or unknown queries', () => {
    const negotiator = new Negotiator(catalog(), true);
    negotiator.handle(8, Buffer.alloc(0));
    expect(replies(negotiator.handle(10, metaContextRequest('vol0', ['base:', 'x:y'])).replies)).to.deep.equal([[10, 1, '']]);
    negotiator.handle(7, infoRequest('vol0', []));
    expect(negotiator.session?.baseAllocation).to.equal(false);
  });
});

describe('option payload parsers', () => {
  it('parses INFO/GO requests and rejects truncation at every length', () => {
    const good = infoRequest('vol0', [1, 3]);
    expect(parseInfoRequest(good)).to.deep.equal({ name: 'vol0', requests: [1, 3] });
    for (let length = 0; length < good.length; length++) expect(parseInfoRequest(good.subarray(0, length))).to.be.a('string');
    expect(parseInfoRequest(Buffer.concat([good, Buffer.from([0])]))).to.be.a('string');
  });

  it('parses meta context requests and rejects truncation, trailing bytes and huge names', () => {
    const good = metaContextRequest('vol0', ['base:allocation', 'x:']);
    expect(parseMetaContextRequest(good)).to.deep.equal({ name: 'vol0', queries: ['base:allocation', 'x:'] });
    for (let length = 0; length < good.length; length++) expect(parseMetaContextRequest(good.subarray(0, length))).to.be.a('string');
    expect(parseMetaContextRequest(Buffer.concat([good, Buffer.from([0])]))).to.match(/trailing/);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(5000, 0);
    expect(parseMetaContextRequest(huge)).to.match(/longer than 4096/);
  });
});
