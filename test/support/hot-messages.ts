// Random messages of the hot partner types (write page, command complete, forwarded I/O, I/O
// data), valid by the layouts: the inputs of the tests that hold the hand-written encoders and
// decoders to the buffer-layout structs.
import { IoOp, MessageType, Status, type Message } from '../../src/partner/index.js';
import { randomBytes, randomInt } from './seeded-random.js';

const STATUSES = [Status.Ok, Status.NoSpace, Status.Locked, Status.UnknownAllocation, Status.NotResident, Status.StaleEpoch, Status.NotPartner, Status.Invalid, Status.IoError, Status.ShuttingDown];
const COMPLETABLE = [MessageType.WritePage, MessageType.LockRequest, MessageType.PageClean, MessageType.ForwardedIo, MessageType.AllocateWrite, MessageType.ResyncEnd];

export function hotMessages(random: () => number): { message: () => Message; uuid: () => string } {
  const below = (bound: number): number => randomInt(random, bound);
  const u32 = (): number => below(2 ** 16) * 2 ** 16 + below(2 ** 16);
  const u53 = (): number => below(2 ** 21) * 2 ** 32 + u32();
  const pick = <T>(values: readonly T[]): T => values[below(values.length)] as T;
  const uuid = (): string => {
    const hex = Array.from({ length: 32 }, () => below(16).toString(16)).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  };
  const bytes = (length: number): Buffer => Buffer.from(randomBytes(random, length));
  const message = (): Message => {
    const requestId = u32();
    switch (below(4)) {
      case 0: {
        const pageBytes = pick([4096, 65536]);
        const zeroFill = below(4) === 0;
        const offset = below(pageBytes);
        const length = below(3) === 0 ? 0 : 1 + below(Math.min(3 * pageBytes, 1 << 20) - offset);
        // Data in pieces sometimes: the tail is gathered either way.
        const data = zeroFill ? Buffer.alloc(0) : below(2) === 0 ? bytes(length) : [bytes(Math.floor(length / 2)), bytes(length - Math.floor(length / 2))];
        return { type: MessageType.WritePage, requestId, allocation: uuid(), virtualPage: u53(), version: u53(), pageBytes, offset, length, dirty: below(2) === 0, zeroFill, data };
      }
      case 1:
        return { type: MessageType.CommandComplete, requestId, requestType: pick(COMPLETABLE), status: pick(STATUSES) };
      case 2: {
        const op = pick([IoOp.Probe, IoOp.Read, IoOp.Write, IoOp.Flush, IoOp.Zero, IoOp.Trim]);
        const length = op === IoOp.Read || op === IoOp.Write ? below(64 * 1024) : u53();
        return { type: MessageType.ForwardedIo, requestId, op, fua: below(2) === 0, allocation: uuid(), offset: u53(), length, data: op === IoOp.Write ? bytes(length) : Buffer.alloc(0) };
      }
      default:
        return { type: MessageType.IoData, requestId, data: bytes(below(20_000)) };
    }
  };
  return { message, uuid };
}
