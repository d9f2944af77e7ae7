// `ftvm events --control SOCKET`: a node's cluster events as they happen, one JSON object per line
// on stdout (as `drbdsetup events2`), for scripts and alerting: link up/down, mode changes,
// takeovers, handovers, fencing, failed RAID members, rebuild/replace/scrub progress.
import { CliError, EXIT } from './failure.js';
import { watchNode } from './control-client.js';

export async function events(options: { control: string }): Promise<void> {
  const stream = await watchNode(options.control, (event) => process.stdout.write(`${JSON.stringify(event)}\n`));
  // On stderr, so stdout holds events alone; scripts (and tests) may wait for it.
  process.stderr.write(`ftvm: streaming the events of the node at ${options.control} (Ctrl-C stops)\n`);
  // Ctrl-C ends a watch normally (exit 0); the node going away is a failure a script must see.
  const stop = (): void => stream.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await stream.ended;
  } catch (error) {
    throw new CliError((error as Error).message, EXIT.unavailable);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
