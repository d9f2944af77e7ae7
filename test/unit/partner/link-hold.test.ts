// Proves the forwarding side's hold: while more than FORWARD_HOLD_MIN_IN_FLIGHT forwarded requests
// of a link await answers, the next reads wait for the peer's next frame (or HOLD_MS on the link's
// clock) and leave together in one socket write; below that each leaves at once, and any other
// message (a page clean, a forwarded write) ends a hold at once.
import { expect } from 'chai';
import { silentLogger } from '../../../src/observe/index.js';
import { connectPartner, FORWARD_HOLD_MIN_IN_FLIGHT, IoOp, MessageType, PartnerListener, type Message, type PartnerLink } from '../../../src/partner/index.js';
import { ManualClock } from '../../support/manual-clock.js';
import { testContext } from '../../support/partner-security.js';

const CLUSTER = '5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6';
const A = { clusterId: CLUSTER, nodeId: 1, epoch: 5 };
const B = { clusterId: CLUSTER, nodeId: 2, epoch: 5 };
const VOLUME = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** A few turns: enough for a frame written now to arrive and be handled on loopback. */
async function settle(): Promise<void> {
  for (let index = 0; index < 5; index++) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('partner link: forwarded requests held for the peer\'s next frame', function () {
  this.timeout(20_000);
  const logger = silentLogger();
  let listener: PartnerListener;
  let client: PartnerLink;
  let clock: ManualClock;
  /** Each forwarded read the served side received, answered when its resolver is called. */
  let parked: Array<() => void>;

  beforeEach(async () => {
    parked = [];
    clock = new ManualClock();
    let served: PartnerLink | null = null;
    listener = new PartnerListener(
      testContext(
        A,
        (message, link) => {
          if (message.type !== MessageType.ForwardedIo) return null;
          return new Promise<Message>((resolve) => parked.push(() => resolve({ type: MessageType.IoData, requestId: message.requestId, data: link.payloads.take(message.length).fill(1) })));
        },
        logger,
      ),
    );
    listener.onLink = (link) => (served = link);
    await listener.listen({ host: '127.0.0.1', port: 0 });
    client = await connectPartner({ host: '127.0.0.1', port: listener.port, nodeId: A.nodeId }, { ...testContext(B, () => null, logger), clock });
    await until(() => served !== null, 'the listener side of the link');
  });

  afterEach(async () => {
    client.close('test over');
    await listener.close();
  });

  const read = (offset: number): Promise<Message> => client.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: VOLUME, offset, length: 4096, fua: false, data: Buffer.alloc(0) });

  it('sends each request at once below the threshold, holds the next ones until an answer arrives, then sends them in one write', async () => {
    const replies: Array<Promise<Message>> = [];
    const writesBefore = client.statistics.socketWrites;
    for (let index = 0; index < FORWARD_HOLD_MIN_IN_FLIGHT; index++) {
      replies.push(read(index * 4096));
      await turn();
    }
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT, 'the first requests to arrive, none held');
    expect(client.statistics.socketWrites - writesBefore, 'one write per request below the threshold').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT);
    for (let index = 0; index < 4; index++) {
      replies.push(read((100 + index) * 4096));
      await turn();
    }
    await settle();
    expect(parked.length, 'the requests past the threshold are held').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT);
    (parked[0] as () => void)();
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT + 4, 'the held requests to leave once an answer came');
    expect(client.statistics.socketWrites - writesBefore, 'the four held requests in one write').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT + 1);
    for (const answer of parked.slice(1)) answer();
    for (const reply of await Promise.all(replies)) client.release(reply);
  });

  it('sends a held request after HOLD_MS on the link\'s clock when no answer comes, and at once when another message is queued', async () => {
    const replies: Array<Promise<Message>> = [];
    for (let index = 0; index <= FORWARD_HOLD_MIN_IN_FLIGHT; index++) {
      replies.push(read(index * 4096));
      await turn();
    }
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT, 'the requests below the threshold');
    await settle();
    expect(parked.length, 'the one past the threshold is held').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT);
    clock.advance(1);
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT + 1, 'the held request to leave when its time is up');
    replies.push(read(500 * 4096));
    await turn();
    await settle();
    expect(parked.length, 'held again').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT + 1);
    client.send({ type: MessageType.PageClean, allocation: VOLUME, virtualPage: 0, version: 1, pageCount: 1 });
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT + 2, 'a page clean to end the hold');
    replies.push(read(501 * 4096));
    await turn();
    await settle();
    expect(parked.length, 'held once more').to.equal(FORWARD_HOLD_MIN_IN_FLIGHT + 2);
    replies.push(client.request({ type: MessageType.ForwardedIo, op: IoOp.Write, allocation: VOLUME, offset: 0, length: 4096, fua: false, data: Buffer.alloc(4096, 5) }));
    await until(() => parked.length === FORWARD_HOLD_MIN_IN_FLIGHT + 4, 'a forwarded write, never held, to end the hold');
    for (const answer of parked) answer();
    for (const reply of await Promise.all(replies)) client.release(reply);
  });
});
