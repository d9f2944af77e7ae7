// Proves config validation names the bad field, resolves paths, and size parsing is exact.
import { expect } from 'chai';
import { ConfigError, findNode, formatSize, parseConfig, parseSize } from '../../../src/config/index.js';

const good = (): Record<string, unknown> => ({
  version: 1,
  cluster: 'c1',
  nodes: [{ name: 'a', listen: [{ host: '127.0.0.1', port: 10809 }, { path: 'a.sock' }] }],
  storage: { level: 'raid5', members: ['d0.img', 'd1.img', '/abs/d2.img'] },
  volumes: [{ name: 'vol0', size: '1GiB' }],
});

describe('config', () => {
  it('accepts a valid config, parses sizes and resolves relative paths', () => {
    const config = parseConfig(good(), 'x.json', '/data');
    expect(config.volumes[0]).to.deep.equal({ name: 'vol0', size: 1 << 30, description: '', readOnly: false });
    expect(config.storage).to.deep.equal({
      level: 'raid5',
      members: ['/data/d0.img', '/data/d1.img', '/abs/d2.img'],
      cache: 64 << 20,
      readAhead: 256 << 10,
    });
    expect(config.nodes[0]?.listen[1]).to.deep.equal({ path: '/data/a.sock' });
    expect(findNode(config, 'a').name).to.equal('a');
    expect(() => findNode(config, 'z')).to.throw(ConfigError, /node 'z' is not in the config \(nodes: a\)/);
  });

  const broken: Array<[string, (config: Record<string, unknown>) => void, RegExp]> = [
    ['a wrong version', (config) => (config.version = 2), /version/],
    ['an unknown key', (config) => (config.colour = 'red'), /colour/],
    ['a port out of range', (config) => ((config.nodes as Array<{ listen: unknown[] }>)[0]!.listen = [{ host: 'h', port: 70000 }]), /nodes\.0\.listen\.0/],
    ['a size that is not a size', (config) => ((config.volumes as Array<{ size: unknown }>)[0]!.size = 'lots'), /volumes\.0\.size: 'lots' is not a size/],
    ['an unaligned size', (config) => ((config.volumes as Array<{ size: unknown }>)[0]!.size = 1000), /multiple of 4096/],
    ['a duplicate volume name', (config) => (config.volumes as unknown[]).push({ name: 'vol0', size: 4096 }), /volume name 'vol0' appears twice/],
    ['no nodes', (config) => (config.nodes = []), /nodes/],
    ['an unknown RAID level', (config) => ((config.storage as { level: string }).level = 'raid6'), /storage\.level/],
    ['no storage section', (config) => delete config.storage, /storage/],
    ['a bad name', (config) => ((config.volumes as Array<{ name: unknown }>)[0]!.name = '../x'), /volumes\.0\.name/],
  ];
  for (const [what, mutate, message] of broken) {
    it(`refuses ${what} with a message naming the field`, () => {
      const config = good();
      mutate(config);
      expect(() => parseConfig(config, 'x.json', '/data')).to.throw(ConfigError, message);
    });
  }

  it('parses and formats sizes', () => {
    expect(parseSize('4096')).to.equal(4096);
    expect(parseSize('64MiB')).to.equal(64 << 20);
    expect(parseSize('1g')).to.equal(1 << 30);
    expect(parseSize('1.5K')).to.equal(1536);
    expect(parseSize(' 2 TiB ')).to.equal(2 * 1024 ** 4);
    expect(parseSize('1.3')).to.match(/whole number/);
    expect(parseSize('5 parsecs')).to.match(/not a size unit/);
    expect(parseSize(-1)).to.match(/whole number/);
    expect(formatSize(1 << 30)).to.equal('1 GiB');
    expect(formatSize(1536)).to.equal('1536 bytes');
  });
});
