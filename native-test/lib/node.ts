// Test-node helpers: wait for an exit or a log line, and a cleanup that never waits long (SIGTERM, short grace, SIGKILL).
import fs from 'node:fs/promises';
import type { FtvmNode } from '../../test/support/ftvm-process.js';

/** Resolves true when the node's process exits within `timeoutMs`. */
export function waitForExit(node: FtvmNode, timeoutMs: number): Promise<boolean> {
  const { child } = node;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Polls the node's log (its stderr arrives asynchronously) until it contains `text`. */
export async function waitForLog(node: FtvmNode, text: string | RegExp, timeoutMs: number): Promise<boolean> {
  const found = (): boolean => (typeof text === 'string' ? node.log().includes(text) : text.test(node.log()));
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
    if (found()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return found();
}

/** Stops a node for an after() hook: SIGTERM, SIGKILL after `graceMs`, then removes its directory. */
export async function shutDown(node: FtvmNode | undefined, graceMs = 2000): Promise<void> {
  if (!node) return;
  if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill('SIGTERM');
  if (!(await waitForExit(node, graceMs))) await node.kill();
  await fs.rm(node.directory, { recursive: true, force: true });
}
