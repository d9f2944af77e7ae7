// Proves docs/operations.md lists exactly the metrics a node registers (name, type, labels) and
// exactly the event kinds it emits, each with an example line that parses as that kind.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLUSTER_EVENT_KINDS, ClusterEvents, NodeMetrics } from '../../../src/observe/index.js';

const OPERATIONS = path.join(fileURLToPath(new URL('../../../../', import.meta.url)), 'docs', 'operations.md');

/** The table rows of a `## title` section: cells without their backquotes. */
async function tableRows(title: string): Promise<string[][]> {
  const text = await fs.readFile(OPERATIONS, 'utf8');
  const start = text.indexOf(`\n## ${title}\n`);
  expect(start, `section ${title}`).to.be.greaterThan(0);
  const end = text.indexOf('\n## ', start + 1);
  return text
    .slice(start, end < 0 ? undefined : end)
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => line.split('|').slice(1, -1).map((cell) => cell.trim()));
}

describe('docs/operations.md matches the code', () => {
  it('Metrics: every ftvm_ metric with its type and labels, and nothing else', async () => {
    const documented = (await tableRows('Metrics')).map(([name, type, labels]) => ({
      name: (name as string).replace(/`/g, ''),
      type: type as string,
      labels: (labels as string).replace(/`/g, '').split(',').map((label) => label.trim()).filter(Boolean),
    }));
    const metrics = new NodeMetrics('a', ['b'], new ClusterEvents('a'));
    const registered = (await metrics.registry.getMetricsAsJSON())
      .filter((metric) => metric.name.startsWith('ftvm_'))
      .map((metric) => ({
        name: metric.name,
        type: String(metric.type),
        labels: [...((metrics.registry.getSingleMetric(metric.name) as unknown as { labelNames: string[] }).labelNames ?? [])],
      }));
    const byName = (a: { name: string }, b: { name: string }): number => a.name.localeCompare(b.name);
    expect(documented.sort(byName)).to.deep.equal(registered.sort(byName));
  });

  it('Events: every kind, each with an example of that kind', async () => {
    const rows = await tableRows('Events');
    expect(rows.map(([kind]) => (kind as string).replace(/`/g, ''))).to.deep.equal([...CLUSTER_EVENT_KINDS]);
    for (const [kind, , example] of rows) {
      const event = JSON.parse((example as string).replace(/^`|`$/g, '')) as Record<string, unknown>;
      expect(event.kind).to.equal((kind as string).replace(/`/g, ''));
      expect(Object.keys(event).slice(0, 3)).to.deep.equal(['time', 'node', 'kind']);
    }
  });
});
