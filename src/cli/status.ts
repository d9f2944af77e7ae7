// `ftvm status --control SOCKET`: what one running node says about the cluster: the array holder,
// the write mode (mirrored write-back or write-through), epoch, partners, volumes, their owners now
// and their home nodes.
import type { ClusterStatus } from '../cluster/index.js';
import { askNode } from './control-client.js';

export async function status(options: { control: string; json: boolean }): Promise<void> {
  const result = await askNode(options.control, { op: 'cluster' });
  if (!result.ok || !result.cluster) throw new Error(`node at ${options.control}: ${result.error ?? 'no cluster status'}`);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(result.cluster, null, 2)}\n`);
    return;
  }
  process.stdout.write(formatStatus(result.cluster));
}

export function formatStatus(cluster: ClusterStatus): string {
  const lines = [
    `cluster ${cluster.cluster}, node ${cluster.node}`,
    `  mode:          ${cluster.mode === 'mirrored' ? 'mirrored (writes acknowledged once every live partner holds them)' : 'write-through (no live partner: writes acknowledged once on the disks)'}`,
    `  array holder:  ${cluster.arrayHolder}`,
    `  epoch:         ${cluster.epoch} (lease good for ${cluster.leaseRemainingMs} ms without renewal)`,
    `  partners:      ${cluster.partners.map((partner) => `${partner.name} ${partner.live ? 'live' : 'down'}`).join(', ') || 'none'}`,
    `  pages:         ${cluster.residentPages} resident, ${cluster.dirtyPages} dirty, ${cluster.mirroredPages} mirrored for partners`,
    `  resync:        ${cluster.resync === 'done' ? 'done (partners hold no stale mirrors of this node)' : cluster.resync === 'running' ? 'running (flushing, then partners drop stale mirrors; write-throughs wait)' : 'failed (the disks were out of reach; retried at the next join)'}`,
    '  volumes:',
    ...cluster.volumes.map(
      (volume) => `    ${volume.name}  owner ${volume.owner}${volume.owner === cluster.node ? ' (this node)' : ''}  home ${volume.home}  ${volume.state}  page ${volume.pageBytes / 1024} KiB`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}
