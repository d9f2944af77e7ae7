// Proves the volume switch lets requests ride over a change of owner: an unavailable owner is retried
// until a new target is set, a pause holds new requests while drain waits for running ones, other
// errors pass through, and nothing is acknowledged once the node may not acknowledge.
import { expect } from 'chai';
import { OwnerUnavailableError, VolumeSwitch, localView } from '../../../src/cluster/volume-switch.js';
import { VolumeError, type Volume } from '../../../src/volume/index.js';

function fakeVolume(write: (offset: number) => Promise<void>): Volume {
  return {
    sizeBytes: 1 << 20,
    flushCoversAllConnections: true,
    read: async () => undefined,
    write: (offset) => write(offset),
    flush: async () => undefined,
    trim: async () => undefined,
    zero: async () => undefined,
    cache: async () => undefined,
    blockStatus: async (_offset, lengthBytes) => [{ lengthBytes, flags: 0 }],
    close: async () => undefined,
  };
}

describe('volume switch', () => {
  it('retries a write whose owner is unavailable on the target set next', async () => {
    const served: string[] = [];
    const gone = fakeVolume(async () => {
      throw new OwnerUnavailableError('owner gone');
    });
    const next = fakeVolume(async (offset) => void served.push(`next ${offset}`));
    const volumeSwitch = new VolumeSwitch('v', 1 << 20, gone, () => true, 5000);
    const write = volumeSwitch.write(4096, [Buffer.alloc(1)], false);
    await new Promise((resolve) => setTimeout(resolve, 30));
    volumeSwitch.setTarget(next);
    await write;
    expect(served).to.deep.equal(['next 4096']);
  });

  it('gives up after retryMs and passes other errors through at once', async () => {
    const gone = fakeVolume(async () => {
      throw new OwnerUnavailableError('owner gone');
    });
    const short = new VolumeSwitch('v', 1 << 20, gone, () => true, 50);
    let error: unknown = null;
    await short.write(0, [Buffer.alloc(1)], false).catch((caught: unknown) => (error = caught));
    expect(error).to.be.instanceOf(OwnerUnavailableError);
    let calls = 0;
    const failing = new VolumeSwitch('v', 1 << 20, fakeVolume(async () => {
      calls++;
      throw new VolumeError('ENOSPC', 'full');
    }), () => true, 5000);
    await failing.write(0, [Buffer.alloc(1)], false).catch((caught: unknown) => (error = caught));
    expect([calls, (error as VolumeError).code]).to.deep.equal([1, 'ENOSPC']);
  });

  it('reads take one attempt straight to the target; a refused one is retried on the next target, drain waits for a running one, other errors pass at once', async () => {
    const log: string[] = [];
    const reading = (name: string, read: (offset: number) => Promise<void>): Volume => ({ ...fakeVolume(async () => undefined), read: (offset) => (log.push(`${name} ${offset}`), read(offset)) });
    const gone = reading('gone', async () => {
      throw new OwnerUnavailableError('owner gone');
    });
    let finish: () => void = () => undefined;
    const next = reading('next', () => new Promise<void>((resolve) => (finish = resolve)));
    const volumeSwitch = new VolumeSwitch('v', 1 << 20, gone, () => true, 5000);
    const read = volumeSwitch.read(4096, Buffer.alloc(1));
    await new Promise((resolve) => setTimeout(resolve, 30));
    volumeSwitch.setTarget(next);
    await new Promise((resolve) => setImmediate(resolve));
    let drained = false;
    const drain = volumeSwitch.drain().then(() => (drained = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(drained, 'the retried read still runs').to.equal(false);
    finish();
    await Promise.all([read, drain]);
    expect(log[0]).to.equal('gone 4096');
    expect(log[log.length - 1]).to.equal('next 4096');
    const thrower = new VolumeSwitch('v', 1 << 20, { ...fakeVolume(async () => undefined), read: () => {
      throw new VolumeError('EIO', 'synchronously');
    } }, () => true, 5000);
    const error = await thrower.read(0, Buffer.alloc(1)).catch((caught: unknown) => caught);
    expect((error as VolumeError).message).to.equal('synchronously');
    let drainedAfter = false;
    await thrower.drain().then(() => (drainedAfter = true));
    expect(drainedAfter, 'a failed read does not stay counted as running').to.equal(true);
  });

  it('pause holds new requests, drain waits for running ones, resume lets the held ones go to the new target', async () => {
    const log: string[] = [];
    let finishFirst: () => void = () => undefined;
    const first = fakeVolume((offset) => new Promise<void>((resolve) => (finishFirst = () => (log.push(`first ${offset}`), resolve()))));
    const second = fakeVolume(async (offset) => void log.push(`second ${offset}`));
    const volumeSwitch = new VolumeSwitch('v', 1 << 20, first, () => true);
    const running = volumeSwitch.write(1, [Buffer.alloc(1)], false);
    volumeSwitch.pause();
    const held = volumeSwitch.write(2, [Buffer.alloc(1)], false);
    let drained = false;
    const drain = volumeSwitch.drain().then(() => (drained = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(drained).to.equal(false);
    finishFirst();
    await drain;
    volumeSwitch.setTarget(second);
    volumeSwitch.resume();
    await Promise.all([running, held]);
    expect(log).to.deep.equal(['first 1', 'second 2']);
  });

  it('refuses to acknowledge once the node may not, and the local view refuses once the volume moved on', async () => {
    let mayAcknowledge = true;
    const local = fakeVolume(async () => undefined);
    const volumeSwitch = new VolumeSwitch('v', 1 << 20, local, () => mayAcknowledge);
    const view = localView(volumeSwitch, local);
    await view.write(0, [Buffer.alloc(1)], false);
    mayAcknowledge = false;
    let error: unknown = null;
    await volumeSwitch.write(0, [Buffer.alloc(1)], false).catch((caught: unknown) => (error = caught));
    expect((error as Error).message).to.match(/lost its lease/);
    volumeSwitch.setTarget(fakeVolume(async () => undefined));
    error = null;
    await view.read(0, Buffer.alloc(1)).catch((caught: unknown) => (error = caught));
    expect(error).to.be.instanceOf(OwnerUnavailableError);
  });

  it('copies resident bytes synchronously only while open, and through the local view only while the volume is served here', () => {
    const local: Volume = { ...fakeVolume(async () => undefined), readResident: (offset, into) => into.fill(offset & 0xff).length > 0 };
    const volumeSwitch = new VolumeSwitch('v', 1 << 20, local, () => true);
    const view = localView(volumeSwitch, local);
    const into = Buffer.alloc(4);
    expect(view.readResident?.(7, into)).to.equal(true);
    expect([...into]).to.deep.equal([7, 7, 7, 7]);
    // Paused (a failback or Fig. 9 waits for what runs): nothing is served past the gate.
    volumeSwitch.pause();
    expect(volumeSwitch.readResident(7, into)).to.equal(false);
    expect(view.readResident?.(7, into)).to.equal(false);
    volumeSwitch.resume();
    expect(volumeSwitch.readResident(9, into)).to.equal(true);
    // Moved on: the local view no longer answers from here, though the new target could.
    volumeSwitch.setTarget({ ...fakeVolume(async () => undefined), readResident: () => true });
    expect(view.readResident?.(7, into)).to.equal(false);
    expect(volumeSwitch.readResident(7, into)).to.equal(true);
  });
});
