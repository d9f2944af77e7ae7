// Proves the handshake framer reads client flags and options across any split, and refuses
// unknown client flags, bad magic and oversized options before buffering them.
import { expect } from 'chai';
import { OptionFramer } from '../../../src/nbd/option-framer.js';
import { FramingError } from '../../../src/nbd/request-framer.js';

function option(code: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(0x49484156454f5054n, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

const stream = Buffer.concat([Buffer.from([0, 0, 0, 3]), option(8, Buffer.alloc(0)), option(7, Buffer.from('abcdef')), Buffer.from([0x25, 0x60])]);

describe('OptionFramer', () => {
  it('reads flags and options at every split point, keeping the transmission bytes after them', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new OptionFramer();
      const options = [...framer.push(stream.subarray(0, cut)), ...framer.push(stream.subarray(cut))];
      expect(framer.flags, `cut ${cut}`).to.equal(3);
      expect(options.map((entry) => [entry.option, entry.data.toString()]), `cut ${cut}`).to.deep.equal([[8, ''], [7, 'abcdef']]);
      expect(framer.takeRemainder().toString('hex')).to.equal('2560');
    }
  });

  it('refuses unknown client flags before looking at options', () => {
    const framer = new OptionFramer();
    expect(() => framer.push(Buffer.from('GET / HTTP/1.1\r\n'))).to.throw(FramingError, /unknown client flags 0x47455420/);
  });

  it('refuses bad option magic', () => {
    const bad = option(7, Buffer.alloc(0));
    bad.write('IHAVEOPX', 0);
    expect(() => new OptionFramer().push(Buffer.concat([Buffer.from([0, 0, 0, 1]), bad]))).to.throw(FramingError, /bad option magic/);
  });

  it('refuses an option longer than the limit from its header alone', () => {
    const header = option(7, Buffer.alloc(0));
    header.writeUInt32BE(1 << 20, 12);
    expect(() => new OptionFramer(64 * 1024).push(Buffer.concat([Buffer.from([0, 0, 0, 1]), header]))).to.throw(FramingError, /declares 1048576 bytes/);
  });
});
