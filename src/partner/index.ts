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
export { connectPartner, FORWARD_HOLD_MIN_IN_FLIGHT, LinkClosedError, MAX_FORWARDED_IN_FLIGHT, MAX_PENDING_HANDSHAKES, PartnerLink, PartnerListener, plainAddress, type LinkContext, type RequestHandler } from './link.js';
export { DialError, tcpTransport, type LinkListening, type LinkSocket, type PartnerTransport } from './transport.js';
export { checkHello, HANDSHAKE_TIMEOUT_MS, HandshakeError, HelloRefusedError, REFUSAL_NAMES, UnprovenPeerError, type Identity, type LinkSecurity } from './introduce.js';
export { derivePartnerKey, MIN_PARTNER_SECRET_BYTES, PartnerKeyError, PARTNER_TLS_IDENTITY, proofOf, type PartnerKey } from './handshake.js';
