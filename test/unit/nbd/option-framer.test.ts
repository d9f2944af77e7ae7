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

/** Flags, two options, then the start of a transmission request sent right behind GO. */
const stream = Buffer.concat([Buffer.from([0, 0, 0, 3]), option(8, Buffer.alloc(0)), option(7, Buffer.from('abcdef')), Buffer.from('2560951300000000', 'hex')]);

/** Takes options until GO (7), as the connection does; what follows GO is not an option. */
function takeUntilGo(framer: OptionFramer, into: Array<[number, string]>): void {
  while (into[into.length - 1]?.[0] !== 7) {
    const next = framer.next();
    if (next === null) return;
    into.push([next.option, next.data.toString()]);
  }
}

describe('OptionFramer', () => {
  it('reads flags and options at every split point, leaving the bytes after GO untouched', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new OptionFramer();
      const options: Array<[number, string]> = [];
      framer.push(stream.subarray(0, cut));
      takeUntilGo(framer, options);
      framer.push(stream.subarray(cut));
      takeUntilGo(framer, options);
      expect(framer.flags, `cut ${cut}`).to.equal(3);
      expect(options, `cut ${cut}`).to.deep.equal([[8, ''], [7, 'abcdef']]);
      expect(framer.takeRemainder().toString('hex'), `cut ${cut}`).to.equal('2560951300000000');
    }
  });

  it('refuses unknown client flags before looking at options', () => {
    const framer = new OptionFramer();
    expect(() => framer.push(Buffer.from('GET / HTTP/1.1\r\n'))).to.throw(FramingError, /unknown client flags 0x47455420/);
  });

  it('refuses bad option magic', () => {
    const bad = option(7, Buffer.alloc(0));
    bad.write('IHAVEOPX', 0);
    const framer = new OptionFramer();
    framer.push(Buffer.concat([Buffer.from([0, 0, 0, 1]), bad]));
    expect(() => framer.next()).to.throw(FramingError, /bad option magic/);
  });

  it('refuses an option longer than the limit from its header alone', () => {
    const header = option(7, Buffer.alloc(0));
    header.writeUInt32BE(1 << 20, 12);
    const framer = new OptionFramer(64 * 1024);
    framer.push(Buffer.concat([Buffer.from([0, 0, 0, 1]), header]));
    expect(() => framer.next()).to.throw(FramingError, /declares 1048576 bytes/);
  });
});
