// Proves that destages through a remote array holder are never dropped as "covered" by a flush that
// did not carry them: a flush that fails consumes the failures of the writes it covered, so the kept
// blocks must be sent again before any later flush counts, whoever calls it (cluster simulation,
// seed 304 of three nodes: an acknowledged write lost that way).
import { expect } from 'chai';
import { ArrayAccess } from '../../../src/cluster/array-access.js';
import { RemoteArray } from '../../../src/cluster/remote-array.js';
import { commandComplete, IoOp, MessageType, Status, type Message, type PartnerLink } from '../../../src/partner/index.js';
import { ManualClock } from '../../support/manual-clock.js';

/** A holder over a link: answers "not a partner yet" until ready, then keeps writes and flushes them. */
class FakeHolder {
  ready = false;
  readonly landed = new Map<number, number>();
  readonly link = { request: (message: Message) => this.answer(message) } as unknown as PartnerLink;

  private async answer(message: Message): Promise<Message> {
    if (message.type !== MessageType.ForwardedIo) throw new Error('unexpected message');
    if (!this.ready) return commandComplete(message, Status.NotPartner);
    if (message.op === IoOp.Write) this.landed.set(message.offset, (message.data as Buffer).readUInt32LE(0));
    return commandComplete(message, Status.Ok);
  }
}

async function settle(clock: ManualClock, ms: number): Promise<void> {
  for (let waited = 0; waited < ms; waited += 10) {
    for (let turn = 0; turn < 5; turn++) await Promise.resolve();
    clock.advance(10);
  }
}

function block(value: number): Buffer {
  const data = Buffer.alloc(4096);
  data.writeUInt32LE(value, 0);
  return data;
}

describe('array access through a remote holder', () => {
  it('sends a refused block again before a later caller flush succeeds', async () => {
    const clock = new ManualClock();
    const holder = new FakeHolder();
    const access = new ArrayAccess(new RemoteArray(() => holder.link), true, 60_000, clock);
    access.enqueueBlocks(8192, block(417));
    // The first flush retries while the holder is still starting: each attempt is refused.
    let firstDone = false;
    const first = access.flush().then(() => (firstDone = true));
    await settle(clock, 250);
    expect(firstDone).to.equal(false);
    // The holder is ready; another caller enqueues and flushes before the first retries.
    holder.ready = true;
    access.enqueueBlocks(0, block(3));
    await access.flush();
    expect(holder.landed.get(8192), 'the refused block was dropped as covered').to.equal(417);
    expect(holder.landed.get(0)).to.equal(3);
    await settle(clock, 200);
    await first;
  });

  it('fails a flush after the retry window and keeps the block for the next one', async () => {
    const clock = new ManualClock();
    const holder = new FakeHolder();
    const access = new ArrayAccess(new RemoteArray(() => holder.link), true, 300, clock);
    access.enqueueBlocks(4096, block(7));
    const outcome = access.flush().then(
      () => 'ok',
      (error: Error) => error.name,
    );
    await settle(clock, 500);
    expect(await outcome).to.equal('HolderUnavailableError');
    expect(holder.landed.size).to.equal(0);
    holder.ready = true;
    await access.flush();
    expect(holder.landed.get(4096)).to.equal(7);
  });

  it('flushes one range on a local stack, and everything through a remote holder (which has no targeted flush)', async () => {
    const clock = new ManualClock();
    const calls: string[] = [];
    const local = {
      readBlocks: async () => undefined,
      enqueueBlocks: () => undefined,
      flush: async () => void calls.push('local flush'),
      flushBlocks: async (offset: number, length: number) => void calls.push(`local ${offset}+${length}`),
    };
    const access = new ArrayAccess(local, false, 1000, clock);
    await access.flushBlocks(8192, 4096);
    expect(calls).to.deep.equal(['local 8192+4096']);
    const holder = new FakeHolder();
    holder.ready = true;
    access.switchTo(new RemoteArray(() => holder.link), true);
    access.enqueueBlocks(4096, block(5));
    await access.flushBlocks(4096, 4096);
    expect(holder.landed.get(4096)).to.equal(5);
    expect(calls).to.deep.equal(['local 8192+4096']);
  });

  it('flushes the range again on the new target when the array changed hands during a targeted flush', async () => {
    const clock = new ManualClock();
    const calls: string[] = [];
    let access: ArrayAccess | null = null;
    const second = { readBlocks: async () => undefined, enqueueBlocks: () => undefined, flush: async () => void calls.push('second flush'), flushBlocks: async (offset: number) => void calls.push(`second ${offset}`) };
    const first = {
      readBlocks: async () => undefined,
      enqueueBlocks: () => undefined,
      flush: async () => void calls.push('first flush'),
      flushBlocks: async (offset: number) => {
        calls.push(`first ${offset}`);
        access?.switchTo(second, false);
      },
    };
    access = new ArrayAccess(first, false, 1000, clock);
    await access.flushBlocks(0, 4096);
    expect(calls).to.deep.equal(['first 0', 'second 0']);
  });
});
