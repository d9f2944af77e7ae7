// What the runner, the CLI and the tests need from a fuzz target: one case per seed, replayable.
import type { Problem } from './decoder-checks.js';

export const TARGET_NAMES = ['nbd-handshake', 'nbd-requests', 'partner', 'server'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export interface CaseResult {
  problems: Problem[];
  /** The case's input: one stream for a decoder, one per connection for a server round. */
  inputs: Buffer[];
  /** Anything else a replay needs (a decoder's payload limit, a round's shape). */
  params: Record<string, number | string | boolean>;
}

export interface FuzzTarget {
  readonly name: TargetName;
  /** Generates the case for `seed`, runs it, and checks every oracle. */
  runCase(seed: number): Promise<CaseResult>;
  /** Runs given bytes (from a finding file or a regression vector) through the same oracles. */
  replay(inputs: readonly Buffer[], params: CaseResult['params'], seed: number): Promise<CaseResult>;
  close(): Promise<void>;
}
