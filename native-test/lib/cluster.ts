// Cluster helpers for native tests: a node's view of the cluster over its control socket, and
// waiting until a condition on it holds.
import path from 'node:path';
import { requestControl, type ClusterStatus } from '../../src/cluster/index.js';
import type { FtvmNode } from '../../test/support/ftvm-process.js';

export async function status(node: FtvmNode, name: string): Promise<ClusterStatus> {
  return (await requestControl(path.join(node.directory, `${name}.control`), { op: 'cluster' })).cluster as ClusterStatus;
}

/** Polls `probe` (a failing probe counts as false) until it is true; throws after `timeoutMs`. */
export async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
