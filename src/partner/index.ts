// The partner link's wire format: message types and limits, the messages, the codec and framer.
export * from './constants.js';
export type * from './messages.js';
export {
  encodeBatch,
  encodeBatchParts,
  BY_REFERENCE_BYTES,
  commandComplete,
  encodeMessage,
  expectsResponse,
  isResponseType,
  messageTypeName,
  MessageFramer,
  pagesTouched,
  PartnerFramingError,
  type FramingFailure,
} from './codec.js';
export { checkHello, connectPartner, HELLO_TIMEOUT_MS, HelloRefusedError, LinkClosedError, PartnerLink, PartnerListener, type Identity, type RequestHandler } from './link.js';
