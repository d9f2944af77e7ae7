// Partner link authentication: nothing from a link counts before both ends proved they hold the
// cluster's partner key, and a stranger learns nothing by trying.
//
//   connector                                   listener
//     challenge {version, nonce C}  ───────────>                  (anything else: closed, nothing sent)
//                                   <─────────── challenge {version, nonce L}
//     hello {identity, proof}       ───────────>  checks proof; a bad one: closed, nothing sent
//                                   <─────────── hello reply {identity, proof} | hello refusal {reason, identity, proof}
//   checks proof; a bad one: closed, the refusal not believed
//
//   proof = HMAC-SHA256(auth key, label ‖ type ‖ nonce C ‖ nonce L ‖ the frame with its proof zeroed)
//
// Both nonces are fresh per link, so no proof can be replayed on another link, and each proof covers
// the identity it comes with (node id, epoch), so none can be cut out and put under another. The
// message type is in the proof, so a hello cannot be reflected back as a reply. This is DRBD's
// cram-hmac idea made mutual and bound to the hello. It authenticates the ends of a TCP connection;
// it does not protect the frames after it from someone who can inject into that connection (on
// the path between two hosts): that is what the link's TLS is for (on by default across hosts).
//
// The partner key file holds the shared secret; two keys are derived from it, one for these proofs
// and one for TLS-PSK, so the secret itself is never used for two purposes.
import { InputError } from '../core/index.js';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { encodeMessage } from './codec.js';
import { NONCE_BYTES, PROOF_BYTES } from './constants.js';
import type { Hello, HelloRefusal, HelloReply } from './messages.js';

/** A partner key file must hold at least this many bytes (32 bytes of entropy as 64 hex digits is what `ftvm keygen` writes). */
export const MIN_PARTNER_SECRET_BYTES = 32;

/** The TLS-PSK identity of a partner link: one key per cluster, so the identity only names the purpose. */
export const PARTNER_TLS_IDENTITY = 'ftvm-partner';

const PROOF_LABEL = Buffer.from('ftvm partner link proof\0', 'utf8');
const ZERO_PROOF = Buffer.alloc(PROOF_BYTES);

export interface PartnerKey {
  /** For handshake proofs. */
  readonly auth: Buffer;
  /** The TLS-PSK key of encrypted links. */
  readonly tls: Buffer;
}

export class PartnerKeyError extends InputError {
  override name = 'PartnerKeyError';
}

/** The two keys of a partner secret (the trimmed contents of the partner key file). */
export function derivePartnerKey(secret: Buffer): PartnerKey {
  if (secret.length < MIN_PARTNER_SECRET_BYTES) {
    throw new PartnerKeyError(`a partner key must hold at least ${MIN_PARTNER_SECRET_BYTES} bytes, this one holds ${secret.length}`);
  }
  const derive = (purpose: string): Buffer => createHmac('sha256', secret).update(`ftvm partner ${purpose}`, 'utf8').digest();
  return { auth: derive('authentication'), tls: derive('tls psk') };
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

type Introduction = Hello | HelloReply | HelloRefusal;

/** The proof an introduction must carry on the link whose challenges were `connectorNonce` and `listenerNonce`. */
export function proofOf(key: PartnerKey, message: Introduction, connectorNonce: Buffer, listenerNonce: Buffer): Buffer {
  const type = Buffer.alloc(2);
  type.writeUInt16BE(message.type);
  return createHmac('sha256', key.auth)
    .update(PROOF_LABEL)
    .update(type)
    .update(connectorNonce)
    .update(listenerNonce)
    .update(encodeMessage({ ...message, proof: ZERO_PROOF }))
    .digest();
}

/** Constant time: how much of a guess was right must not show in how long the check took. */
export function proofHolds(key: PartnerKey, message: Introduction, connectorNonce: Buffer, listenerNonce: Buffer): boolean {
  const expected = proofOf(key, message, connectorNonce, listenerNonce);
  return message.proof.length === expected.length && timingSafeEqual(message.proof, expected);
}

/** `message` with its proof filled in. */
export function signed<M extends Introduction>(key: PartnerKey, message: M, connectorNonce: Buffer, listenerNonce: Buffer): M {
  return { ...message, proof: proofOf(key, message, connectorNonce, listenerNonce) };
}
