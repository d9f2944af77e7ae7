// `ftvm status --control SOCKET`: what one running node says about the cluster: the array holder,
// the write mode (mirrored write-back or write-through), epoch, partners, volumes, their owners now
// and their home nodes; on the array holder the array's state, and a rebuild, replace or scrub
// running there with its rate and ETA. `--watch` redraws it every second.
import type { ClusterStatus, ControlResult, RunningOperation } from '../cluster/index.js';
import type { ArrayStatus } from '../storage/index.js';
import { askNode } from './control-client.js';

export const WATCH_INTERVAL_MS = 1000;
/** Home, clear screen: a redraw in place, as watch(1) does. */
const CLEAR = '\x1b[H\x1b[2J';

export async function status(options: { control: string; json: boolean; watch?: boolean }): Promise<void> {
  if (options.watch) return watchStatus(options.control, options.json);
  process.stdout.write(render(await ask(options.control), options.json));
}

async function ask(control: string): Promise<ControlResult & { cluster: ClusterStatus }> {
  const result = await askNode(control, { op: 'cluster' });
  if (!result.ok || !result.cluster) throw new Error(`node at ${control}: ${result.error ?? 'no cluster status'}`);
  return result as ControlResult & { cluster: ClusterStatus };
}

function render(result: ControlResult & { cluster: ClusterStatus }, json: boolean): string {
  if (json) return `${JSON.stringify(result.cluster, null, 2)}\n`;
  return formatStatus(result.cluster, { array: result.status, operation: result.operation });
}

/**
 * Until Ctrl-C (exit 0: nothing failed when the user stopped watching). A node that stops answering is shown as such and asked again each second,
 * so a watch left open over a restart picks the node up again. With --json: one line per second.
 */
async function watchStatus(control: string, json: boolean): Promise<void> {
  let stopped = false;
  let wake: () => void = () => undefined;
  const stop = (): void => {
    stopped = true;
    wake();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    while (!stopped) {
      const at = new Date().toISOString();
      let body: string;
      try {
        const result = await ask(control);
        body = json ? `${JSON.stringify({ time: at, ...result.cluster, ...(result.operation ? { operation: result.operation } : {}) })}\n` : `${at}  (every ${WATCH_INTERVAL_MS / 1000} s; Ctrl-C stops)\n${render(result, false)}`;
      } catch (error) {
        const line = error instanceof Error ? error.message : String(error);
        body = json ? `${JSON.stringify({ time: at, error: line })}\n` : `${at}  (every ${WATCH_INTERVAL_MS / 1000} s; Ctrl-C stops)\nnot answering: ${line}\n`;
      }
      process.stdout.write(json ? body : `${CLEAR}${body}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, WATCH_INTERVAL_MS);
      });
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

export function formatStatus(cluster: ClusterStatus, detail: { array?: ArrayStatus; operation?: RunningOperation } = {}): string {
  const lines = [
    `cluster ${cluster.cluster}, node ${cluster.node}`,
    `  mode:          ${cluster.mode === 'mirrored' ? 'mirrored (writes acknowledged once every live partner holds them)' : 'write-through (no live partner: writes acknowledged once on the disks)'}`,
    `  array holder:  ${cluster.arrayHolder}`,
    `  epoch:         ${cluster.epoch} (lease good for ${cluster.leaseRemainingMs} ms without renewal)`,
    `  partners:      ${cluster.partners.map((partner) => `${partner.name} ${partner.live ? `live${partner.roundTripMs !== undefined ? ` (round trip ${partner.roundTripMs.toFixed(1)} ms)` : ''}` : 'down'}`).join(', ') || 'none'}`,
    `  pages:         ${cluster.residentPages} resident, ${cluster.dirtyPages} dirty, ${cluster.mirroredPages} mirrored for partners`,
    `  resync:        ${cluster.resync === 'done' ? 'done (partners hold no stale mirrors of this node)' : cluster.resync === 'running' ? 'running (flushing, then partners drop stale mirrors; write-throughs wait)' : 'failed (the disks were out of reach; retried at the next join)'}`,
    ...(detail.array ? [`  array:         ${describeArray(detail.array)}`] : []),
    ...(detail.operation ? [`  running:       ${describeOperation(detail.operation)}`] : []),
    '  volumes:',
    ...cluster.volumes.map(
      (volume) => `    ${volume.name}  owner ${volume.owner}${volume.owner === cluster.node ? ' (this node)' : ''}  home ${volume.home}  ${volume.state}  page ${volume.pageBytes / 1024} KiB`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

/** `degraded (raid5, member 1 failed)` */
function describeArray(array: ArrayStatus): string {
  const unwell = array.members.filter((member) => member.state !== 'active').map((member) => `member ${member.index} ${member.state}`);
  return `${array.state} (${[array.level, ...unwell].join(', ')})`;
}

/** `rebuild of member 1: 45.0% of 512 MiB, 12.3 MiB/s, ETA 34 s` */
export function describeOperation(operation: RunningOperation): string {
  const what = `${operation.operation}${operation.member !== undefined ? ` of member ${operation.member}` : ''}`;
  if (operation.totalBytes <= 0) return `${what}: starting`;
  const percent = ((100 * operation.doneBytes) / operation.totalBytes).toFixed(1);
  const seconds = operation.elapsedMs / 1000;
  const rate = seconds > 0 ? operation.doneBytes / seconds : 0;
  const eta = rate > 0 ? `ETA ${formatDuration((operation.totalBytes - operation.doneBytes) / rate)}` : 'ETA unknown';
  return `${what}: ${percent}% of ${mib(operation.totalBytes)}, ${mib(rate)}/s, ${eta}`;
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** `34 s`, `12 min 5 s`, `3 h 20 min` */
function formatDuration(seconds: number): string {
  const whole = Math.ceil(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}
