// Proves a member file's descriptor is never used after close: an operation still waiting in the
// member queue is refused, and one already at the descriptor finishes before it closes. The
// descriptor number goes to the next open; a write let through then lands in that other file (a
// destage queued at abandon() overwrote a write-through page of the memory-mirror integration test
// with its stripe neighbour's bytes once the array was assembled again).
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { memberIo } from '../../../src/storage/disk-queue.js';
import { FileMember } from '../../../src/storage/member.js';

const BYTES = 64 * 1024;

function descriptorOf(member: FileMember): number {
  return (member as unknown as { fd: number }).fd;
}

describe('member file', () => {
  let directory = '';

  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'ftvm-member-'));
  });

  afterEach(async () => {
    memberIo.pace(false);
    await fs.rm(directory, { recursive: true, force: true });
  });

  for (const how of ['write', 'writev'] as const) {
  it(`refuses a ${how} still queued at close, and never writes it into the file opened next under the same descriptor`, async () => {
    const first = await FileMember.create(path.join(directory, 'disk0.img'), BYTES);
    const next = path.join(directory, 'disk1.img');
    await fs.writeFile(next, Buffer.alloc(BYTES));
    // One operation at a time, and that one held here: the write waits in the queue.
    memberIo.pace(true);
    memberIo.submit(() => undefined);
    const queued = how === 'write' ? first.write(0, Buffer.alloc(BYTES, 0xab)) : first.writev(0, [Buffer.alloc(BYTES / 2, 0xab), Buffer.alloc(BYTES / 2, 0xcd)]);
    const outcome = queued.then(
      () => null,
      (error: Error) => error,
    );
    await first.close();
    const other = await FileMember.open(next);
    expect(descriptorOf(other), 'the next open takes the freed descriptor').to.equal(descriptorOf(first));
    memberIo.done();
    const error = await outcome;
    await other.close();
    expect((await fs.readFile(next)).equals(Buffer.alloc(BYTES)), 'the other file is untouched').to.equal(true);
    expect(error?.message).to.match(/: closed$/);
  });
  }

  it('closes only once what already reached the descriptor returned', async () => {
    const file = path.join(directory, 'disk0.img');
    const member = await FileMember.create(file, BYTES);
    const data = Buffer.alloc(BYTES, 0x5c);
    const written = member.write(0, data);
    await member.close();
    await written;
    expect((await fs.readFile(file)).equals(data)).to.equal(true);
    await member.close();
    await member.write(0, data).then(
      () => expect.fail('a closed member wrote'),
      (error: Error) => expect(error.message).to.match(/: closed$/),
    );
  });
});
