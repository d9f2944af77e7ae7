// Proves a forwarded read longer than one forwarded I/O settles only once every piece has: a piece
// that fails at once must not hand the caller's buffer (a pooled NBD reply) back while another
// piece's answer is still being read into it.
import { expect } from 'chai';
import { ForwardedVolume } from '../../../src/cluster/forwarded-volume.js';
import { MAX_IO_BYTES, MessageType, type Message, type PartnerLink } from '../../../src/partner/index.js';

describe('forwarded volume', () => {
  it('rejects a read of several pieces only after the last piece settled', async () => {
    let lateDone = false;
    const link = {
      request: (message: { offset: number; length: number }, into: Buffer | null): Promise<Message> => {
        if (message.offset === 0) return Promise.reject(new Error('link closed'));
        return new Promise((resolve) =>
          setTimeout(() => {
            (into as Buffer).fill(0x5a);
            lateDone = true;
            resolve({ type: MessageType.IoData, requestId: 1, data: into as Buffer } as Message);
          }, 30),
        );
      },
      release: () => undefined,
    } as unknown as PartnerLink;
    const volume = new ForwardedVolume('vol0', '11111111-2222-4333-8444-555555555555', 4 * MAX_IO_BYTES, 'a', () => link);
    const into = Buffer.alloc(2 * MAX_IO_BYTES);
    const error = await volume.read(0, into).then(
      () => null,
      (caught: Error) => caught,
    );
    expect(error?.message).to.match(/link closed/);
    expect(lateDone, 'the second piece was answered before the read failed').to.equal(true);
  });
});
