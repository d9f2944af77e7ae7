// A partner key and link policy for tests that build links by hand: one fixed key, every node id
// admitted from any (loopback) address, epochs plausible up to a bound a test can step over.
import { systemClock } from '../../src/core/index.js';
import type { Logger } from '../../src/observe/index.js';
import { derivePartnerKey, tcpTransport, type Identity, type LinkContext, type LinkSecurity, type RequestHandler } from '../../src/partner/index.js';

export const TEST_PARTNER_SECRET = Buffer.from('a partner secret for tests only, 32+ bytes long', 'utf8');
/** Epochs above this are implausible under testSecurity(). */
export const TEST_EPOCH_LIMIT = 1000;

export function testSecurity(overrides: Partial<LinkSecurity> = {}): LinkSecurity {
  return {
    key: derivePartnerKey(TEST_PARTNER_SECRET),
    tls: false,
    admits: () => true,
    knownAddress: () => true,
    plausibleEpoch: (epoch) => Number.isSafeInteger(epoch) && epoch <= TEST_EPOCH_LIMIT,
    ...overrides,
  };
}

/** What a hand-built link needs: TCP (or TLS-PSK when the policy says so), the system clock. */
export function testContext(local: Identity, handler: RequestHandler, logger: Logger, security: LinkSecurity = testSecurity()): LinkContext {
  return { local, security, transport: tcpTransport(security.tls ? security.key : null), handler, logger, clock: systemClock };
}
