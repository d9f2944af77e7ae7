// Proves the benchmark plots show what the bench wrote: one bar per job and set-up at its ratio, one
// line per failover run with the kill at 0, and fio's latency log read as write completions.
import { expect } from 'chai';
import { completionRate, parseClatLog, ratioChart, shortCommand, ticks, timelineChart, type BenchReport } from '../../../scripts/plot-bench.js';

const row = (job: string, setup: string, ratio: number): BenchReport['rows'][number] => ({
  job,
  setup,
  names: ['ftvm', 'nbdkit'],
  ours: { iops: ratio * 1000, bytesPerSecond: 0 },
  theirs: { iops: 1000, bytesPerSecond: 0 },
  ratio,
});

describe('plot-bench', () => {
  it('picks round tick steps', () => {
    expect(ticks(1.32)).to.deep.equal([0, 0.5, 1]);
    expect(ticks(48000, 4)).to.deep.equal([0, 20000, 40000]);
    expect(ticks(60000, 4)).to.deep.equal([0, 20000, 40000, 60000]);
    expect(ticks(0)).to.deep.equal([0]);
  });

  it('draws one bar per job and set-up, labelled with its ratio; TLS rows are not against nbdkit and stay out', () => {
    const report: BenchReport = {
      date: '2026-12-06T10:00:00Z',
      commit: 'abc1234',
      command: 'scripts/bench --modes mirrored,forwarded & more',
      rows: [
        row('4k randread QD32', '2 nodes, via owner', 0.86),
        row('4k randread QD32', '2 nodes, via partner', 0.14),
        row('1M seq write QD8', '2 nodes, via owner', 0.11),
        row('1M seq write QD8', '2 nodes, via partner', 0.06),
        { ...row('4k read QD32 via owner', 'nbdcopy', 0.7), names: ['TLS', 'plain'] },
      ],
    };
    const chart = ratioChart([report], 'ratios');
    expect(chart.match(/<rect [^>]*><title>/g)).to.have.length(4);
    for (const label of ['0.86', '0.14', '0.11', '0.06']) expect(chart).to.include(`>${label}</text>`);
    expect(chart).to.not.include('0.70');
    expect(chart).to.include('scripts/bench --modes mirrored,forwarded &amp; more');
    expect(shortCommand('scripts/bench --seconds 5 --markdown --json /tmp/x.json --modes tls')).to.equal('scripts/bench --seconds 5 --modes tls');
    expect(chart).to.include('commit abc1234');
    // A bar twice the ratio is twice as tall.
    const heights = [...chart.matchAll(/height="([\d.]+)" fill="#[0-9A-F]+"><title>4k randread QD32 \(2 nodes, via (owner|partner)\)/g)].map((match) => Number(match[1]));
    expect((heights[0] as number) / (heights[1] as number)).to.be.closeTo(0.86 / 0.14, 0.05);
    expect(chart.trim()).to.match(/^<svg [^]*<\/svg>$/);
    // XML allows each attribute once per element (a repeated font-size made the file unreadable).
    for (const tag of chart.match(/<[a-z]+ [^>]*>/g) ?? []) {
      const names = [...tag.matchAll(/ ([a-z-]+)="/g)].map((match) => match[1]);
      expect(new Set(names).size, tag).to.equal(names.length);
    }
  });

  it('draws the median of several runs with a whisker from the lowest to the highest', () => {
    const run = (ratio: number): BenchReport => ({ date: '2026-12-06T10:00:00Z', commit: null, command: 'scripts/bench', rows: [row('4k randread QD32', '2 nodes, via owner', ratio)] });
    const chart = ratioChart([run(0.4), run(0.9), run(0.5)], 'ratios');
    expect(chart).to.include('>0.50</text>');
    expect(chart).to.include('(runs: 0.40, 0.90, 0.50)');
    expect(chart.match(/<line [^>]*stroke="#000"\/>/g)?.length, 'whisker and its two caps, and the axis').to.equal(4);
    expect(chart).to.include('bars: median of the runs that measured the set-up');
  });

  it('says one run per set-up when the runs measured different set-ups, and draws no whisker', () => {
    const run = (setup: string, ratio: number): BenchReport => ({ date: '2026-12-06T10:00:00Z', commit: null, command: 'scripts/bench', rows: [row('4k randread QD32', setup, ratio)] });
    const chart = ratioChart([run('2 nodes, via owner', 1.07), run('2 nodes, via partner', 0.62)], 'ratios');
    expect(chart).to.include('bars: one run per set-up');
    expect(chart).to.not.include('median');
    expect(chart.match(/<line [^>]*stroke="#000"\/>/g)?.length, 'only the axis').to.equal(1);
  });

  it('reads write completions (direction 1) out of a fio latency log, relative to the kill', () => {
    const log = ['1000, 51548, 1, 4096, 0', '1001, 51000, 0, 4096, 0', '1700, 52000, 1, 4096, 0', ''].join('\n');
    expect(parseClatLog(log, 1200)).to.deep.equal([-200, 500]);
  });

  it('bins completions into a rate per second', () => {
    expect(completionRate([-120, -110, -10, 40, 260], -200, 200, 100)).to.deep.equal([20, 10, 10, 0]);
  });

  it('draws one line per run and marks the kill at 0', () => {
    const timelines = [0, 1].map(() => ({ mode: 'kill' as const, pauseMs: 700, completionsMs: [-500, -400, 800, 900] }));
    const chart = timelineChart([{ mode: 'kill', report: null, timelines }]);
    expect(chart.match(/<polyline /g)).to.have.length(2);
    expect(chart).to.include('>kill -9</text>');
  });
});
