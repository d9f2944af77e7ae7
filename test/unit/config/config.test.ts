// Proves config validation names the bad field, resolves paths, and size parsing is exact.
import { expect } from 'chai';
import { clusterUuid, ConfigError, findNode, formatSize, parseConfig, parseSize } from '../../../src/config/index.js';

const good = (): Record<string, unknown> => ({
  version: 1,
  cluster: 'c1',
  nodes: [{ name: 'a', listen: [{ host: '127.0.0.1', port: 10809 }, { path: 'a.sock' }] }],
  storage: { level: 'raid5', members: ['d0.img', 'd1.img', '/abs/d2.img'] },
  volumes: [{ name: 'vol0', size: '1GiB' }],
});

type Entry = Record<string, unknown>;

/** Two nodes on one host, each volume owned by one of them. */
const twoNodes = (): Record<string, unknown> => ({
  version: 1,
  cluster: 'c2',
  nodes: [
    { name: 'a', listen: [{ host: '127.0.0.1', port: 10809 }], partner: { host: '127.0.0.1', port: 10909 } },
    { name: 'b', listen: [{ host: '127.0.0.1', port: 10810 }], partner: { host: '127.0.0.1', port: 10910 } },
  ],
  storage: { level: 'raid5', members: ['d0.img', 'd1.img', 'd2.img'] },
  volumes: [
    { name: 'vol0', size: '1GiB', owner: 'a' },
    { name: 'vol1', size: '1GiB', owner: 'b' },
  ],
});

describe('config', () => {
  it('accepts a valid config, parses sizes and resolves relative paths', () => {
    const config = parseConfig(good(), 'x.json', '/data');
    expect(config.volumes[0]).to.deep.equal({ name: 'vol0', size: 1 << 30, description: '', readOnly: false, owner: 'a', pageSize: 4 << 10 });
    expect(config.memory).to.equal(256 << 20);
    expect(config.nodes[0]?.partner).to.equal(undefined);
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

  it('accepts a two-node cluster with partner addresses, owners, memory and page sizes', () => {
    const raw = twoNodes();
    raw.memory = '1GiB';
    (raw.volumes as Entry[])[1]!.pageSize = '1MiB';
    const config = parseConfig(raw, 'x.json', '/data');
    expect(config.nodes.map((node) => node.partner)).to.deep.equal([
      { host: '127.0.0.1', port: 10909 },
      { host: '127.0.0.1', port: 10910 },
    ]);
    expect(config.memory).to.equal(1 << 30);
    expect(config.volumes.map((volume) => [volume.owner, volume.pageSize])).to.deep.equal([
      ['a', 4 << 10],
      ['b', 1 << 20],
    ]);
  });

  it('makes the first node the owner of a volume that names none', () => {
    const raw = twoNodes();
    delete (raw.volumes as Entry[])[1]!.owner;
    const owner: string = parseConfig(raw, 'x.json', '/data').volumes[1]!.owner;
    expect(owner).to.equal('a');
  });

  it('defaults the page size to 4 KiB', () => {
    const raw = good();
    (raw.volumes as Entry[]).push({ name: 'v1028k', size: '1028KiB' }, { name: 'v4k', size: 4096 }, { name: 'v24k', size: '24KiB' });
    expect(parseConfig(raw, 'x.json', '/data').volumes.map((volume) => volume.pageSize)).to.deep.equal([4 << 10, 4 << 10, 4 << 10, 4 << 10]);
  });

  it('accepts the smallest page size and the smallest memory', () => {
    const raw = good();
    raw.memory = 1 << 20;
    (raw.volumes as Entry[]).push({ name: 'small', size: 4096, pageSize: 4096 });
    const config = parseConfig(raw, 'x.json', '/data');
    expect(config.memory).to.equal(1 << 20);
    expect(config.volumes[1]?.pageSize).to.equal(4096);
  });

  it('defaults the lease to 2 s and takeover of addresses to off, and takes others', () => {
    const parsed = parseConfig(good(), 'x.json', '/data');
    expect([parsed.leaseMs, parsed.takeoverAddresses]).to.deep.equal([2000, false]);
    const raw = good() as Record<string, unknown>;
    raw.leaseMs = 5000;
    raw.takeoverAddresses = true;
    const other = parseConfig(raw, 'x.json', '/data');
    expect([other.leaseMs, other.takeoverAddresses]).to.deep.equal([5000, true]);
    raw.leaseMs = 100;
    expect(() => parseConfig(raw, 'x.json', '/data')).to.throw(/leaseMs: leaseMs must be at least 200/);
  });

  it('defaults the partner timeout to 1 s and takes another', () => {
    expect(parseConfig(good(), 'x.json', '/data').partnerTimeoutMs).to.equal(1000);
    const raw = good();
    raw.partnerTimeoutMs = 800;
    expect(parseConfig(raw, 'x.json', '/data').partnerTimeoutMs).to.equal(800);
  });

  it('bounds dirty memory at 768 MiB unless limits.dirtyBytes says otherwise', () => {
    expect(parseConfig(good(), 'x.json', '/data').limits.dirtyBytes).to.equal(768 * 1024 * 1024);
    const raw = good();
    raw.limits = { dirtyBytes: '2GiB' };
    expect(parseConfig(raw, 'x.json', '/data').limits.dirtyBytes).to.equal(2 * 1024 * 1024 * 1024);
  });

  const brokenCluster: Array<[string, (config: Record<string, unknown>) => void, RegExp[]]> = [
    ['a dirty bound below 1 MiB', (config) => (config.limits = { dirtyBytes: '512KiB' }), [/limits\.dirtyBytes: dirtyBytes must be at least 1 MiB/]],
    ['a dirty bound that is not a size', (config) => (config.limits = { dirtyBytes: 'lots' }), [/limits\.dirtyBytes: 'lots' is not a size/]],
    [
      'a partner timeout below 100 ms',
      (config) => (config.partnerTimeoutMs = 50),
      [/partnerTimeoutMs: partnerTimeoutMs must be at least 100/],
    ],
    [
      'a node without a partner address in a two-node cluster',
      (config) => delete (config.nodes as Entry[])[1]!.partner,
      [/nodes\.1\.partner: a cluster of more than one node needs a partner address on every node/],
    ],
    [
      'two nodes with one partner address',
      (config) => ((config.nodes as Entry[])[1]!.partner = { host: '127.0.0.1', port: 10909 }),
      [/nodes\.1\.partner: address 127\.0\.0\.1:10909 is the partner address of node 'a' and the partner address of node 'b'/],
    ],
    [
      'two nodes with one NBD TCP address',
      (config) => ((config.nodes as Entry[])[1]!.listen = [{ host: '127.0.0.1', port: 10809 }]),
      [/nodes\.1\.listen\.0: address 127\.0\.0\.1:10809 is the NBD listen address of node 'a' and the NBD listen address of node 'b'/],
    ],
    [
      'two nodes with one NBD socket path',
      (config) => {
        (config.nodes as Entry[])[0]!.listen = [{ path: 'nbd.sock' }];
        (config.nodes as Entry[])[1]!.listen = [{ path: './nbd.sock' }];
      },
      [/nodes\.1\.listen\.0: address \.\/nbd\.sock is the NBD listen address of node 'a' and the NBD listen address of node 'b'/],
    ],
    [
      'a partner address that is another node\'s NBD address',
      (config) => ((config.nodes as Entry[])[1]!.partner = { host: '127.0.0.1', port: 10809 }),
      [/nodes\.1\.partner: address 127\.0\.0\.1:10809 is the NBD listen address of node 'a' and the partner address of node 'b'/],
    ],
    [
      'an owner that is not a node',
      (config) => ((config.volumes as Entry[])[1]!.owner = 'x'),
      [/volumes\.1\.owner: 'x' is not a node \(nodes: a, b\)/],
    ],
    ['memory of zero', (config) => (config.memory = 0), [/memory: memory must be a positive multiple of 1 MiB/]],
    ['memory not in whole MiB', (config) => (config.memory = '1536KiB'), [/memory: memory must be a positive multiple of 1 MiB/]],
    ['memory larger than one Buffer can be', (config) => (config.memory = '8GiB'), [/memory: memory must be at most 4 GiB: a node's frame pool is one Node.js Buffer/]],
    ['memory that is not a size', (config) => (config.memory = 'plenty'), [/memory: 'plenty' is not a size/]],
    [
      'a page size that is not a power of two',
      (config) => ((config.volumes as Entry[])[0]!.pageSize = 12288),
      [/volumes\.0\.pageSize: pageSize must be a power of two \(12288 is not\)/],
    ],
    [
      'a page size below 4 KiB',
      (config) => ((config.volumes as Entry[])[0]!.pageSize = 2048),
      [/volumes\.0\.pageSize: pageSize must be from 4 KiB to 1 MiB \(2 KiB is not\)/],
    ],
    [
      'a page size above 1 MiB',
      (config) => ((config.volumes as Entry[])[0]!.pageSize = '2MiB'),
      [/volumes\.0\.pageSize: pageSize must be from 4 KiB to 1 MiB \(2 MiB is not\)/],
    ],
    [
      'a page size that does not divide the volume size',
      (config) => Object.assign((config.volumes as Entry[])[1]!, { size: '1028KiB', pageSize: '64KiB' }),
      [/volumes\.1\.pageSize: pageSize must divide the volume size \(1028 KiB is not a multiple of 64 KiB\)/],
    ],
  ];
  for (const [what, mutate, messages] of brokenCluster) {
    it(`refuses ${what} with a message naming the field and the rule`, () => {
      const config = twoNodes();
      mutate(config);
      let thrown: unknown;
      try {
        parseConfig(config, 'x.json', '/data');
      } catch (error) {
        thrown = error;
      }
      expect(thrown).to.be.instanceOf(ConfigError);
      for (const message of messages) expect((thrown as Error).message).to.match(message);
    });
  }

  it('does not need a partner address on the only node', () => {
    expect(parseConfig(good(), 'x.json', '/data').nodes[0]?.partner).to.equal(undefined);
  });

  it('derives a version-5-shaped cluster uuid from the cluster name', () => {
    // sha256('ftvm-cluster:ftvm-demo') = 0e8f7d1c 62d4 11a3 fc66 858f5175eb03 ...; byte 6 0x11 -> 0x51, byte 8 0xfc -> 0xbc.
    expect(clusterUuid('ftvm-demo')).to.equal('0e8f7d1c-62d4-51a3-bc66-858f5175eb03');
    // sha256('ftvm-cluster:c1') = f28d3f82 27f5 f54b 0e6a 2e2bd39ba0ec ...; byte 6 0xf5 -> 0x55, byte 8 0x0e -> 0x8e.
    expect(clusterUuid('c1')).to.equal('f28d3f82-27f5-554b-8e6a-2e2bd39ba0ec');
    for (const cluster of ['a', 'c1', 'ftvm-demo', 'x'.repeat(64)]) {
      const uuid = clusterUuid(cluster);
      expect(uuid).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(clusterUuid(cluster)).to.equal(uuid);
    }
    expect(clusterUuid('c1')).to.not.equal(clusterUuid('c2'));
  });

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

  it('puts control sockets beside the config, and under /run/ftvm for a config under /etc', () => {
    const controls = (directory: string): unknown[] => parseConfig(twoNodes(), 'x.json', directory).nodes.map((node) => node.control);
    expect(controls('/data')).to.deep.equal(['/data/a.control', '/data/b.control']);
    expect(controls('/etc/ftvm')).to.deep.equal(['/run/ftvm/a.control', '/run/ftvm/b.control']);
    expect(controls('/etc')).to.deep.equal(['/run/ftvm/a.control', '/run/ftvm/b.control']);
    // Only /etc itself and what is below it: a directory that merely starts with the letters is not.
    expect(controls('/etcetera')).to.deep.equal(['/etcetera/a.control', '/etcetera/b.control']);
    const named = twoNodes();
    (named.nodes as Entry[])[0]!.control = 'ctl/a.sock';
    expect(parseConfig(named, 'x.json', '/etc/ftvm').nodes[0]?.control).to.equal('/etc/ftvm/ctl/a.sock');
  });

  describe('nodes[].metrics', () => {
    const withMetrics = (metrics: unknown, node = 0): Record<string, unknown> => {
      const config = twoNodes();
      ((config.nodes as Entry[])[node] as Entry).metrics = metrics;
      return config;
    };
    const refusal = (raw: Record<string, unknown>): string => {
      try {
        parseConfig(raw, 'x.json', '/data');
      } catch (error) {
        expect(error).to.be.instanceOf(ConfigError);
        return (error as Error).message;
      }
      throw new Error('accepted');
    };

    it('is off when absent, and kept as given when present', () => {
      expect(parseConfig(twoNodes(), 'x.json', '/data').nodes[0]?.metrics).to.equal(undefined);
      expect(parseConfig(withMetrics({ host: '127.0.0.1', port: 11009 }), 'x.json', '/data').nodes[0]?.metrics).to.deep.equal({ host: '127.0.0.1', port: 11009 });
    });

    for (const [what, port] of [
      ['above 65535', 70000],
      ['zero', 0],
      ['not whole', 9100.5],
    ] as const) {
      it(`refuses a port ${what}, naming the field`, () => {
        expect(refusal(withMetrics({ host: '127.0.0.1', port }))).to.match(/nodes\.0\.metrics\.port: metrics\.port must be (a whole number )?from 1 to 65535/);
      });
    }

    it('refuses a port given as a string, a missing host and an unknown key, each named', () => {
      expect(refusal(withMetrics({ host: '127.0.0.1', port: '9100' }))).to.contain('nodes.0.metrics.port: metrics.port must be a number from 1 to 65535');
      expect(refusal(withMetrics({ port: 9100 }, 1))).to.contain('nodes.1.metrics.host: metrics.host must be a string');
      expect(refusal(withMetrics({ host: '127.0.0.1', port: 9100, path: '/metrics' }))).to.match(/nodes\.0\.metrics: .*path/);
    });

    it("refuses a metrics address that is another listener's", () => {
      expect(refusal(withMetrics({ host: '127.0.0.1', port: 10910 }))).to.contain("nodes.1.partner: address 127.0.0.1:10910 is the metrics address of node 'a' and the partner address of node 'b'");
      const both = withMetrics({ host: '127.0.0.1', port: 9100 });
      ((both.nodes as Entry[])[1] as Entry).metrics = { host: '127.0.0.1', port: 9100 };
      expect(refusal(both)).to.contain("nodes.1.metrics: address 127.0.0.1:9100 is the metrics address of node 'a' and the metrics address of node 'b'");
    });
  });
});
