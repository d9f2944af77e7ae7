// Proves the files in docs/packaging say what the docs claim: the example /etc/ftvm/cluster.json is a
// valid config whose control sockets land in /run/ftvm, and the systemd unit runs that config with
// the restart rules a fenced node needs.
import { expect } from 'chai';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseConfig } from '../../../src/config/index.js';
import { EXIT } from '../../../src/cli/failure.js';
import { REPO_ROOT } from '../../support/ftvm-process.js';

const PACKAGING = path.join(REPO_ROOT, 'docs', 'packaging');

describe('docs/packaging', () => {
  it('cluster.json is valid at /etc/ftvm, with control sockets in /run/ftvm', async () => {
    const raw = JSON.parse(await fs.readFile(path.join(PACKAGING, 'cluster.json'), 'utf8')) as unknown;
    const config = parseConfig(raw, '/etc/ftvm/cluster.json', '/etc/ftvm');
    expect(config.nodes.map((node) => node.control)).to.deep.equal(['/run/ftvm/a.control', '/run/ftvm/b.control']);
    expect(config.partnerLink.keyFile).to.equal('/etc/ftvm/partner.key');
  });

  it('ftvm@.service serves that config as node %i, restarts a fenced node and makes /run/ftvm', async () => {
    const unit = await fs.readFile(path.join(PACKAGING, 'ftvm@.service'), 'utf8');
    const settings = new Map<string, string>();
    for (const line of unit.split('\n')) {
      const match = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (match) settings.set(match[1] as string, match[2] as string);
    }
    expect(settings.get('ExecStart')).to.match(/^ftvm serve --config \/etc\/ftvm\/cluster\.json --node %i\b/);
    expect(settings.get('Restart')).to.equal('on-failure');
    expect(settings.get('RuntimeDirectory')).to.equal('ftvm');
    // 75 (fenced) must restart: it may not be among the codes that prevent a restart.
    const prevented = (settings.get('RestartPreventExitStatus') ?? '').split(/\s+/).map(Number);
    expect(prevented).to.not.include(EXIT.fenced);
    expect(prevented).to.include.members([EXIT.usage, EXIT.config]);
  });
});
