// Proves, on a fixed set of seeds, that each fuzz target holds every oracle of test/fuzz/: the NBD
// handshake (OptionFramer + Negotiator), the NBD request framer, the partner framer, and a running
// NBD server under hostile sessions beside a model client. A failure lists each seed's problems
// and the command that replays it.
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { handshakeTarget, partnerTarget, requestsTarget } from './decoder-targets.js';
import { describeFinding, writeFinding } from './findings.js';
import type { FuzzTarget } from './fuzz-target.js';
import { iterationSeed } from './random.js';
import { BOUNDED_PROFILE, serverTarget } from './server-target.js';

/** Fixed, so the suite is the same run every time; `npm run fuzz` explores new seeds. */
const BASE_SEED = 0x5eed_f022;
/** Failing inputs go here (hex), beside the seed in the failure message. */
const FINDINGS_DIRECTORY = path.join(os.tmpdir(), 'ftvm-fuzz-findings');

async function failuresOf(target: FuzzTarget, cases: number, replayOptions?: string): Promise<string[]> {
  const failures: string[] = [];
  try {
    for (let index = 0; index < cases; index++) {
      const seed = iterationSeed(BASE_SEED, index);
      const result = await target.runCase(seed);
      if (result.problems.length === 0) continue;
      const finding = { target: target.name, seed, result, replayOptions };
      failures.push(`${describeFinding(finding)}\n  written: ${writeFinding(FINDINGS_DIRECTORY, finding)}`);
    }
  } finally {
    await target.close();
  }
  return failures;
}

describe('fuzz: bounded run on fixed seeds', function () {
  this.timeout(60_000);

  it('nbd-handshake: 1000 sessions under three chunkings each', async () => {
    const failures = await failuresOf(handshakeTarget(), 1000);
    expect(failures, failures.slice(0, 5).join('\n')).to.deep.equal([]);
  });

  it('nbd-requests: 600 request streams under three chunkings each', async () => {
    const failures = await failuresOf(requestsTarget(), 600);
    expect(failures, failures.slice(0, 5).join('\n')).to.deep.equal([]);
  });

  it('partner: 500 frame streams under three chunkings each, with round trips', async () => {
    const failures = await failuresOf(partnerTarget(), 500);
    expect(failures, failures.slice(0, 5).join('\n')).to.deep.equal([]);
  });

  it('server: 5 rounds of hostile sessions beside a model client', async () => {
    const failures = await failuresOf(serverTarget(BOUNDED_PROFILE), 5, '--profile bounded');
    expect(failures, failures.slice(0, 5).join('\n')).to.deep.equal([]);
  });
});
