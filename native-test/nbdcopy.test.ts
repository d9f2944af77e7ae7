// Proves nbdcopy moves a 64 MiB random image into ftvm and back out byte-identically (TCP, unix socket, and across a restart).
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { ArrayReader } from '../test/support/array-reader.js';
import { launch, makeTempDirectory, startNode, type FtvmNode } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { sha256Volume } from './lib/array.js';
import { shutDown, waitForExit, waitForLog } from './lib/node.js';
import { runOk, sha256File, writeRandomFile } from './lib/run.js';

const VOLUME = { name: 'vol0', sizeBytes: 64 << 20 };
const COPY_TIMEOUT_MS = 60_000;

function attachCount(node: FtvmNode): number {
  return node.log().split('\n').filter((line) => line.includes('client attached')).length;
}

describe('native: nbdcopy', function () {
  let node: FtvmNode | undefined;
  let scratch = '';
  /** The image most recently copied in: what the volume must hold. */
  let lastImage = '';

  before(async function () {
    requireTools(this, 'nbdcopy');
    node = await startNode([VOLUME]);
    scratch = await makeTempDirectory('ftvm-nbdcopy-');
  });

  after(async function () {
    await shutDown(node);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  /** SHA-256 of the volume as it is on the RAID member files, read without the server. */
  const storedSha256 = async (): Promise<string> => sha256Volume(await ArrayReader.fromConfig(node!.configFile), VOLUME.name, scratch);

  it('copies a random image in and out over TCP, byte-identical, on several connections', async function () {
    const image = path.join(scratch, 'random-tcp.img');
    const back = path.join(scratch, 'back-tcp.img');
    await writeRandomFile(image, VOLUME.sizeBytes);
    const attachedBefore = attachCount(node!);
    await runOk('nbdcopy', [image, node!.uri(VOLUME.name)], { timeoutMs: COPY_TIMEOUT_MS });
    // CAN_MULTI_CONN makes nbdcopy open several connections to the destination.
    expect(attachCount(node!) - attachedBefore).to.be.greaterThan(1);
    await runOk('nbdcopy', [node!.uri(VOLUME.name), back], { timeoutMs: COPY_TIMEOUT_MS });
    const expected = await sha256File(image);
    expect(await sha256File(back)).to.equal(expected);
    expect(await storedSha256()).to.equal(expected, 'the member files hold the image at the same volume offsets');
    lastImage = image;
  });

  it('copies a random image in and out over the unix socket, byte-identical', async function () {
    const image = path.join(scratch, 'random-unix.img');
    const back = path.join(scratch, 'back-unix.img');
    await writeRandomFile(image, VOLUME.sizeBytes);
    await runOk('nbdcopy', ['--flush', image, node!.unixUri(VOLUME.name)], { timeoutMs: COPY_TIMEOUT_MS });
    await runOk('nbdcopy', [node!.unixUri(VOLUME.name), back], { timeoutMs: COPY_TIMEOUT_MS });
    const expected = await sha256File(image);
    expect(await sha256File(back)).to.equal(expected);
    expect(await storedSha256()).to.equal(expected, 'the member files hold the image at the same volume offsets');
    lastImage = image;
  });

  it('still holds the data after a stop and a restart on the same directory', async function () {
    expect(lastImage, 'an earlier test copied an image in').to.not.equal('');
    const before = node!;
    before.child.kill('SIGTERM');
    expect(await waitForLog(before, 'stopped cleanly', 10_000), before.log()).to.equal(true);
    // See the next test: the process may linger after a clean stop; it holds nothing any more.
    if (!(await waitForExit(before, 1000))) await before.kill();
    node = await launch(before.configFile, 'a', { host: before.host, port: before.port, directory: before.directory });
    const back = path.join(scratch, 'back-restart.img');
    await runOk('nbdcopy', [node.uri(VOLUME.name), back], { timeoutMs: COPY_TIMEOUT_MS });
    expect(await sha256File(back)).to.equal(await sha256File(lastImage));
  });

  it('exits within 5 s of SIGTERM once it has stopped cleanly', async function () {
    const current = node!;
    current.child.kill('SIGTERM');
    expect(await waitForLog(current, 'stopped cleanly', 10_000), current.log()).to.equal(true);
    const exited = await waitForExit(current, 5000);
    expect(exited, `ftvm serve logged "stopped cleanly" but was still running 5 s later:\n${current.log()}`).to.equal(true);
  });
});
