// The partner link alone over loopback: write page requests of one page size, a given number in
// flight, answered at once by the other end. Shows what mirroring can move before the memory
// manager or the disks take a share. Usage: node dist/scripts/bench-partner-link.js [--page 65536] [--count 4000]
import { silentLogger } from '../src/observe/index.js';
import { systemClock } from '../src/core/index.js';
import { commandComplete, connectPartner, derivePartnerKey, MessageType, PartnerListener, Status, tcpTransport, type LinkContext, type LinkSecurity, type RequestHandler } from '../src/partner/index.js';

const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const ALLOCATION = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : Number(process.argv[at + 1]);
}

async function main(): Promise<void> {
  const pageBytes = option('--page', 65536);
  const count = option('--count', 4000);
  // --tls: the same link TLS-PSK encrypted, as across hosts (the cost docs/benchmarks.md reports).
  const security: LinkSecurity = {
    key: derivePartnerKey(Buffer.from('bench partner secret, at least 32 bytes')),
    tls: process.argv.includes('--tls'),
    admits: () => true,
    knownAddress: () => true,
    plausibleEpoch: () => true,
  };
  const context = (nodeId: number, handler: RequestHandler): LinkContext => ({ local: { clusterId: CLUSTER, nodeId, epoch: 0 }, security, transport: tcpTransport(security.tls ? security.key : null), handler, logger: silentLogger(), clock: systemClock });
  const listener = new PartnerListener(context(2, (message) => commandComplete(message, Status.Ok)));
  await listener.listen({ host: '127.0.0.1', port: 0 });
  const link = await connectPartner({ host: '127.0.0.1', port: listener.port, nodeId: 2 }, context(1, () => null));
  const data = Buffer.alloc(pageBytes, 7);
  const lines = ['| in flight | MB/s | requests/s |', '| --- | --- | --- |'];
  for (const depth of [1, 16, 128]) {
    let sent = 0;
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: depth }, async () => {
        while (sent < count) {
          sent++;
          await link.request({ type: MessageType.WritePage, allocation: ALLOCATION, virtualPage: 1, version: 1, pageBytes, offset: 0, length: pageBytes, dirty: true, zeroFill: false, data });
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    lines.push(`| ${depth} | ${((count * pageBytes) / seconds / 1e6).toFixed(0)} | ${(count / seconds).toFixed(0)} |`);
  }
  link.close('done');
  await listener.close();
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
