// Proves what an operator watches is true of real node processes: /metrics counts exactly the NBD
// requests a client sent (requests, bytes, latency histogram), shows the partner link, the mode,
// the array and its members, and counts a takeover after kill -9; `ftvm events` streams link-down,
// mode and takeover events in the order they happen, and member-failed and progress events.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { requestControl } from '../../src/cluster/index.js';
import { EXIT } from '../../src/cli/failure.js';
import { FTVM_BIN, freePort, startCluster, type FtvmCluster } from '../support/ftvm-process.js';
import { scrape, value } from '../support/prometheus.js';
import { RawClient } from '../support/raw-client.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_FLUSH = 3;
/** What `ftvm status --watch` starts each redraw with: cursor home, clear screen. */
const CLEAR = '\x1b[H\x1b[2J';

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const result = await probe();
      if (result !== null && result !== undefined && result !== false) return result;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `ftvm events` as a user runs it: its stdout lines parsed, resolved once it says it streams. */
async function watchEvents(control: string): Promise<{ child: ChildProcess; events: Array<Record<string, unknown>>; stderr: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [FTVM_BIN, 'events', '--control', control], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Array<Record<string, unknown>> = [];
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    let newline: number;
    while ((newline = stdout.indexOf('\n')) >= 0) {
      events.push(JSON.parse(stdout.slice(0, newline)) as Record<string, unknown>);
      stdout = stdout.slice(newline + 1);
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await until('ftvm events streams', async () => /streaming the events/.test(stderr) || child.exitCode !== null, 10_000);
  if (child.exitCode !== null) throw new Error(`ftvm events exited: ${stderr}`);
  return { child, events, stderr: () => stderr, exited };
}

describe('observability (real processes): /metrics and ftvm events', function () {
  this.timeout(180_000);
  let cluster: FtvmCluster | null = null;
  const metricsPorts = new Map<string, number>();
  const watchers: ChildProcess[] = [];

  beforeEach(async () => {
    for (const name of ['a', 'b']) metricsPorts.set(name, await freePort());
    cluster = await startCluster(
      [
        { name: 'vol0', sizeBytes: SIZE },
        { name: 'vol1', sizeBytes: SIZE },
      ],
      { nodeExtra: (name) => ({ metrics: { host: '127.0.0.1', port: metricsPorts.get(name) } }) },
    );
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') for (const node of cluster?.nodes.values() ?? []) process.stderr.write(node.log());
    for (const child of watchers.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await cluster?.stop();
    cluster = null;
  });

  const port = (name: string): number => metricsPorts.get(name) as number;
  const control = (name: string): string => path.join((cluster as FtvmCluster).directory, `${name}.control`);

  it('counts exactly the NBD requests and bytes a client sent, their latencies, and shows link, mode and array; after kill -9 of b, the link down and the takeover', async () => {
    const a = (cluster as FtvmCluster).node('a');
    const before = await scrape(port('a'));
    expect(value(before, 'ftvm_nbd_requests_total', { volume: 'vol0', command: 'write' }), 'no writes yet').to.equal(undefined);
    expect(value(before, 'ftvm_partner_link_up', { peer: 'b' })).to.equal(1);

    const client = await RawClient.connect({ port: a.port });
    await client.attach('vol0');
    const lengths = [4096, 512, 65536, 1, 12288, 131072, 7, 4096, 3000, 1024 * 1024];
    let handle = 1n;
    for (const [index, length] of lengths.entries()) client.request(NBD_CMD_WRITE, { handle: handle++, offset: index * MiB / 2, payload: Buffer.alloc(length, index + 1) });
    for (let reply = 0; reply < lengths.length; reply++) expect((await client.readReply()).error).to.equal(0);
    for (let read = 0; read < 3; read++) {
      client.request(NBD_CMD_READ, { handle: handle++, offset: read * 8192, length: 8192 });
      expect((await client.readReply(8192)).error).to.equal(0);
    }
    client.request(NBD_CMD_FLUSH, { handle: handle++ });
    expect((await client.readReply()).error).to.equal(0);
    // Past the end: answered with an error, and counted as one.
    client.request(NBD_CMD_READ, { handle, offset: SIZE, length: 4096 });
    expect((await client.readReply()).error).to.not.equal(0);

    const samples = await scrape(port('a'));
    const of = (name: string, labels: Record<string, string>): number | undefined => value(samples, name, labels);
    expect(of('ftvm_nbd_requests_total', { volume: 'vol0', command: 'write' })).to.equal(lengths.length);
    expect(of('ftvm_nbd_request_bytes_total', { volume: 'vol0', command: 'write' })).to.equal(lengths.reduce((sum, length) => sum + length, 0));
    expect(of('ftvm_nbd_requests_total', { volume: 'vol0', command: 'read' })).to.equal(4);
    expect(of('ftvm_nbd_request_bytes_total', { volume: 'vol0', command: 'read' })).to.equal(3 * 8192 + 4096);
    expect(of('ftvm_nbd_request_errors_total', { volume: 'vol0', command: 'read' })).to.equal(1);
    expect(of('ftvm_nbd_request_errors_total', { volume: 'vol0', command: 'write' }), 'no write failed: no series').to.equal(undefined);
    expect(of('ftvm_nbd_requests_total', { volume: 'vol0', command: 'flush' })).to.equal(1);
    expect(of('ftvm_nbd_requests_total', { volume: 'vol1', command: 'write' })).to.equal(undefined);
    expect(of('ftvm_nbd_request_duration_seconds_count', { command: 'write' })).to.equal(lengths.length);
    expect(of('ftvm_nbd_request_duration_seconds_bucket', { command: 'write', le: '+Inf' })).to.equal(lengths.length);
    expect(of('ftvm_nbd_request_duration_seconds_sum', { command: 'write' })).to.be.greaterThan(0);
    expect(of('ftvm_nbd_request_duration_seconds_count', { command: 'read' })).to.equal(4);
    expect(of('ftvm_nbd_connections', {})).to.equal(1);
    expect(of('ftvm_nbd_requests_in_flight', {})).to.equal(0);
    expect(of('ftvm_memory_resident_pages', {})).to.be.greaterThan(0);
    expect(of('ftvm_memory_dirty_pages', {}), 'the flush emptied the destage queue').to.equal(0);
    expect(of('ftvm_node_mode', { mode: 'mirrored' })).to.equal(1);
    expect(of('ftvm_node_mode', { mode: 'write-through' })).to.equal(0);
    expect(of('ftvm_node_array_holder', {})).to.equal(1);
    expect(of('ftvm_node_epoch', {})).to.be.greaterThan(0);
    expect(of('ftvm_lease_remaining_seconds', {})).to.be.greaterThan(0);
    expect(of('ftvm_array_state', { state: 'optimal' })).to.equal(1);
    for (const member of ['0', '1', '2']) expect(of('ftvm_array_member_state', { member, state: 'active' }), `member ${member}`).to.equal(1);
    expect(of('ftvm_takeovers_total', { what: 'volume' })).to.equal(0);
    expect(of('ftvm_partner_link_down_total', { peer: 'b' })).to.equal(0);
    expect(samples.every((sample) => sample.labels.node === 'a'), 'every sample names the node').to.equal(true);

    // b does not hold the array: no array series there; its link to a is up; it saw none of a's requests.
    const b = await scrape(port('b'));
    expect(value(b, 'ftvm_node_array_holder')).to.equal(0);
    expect(value(b, 'ftvm_array_state', { state: 'optimal' })).to.equal(undefined);
    expect(value(b, 'ftvm_partner_link_up', { peer: 'a' })).to.equal(1);
    // A round trip on loopback: measured (the first probe goes out as the node starts serving), well under a second.
    for (const [scraped, peer] of [[b, 'a'], [await scrape(port('a')), 'b']] as const) {
      const roundTrip = value(scraped, 'ftvm_partner_round_trip_seconds', { peer });
      expect(roundTrip, `round trip to ${peer}`).to.be.a('number');
      expect(roundTrip as number).to.be.greaterThan(0).and.lessThan(1);
    }
    expect(value(b, 'ftvm_nbd_requests_total', { volume: 'vol0', command: 'write' })).to.equal(undefined);

    const other = await fetch(`http://127.0.0.1:${port('a')}/`);
    expect(other.status).to.equal(404);
    await other.body?.cancel();

    await (cluster as FtvmCluster).node('b').kill();
    const after = await until('node a took vol1 over', async () => {
      const now = await scrape(port('a'));
      return value(now, 'ftvm_takeovers_total', { what: 'volume' }) === 1 ? now : null;
    });
    expect(value(after, 'ftvm_partner_link_up', { peer: 'b' })).to.equal(0);
    expect(value(after, 'ftvm_partner_round_trip_seconds', { peer: 'b' }), 'no round trip to a partner that is down').to.equal(undefined);
    expect(value(after, 'ftvm_partner_link_down_total', { peer: 'b' })).to.equal(1);
    expect(value(after, 'ftvm_node_mode', { mode: 'write-through' })).to.equal(1);
    expect(value(after, 'ftvm_takeovers_total', { what: 'array' }), 'a held the array already').to.equal(0);
    client.close();
  });

  it('ftvm events: member-failed and rebuild progress on the holder; kill -9 of the holder: link-down, mode, takeover of the array and of its volume, in order; the holder back: link-up, resync, mode, handover', async () => {
    const onA = await watchEvents(control('a'));
    const onB = await watchEvents(control('b'));
    watchers.push(onA.child, onB.child);

    const failed = await requestControl(control('a'), { op: 'fail', member: 1 });
    expect(failed.ok, failed.error).to.equal(true);
    const degraded = await scrape(port('a'));
    expect(value(degraded, 'ftvm_array_state', { state: 'degraded' })).to.equal(1);
    expect(value(degraded, 'ftvm_array_member_state', { member: '1', state: 'failed' })).to.equal(1);
    expect(value(degraded, 'ftvm_array_member_failures_total')).to.equal(1);
    const rebuilt = await requestControl(control('a'), { op: 'rebuild', member: 1 });
    expect(rebuilt.ok, rebuilt.error).to.equal(true);
    await until('the rebuild is done in the events', async () => onA.events.some((event) => event.kind === 'progress' && event.doneBytes === event.totalBytes));
    const failure = onA.events.find((event) => event.kind === 'member-failed');
    expect(failure).to.include({ node: 'a', member: 1, reason: 'failed by administrator' });
    expect(failure?.path).to.be.a('string');
    const progress = onA.events.filter((event) => event.kind === 'progress');
    expect(progress[0]).to.include({ operation: 'rebuild', member: 1 });
    expect((progress.at(-1) as { totalBytes: number }).totalBytes).to.be.greaterThan(0);
    expect(onA.events.indexOf(failure as Record<string, unknown>)).to.be.lessThan(onA.events.indexOf(progress[0] as Record<string, unknown>));
    expect(value(await scrape(port('a')), 'ftvm_array_state', { state: 'optimal' })).to.equal(1);

    // Writes on the disks just now (flushed) leave their regions dirty in the write-intent bitmap for
    // 5 s: killed meanwhile, a leaves an array that b must resync as it takes it over.
    const writer = await RawClient.connect({ port: (cluster as FtvmCluster).node('a').port });
    await writer.attach('vol0');
    writer.request(NBD_CMD_WRITE, { handle: 1n, offset: 2 * MiB, payload: Buffer.alloc(MiB, 0x6b) });
    expect((await writer.readReply()).error).to.equal(0);
    writer.request(NBD_CMD_FLUSH, { handle: 2n });
    expect((await writer.readReply()).error).to.equal(0);
    await (cluster as FtvmCluster).node('a').kill();
    // ftvm events on a: the node went away under it; it says so with exit 69.
    expect(await onA.exited).to.equal(EXIT.unavailable);
    expect(onA.stderr()).to.match(/the node closed the event stream/);

    await until('b took over vol0', async () => onB.events.some((event) => event.kind === 'takeover' && event.what === 'volume'));
    // The array's resync as b opened it, reported as progress to its end. It runs behind I/O, so the
    // takeover may be announced before it ends.
    await until('the resync reported its end', async () => {
      const last = onB.events.filter((event) => event.kind === 'progress').at(-1);
      return last !== undefined && last.doneBytes === last.totalBytes;
    });
    const resynced = onB.events.filter((event) => event.kind === 'progress');
    expect((cluster as FtvmCluster).node('b').log()).to.match(/was not stopped cleanly: resyncing [1-9]\d* dirty region/);
    expect(resynced.length, JSON.stringify(onB.events)).to.be.greaterThan(0);
    for (const event of resynced) expect(event).to.include({ operation: 'array-resync' });
    expect(resynced.at(-1)?.doneBytes).to.equal(resynced.at(-1)?.totalBytes);
    expect(resynced.at(-1)?.totalBytes as number).to.be.greaterThan(0);
    expect((cluster as FtvmCluster).node('b').log()).to.match(/array resync after an unclean stop done: [\d.]+ MiB/);
    const kinds = onB.events.filter((event) => event.kind !== 'progress').map((event) => `${String(event.kind)}${event.kind === 'takeover' ? `:${String(event.what)}` : ''}`);
    expect(kinds.slice(0, 4), JSON.stringify(onB.events)).to.deep.equal(['link-down', 'mode', 'takeover:array', 'takeover:volume']);
    const [down, mode, array, volume] = onB.events.filter((event) => event.kind !== 'progress') as Array<Record<string, unknown>>;
    expect(down).to.include({ node: 'b', peer: 'a' });
    expect(down?.reason).to.be.a('string');
    expect(mode).to.include({ mode: 'write-through' });
    expect(array).to.include({ from: 'a' });
    expect(volume).to.include({ volume: 'vol0', from: 'a' });
    expect(volume?.epoch as number).to.be.at.least(array?.epoch as number);
    for (const event of onB.events) expect(Number.isNaN(Date.parse(event.time as string)), 'time is ISO 8601').to.equal(false);

    // a is back: b links, resyncs, mirrors again and hands vol0 back to it.
    const seen = onB.events.length;
    await (cluster as FtvmCluster).start('a');
    await until('b handed vol0 back to a', async () => onB.events.slice(seen).some((event) => event.kind === 'handover'), 60_000);
    const back = onB.events.slice(seen);
    const label = (event: Record<string, unknown>): string => `${String(event.kind)}${event.kind === 'resync' ? `:${String(event.state)}` : event.kind === 'mode' ? `:${String(event.mode)}` : ''}`;
    expect(back.map(label), JSON.stringify(back)).to.deep.equal(['link-up', 'resync:running', 'mode:mirrored', 'resync:done', 'handover']);
    expect(back[0]).to.include({ peer: 'a' });
    expect(back[4]).to.include({ volume: 'vol0', from: 'b', to: 'a' });

    // Ctrl-C ends a watch normally.
    onB.child.kill('SIGINT');
    expect(await onB.exited).to.equal(0);
    // A node that stops with a subscriber attached ends the stream (its stop does not wait for it).
    const again = await watchEvents(control('b'));
    watchers.push(again.child);
    const b = (cluster as FtvmCluster).node('b');
    await b.stop();
    expect(b.log()).to.include('stopped cleanly');
    expect(await again.exited).to.equal(EXIT.unavailable);
  });

  it('ftvm status --watch redraws every second until Ctrl-C, and shows the holder\'s array', async () => {
    const child = spawn(process.execPath, [FTVM_BIN, 'status', '--watch', '--control', control('a')], { stdio: ['ignore', 'pipe', 'pipe'] });
    watchers.push(child);
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await until('three redraws', async () => output.split(CLEAR).length > 3, 10_000);
    const frames = output.split(CLEAR).filter(Boolean);
    for (const frame of frames.slice(0, 3)) {
      expect(frame).to.match(/^\d{4}-\d\d-\d\dT\S+Z {2}\(every 1 s; Ctrl-C stops\)\ncluster test-cluster, node a\n/);
      expect(frame).to.include('  array:         optimal (raid5)\n');
      expect(frame).to.not.include('running:');
    }
    child.kill('SIGINT');
    expect(await exited).to.equal(0);
  });

  it('a node whose metrics port another process holds does not start, and says which', async () => {
    await cluster?.stop();
    const held = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(held, '127.0.0.1', resolve));
    try {
      const start = startCluster([{ name: 'vol0', sizeBytes: SIZE }], { nodes: ['a'], nodeExtra: () => ({ metrics: { host: '127.0.0.1', port: held } }) });
      const error = await start.then(
        () => null,
        (thrown: Error) => thrown,
      );
      expect(error?.message).to.match(new RegExp(`ftvm exited with ${EXIT.unavailable} while starting`));
      expect(error?.message).to.include(`metrics endpoint http://127.0.0.1:${held}/metrics`);
      expect(error?.message).to.include('EADDRINUSE');
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});
