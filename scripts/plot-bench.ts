// Plots for docs/benchmarks.md, drawn from what the bench scripts write, as plain SVG (a few dozen
// rects, lines and texts: no plotting library needed, and the files diff as text):
//   bench-ratio.svg        ftvm/nbdkit IOPS ratio per job, one bar per set-up (via owner, via
//                          partner, ...), from `scripts/bench --json FILE`
//   failover-timeline.svg  fio write completions per 50 ms around the kill -9 and the SIGSTOP of the
//                          owner, one line per run, from `scripts/failover-pause --keep-log DIR`
// Usage: node dist/scripts/plot-bench.js --bench RUN1.json [--bench RUN2.json ...] [--setups 'A;B']
//          --failover DIR [--out docs/plots]
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';

export interface BenchRow {
  job: string;
  setup: string;
  names: [string, string];
  ours: { iops: number; bytesPerSecond: number };
  theirs: { iops: number; bytesPerSecond: number };
  ratio: number;
}

export interface BenchReport {
  date: string;
  commit: string | null;
  command: string;
  rows: BenchRow[];
}

export interface FailoverRun {
  killedAtEpochMs: number;
  pauseMs: number;
  log: string;
}

export interface FailoverReport {
  date: string;
  command: string;
  mode: 'kill' | 'hang';
  runs: FailoverRun[];
  pauseMs: { median: number; min: number; max: number };
}

/** One run's write completions, in ms relative to the kill. */
export interface Timeline {
  mode: 'kill' | 'hang';
  pauseMs: number;
  completionsMs: number[];
}

/** Text attributes; one font-size per element (XML allows an attribute once). */
function font(size = 12): string {
  return `font-family="sans-serif" font-size="${size}"`;
}
/** Colour-blind-safe (Okabe-Ito). */
const COLOURS = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00'];

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function svg(width: number, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** The command as a reader would rerun it: without where the results were written. */
export function shortCommand(command: string): string {
  return command.replace(/\s--(json|keep-log)(=|\s+)\S+/g, '').replace(/\s--markdown\b/g, '');
}

function round(value: number): string {
  return String(Math.round(value * 10) / 10);
}

/** Tick values for an axis from 0 to `max`: 1, 2 or 5 times a power of ten apart, about `count` of them. */
export function ticks(max: number, count = 5): number[] {
  if (max <= 0) return [0];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= raw) as number;
  const out: number[] = [];
  for (let value = 0; value <= max + step * 1e-9; value += step) out.push(Math.round(value / step) * step);
  return out;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/**
 * Grouped bars: one group per job, one bar per set-up at the median ratio of the runs given, a
 * whisker from the lowest to the highest run when there are several (this machine's run-to-run
 * spread is large: the whisker shows it); the ratio 1 (as fast as nbdkit) is marked.
 */
export function ratioChart(reports: readonly BenchReport[], title: string): string {
  const rows = reports.flatMap((report) => report.rows.filter((row) => row.names[1] === 'nbdkit'));
  const jobs = [...new Set(rows.map((row) => row.job))];
  const setups = [...new Set(rows.map((row) => row.setup))];
  const ratiosOf = (job: string, setup: string): number[] => rows.filter((row) => row.job === job && row.setup === setup).map((row) => row.ratio);
  const width = 760;
  const height = 420;
  const left = 60;
  const right = 20;
  const top = 70;
  const bottom = 90;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const maxRatio = Math.max(1.2, ...rows.map((row) => row.ratio)) * 1.1;
  const y = (ratio: number): number => top + plotHeight - (ratio / maxRatio) * plotHeight;
  const groupWidth = plotWidth / Math.max(1, jobs.length);
  const barWidth = (groupWidth * 0.8) / Math.max(1, setups.length);
  const body: string[] = [`<text x="${width / 2}" y="22" text-anchor="middle" ${font(15)} font-weight="bold">${escape(title)}</text>`];
  const runs = reports.map((report) => `${report.date.slice(0, 16).replace('T', ' ')} UTC${report.commit ? ` (commit ${report.commit})` : ''}`);
  body.push(`<text x="${width / 2}" y="40" text-anchor="middle" ${font(11)} fill="#555">${escape(`${reports.length > 1 ? 'runs' : 'run'}: ${runs.join(', ')}`)}</text>`);
  body.push(`<text x="${width / 2}" y="54" text-anchor="middle" ${font(11)} fill="#555">${escape(shortCommand(reports[0]?.command ?? ''))}</text>`);
  for (const value of ticks(maxRatio)) {
    body.push(`<line x1="${left}" x2="${width - right}" y1="${round(y(value))}" y2="${round(y(value))}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${left - 6}" y="${round(y(value) + 4)}" text-anchor="end" ${font()}>${value.toFixed(1)}</text>`);
  }
  body.push(`<text x="16" y="${top + plotHeight / 2}" text-anchor="middle" ${font()} transform="rotate(-90 16 ${top + plotHeight / 2})">ftvm IOPS / nbdkit IOPS</text>`);
  jobs.forEach((job, jobIndex) => {
    const groupLeft = left + jobIndex * groupWidth + groupWidth * 0.1;
    setups.forEach((setup, setupIndex) => {
      const ratios = ratiosOf(job, setup);
      if (ratios.length === 0) return;
      const middle = median(ratios);
      const x = groupLeft + setupIndex * barWidth;
      const centre = x + (barWidth - 2) / 2;
      const spread = ratios.length > 1 ? ` (runs: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')})` : '';
      body.push(
        `<rect x="${round(x)}" y="${round(y(middle))}" width="${round(barWidth - 2)}" height="${round(top + plotHeight - y(middle))}" fill="${COLOURS[setupIndex % COLOURS.length]}"><title>${escape(`${job} (${setup}): ${middle.toFixed(2)}${spread}`)}</title></rect>`,
      );
      if (ratios.length > 1) {
        const low = y(Math.min(...ratios));
        const high = y(Math.max(...ratios));
        body.push(`<line x1="${round(centre)}" x2="${round(centre)}" y1="${round(low)}" y2="${round(high)}" stroke="#000"/>`);
        for (const end of [low, high]) body.push(`<line x1="${round(centre - 4)}" x2="${round(centre + 4)}" y1="${round(end)}" y2="${round(end)}" stroke="#000"/>`);
      }
      // Left of the whisker, so the label reads as the bar's height, not the whisker's top.
      const label = ratios.length > 1 ? `x="${round(x + 3)}" text-anchor="start"` : `x="${round(centre)}" text-anchor="middle"`;
      body.push(`<text ${label} y="${round(y(middle) - 4)}" ${font(10)}>${middle.toFixed(2)}</text>`);
    });
    body.push(`<text x="${round(left + (jobIndex + 0.5) * groupWidth)}" y="${top + plotHeight + 18}" text-anchor="middle" ${font()}>${escape(job)}</text>`);
  });
  body.push(`<line x1="${left}" x2="${width - right}" y1="${round(y(1))}" y2="${round(y(1))}" stroke="#000" stroke-dasharray="6 4"/>`);
  body.push(`<text x="${width - right - 4}" y="${round(y(1) - 5)}" text-anchor="end" ${font()}>as fast as nbdkit</text>`);
  body.push(`<line x1="${left}" x2="${width - right}" y1="${top + plotHeight}" y2="${top + plotHeight}" stroke="#000"/>`);
  setups.forEach((setup, index) => {
    const x = left + (index % 4) * 175;
    const legendY = height - 42 + Math.floor(index / 4) * 18;
    body.push(`<rect x="${x}" y="${legendY - 10}" width="12" height="12" fill="${COLOURS[index % COLOURS.length]}"/>`);
    body.push(`<text x="${x + 18}" y="${legendY}" ${font()}>${escape(setup)}</text>`);
  });
  // Runs that measured different set-ups give each bar one run: the legend must not promise a median then.
  const mostRuns = Math.max(0, ...jobs.flatMap((job) => setups.map((setup) => ratiosOf(job, setup).length)));
  if (mostRuns > 1) body.push(`<text x="${width - right}" y="${height - 6}" text-anchor="end" ${font()} fill="#555">bars: median of the runs that measured the set-up; whiskers: lowest to highest run</text>`);
  else if (reports.length > 1) body.push(`<text x="${width - right}" y="${height - 6}" text-anchor="end" ${font()} fill="#555">bars: one run per set-up</text>`);
  return svg(width, height, body);
}

/** Completions per bin, as a rate (completions per second), for bins of `binMs` from `fromMs` to `toMs`. */
export function completionRate(completionsMs: readonly number[], fromMs: number, toMs: number, binMs: number): number[] {
  const bins = new Array<number>(Math.ceil((toMs - fromMs) / binMs)).fill(0);
  for (const at of completionsMs) {
    const bin = Math.floor((at - fromMs) / binMs);
    if (bin >= 0 && bin < bins.length) bins[bin] = (bins[bin] as number) + 1;
  }
  return bins.map((count) => (count * 1000) / binMs);
}

/** One panel per mode: every run's write completion rate over time, the kill at 0. */
export function timelineChart(panels: Array<{ mode: 'kill' | 'hang'; report: FailoverReport | null; timelines: Timeline[] }>, options = { fromMs: -1000, toMs: 4500, binMs: 50 }): string {
  const width = 760;
  const panelHeight = 230;
  const left = 70;
  const right = 20;
  const top = 34;
  const height = panels.length * (panelHeight + 30) + 20;
  const plotWidth = width - left - right;
  const x = (ms: number): number => left + ((ms - options.fromMs) / (options.toMs - options.fromMs)) * plotWidth;
  const body: string[] = [];
  panels.forEach((panel, index) => {
    const panelTop = 10 + index * (panelHeight + 30);
    const plotTop = panelTop + top;
    const plotHeight = panelHeight - top - 30;
    const rates = panel.timelines.map((timeline) => completionRate(timeline.completionsMs, options.fromMs, options.toMs, options.binMs));
    const maxRate = Math.max(1, ...rates.flat()) * 1.1;
    const y = (rate: number): number => plotTop + plotHeight - (rate / maxRate) * plotHeight;
    const what = panel.mode === 'kill' ? 'kill -9 of the owner' : 'SIGSTOP of the owner (silent hang)';
    const summary = panel.report ? `: ${panel.timelines.length} runs, longest gap median ${panel.report.pauseMs.median} ms (${panel.report.pauseMs.min}–${panel.report.pauseMs.max})` : '';
    body.push(`<text x="${left}" y="${panelTop + 14}" ${font(13)} font-weight="bold">${escape(`${what}${summary}`)}</text>`);
    const about = `fio 4 KiB random writes, QD16, through the partner${panel.report ? `; ${panel.report.date.slice(0, 10)}: ${shortCommand(panel.report.command)}` : ''}`;
    body.push(`<text x="${left}" y="${panelTop + 28}" ${font(11)} fill="#555">${escape(about)}</text>`);
    for (const value of ticks(maxRate, 4)) {
      body.push(`<line x1="${left}" x2="${width - right}" y1="${round(y(value))}" y2="${round(y(value))}" stroke="#e5e5e5"/>`);
      body.push(`<text x="${left - 6}" y="${round(y(value) + 4)}" text-anchor="end" ${font()}>${value >= 1000 ? `${value / 1000}k` : value}</text>`);
    }
    for (let ms = Math.ceil(options.fromMs / 1000) * 1000; ms <= options.toMs; ms += 1000) {
      body.push(`<text x="${round(x(ms))}" y="${plotTop + plotHeight + 16}" text-anchor="middle" ${font()}>${ms === 0 ? '0' : `${ms > 0 ? '+' : ''}${ms / 1000} s`}</text>`);
    }
    body.push(`<text x="14" y="${plotTop + plotHeight / 2}" text-anchor="middle" ${font()} transform="rotate(-90 14 ${plotTop + plotHeight / 2})">writes/s (${options.binMs} ms bins)</text>`);
    rates.forEach((series, run) => {
      // From the run's first completion on: before it fio had not started, which is no pause.
      const first = Math.min(...(panel.timelines[run] as Timeline).completionsMs);
      const points = series
        .map((rate, bin) => ({ rate, at: options.fromMs + (bin + 0.5) * options.binMs }))
        .filter((point) => point.at >= first)
        .map((point) => `${round(x(point.at))},${round(y(point.rate))}`)
        .join(' ');
      body.push(`<polyline points="${points}" fill="none" stroke="${COLOURS[run % COLOURS.length]}" stroke-width="1.3" stroke-opacity="0.85"/>`);
    });
    body.push(`<line x1="${round(x(0))}" x2="${round(x(0))}" y1="${plotTop}" y2="${plotTop + plotHeight}" stroke="#D55E00" stroke-width="1.5" stroke-dasharray="4 3"/>`);
    body.push(`<text x="${round(x(0) + 4)}" y="${plotTop + 12}" ${font()} fill="#D55E00">${panel.mode === 'kill' ? 'kill -9' : 'SIGSTOP'}</text>`);
    body.push(`<line x1="${left}" x2="${width - right}" y1="${plotTop + plotHeight}" y2="${plotTop + plotHeight}" stroke="#000"/>`);
  });
  return svg(width, height, body);
}

/** The write completions (fio data direction 1) of a kept latency log, relative to the kill. */
export function parseClatLog(text: string, killedAtEpochMs: number): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(',').map((field) => field.trim());
    if (fields.length < 3 || fields[2] !== '1') continue;
    out.push(Number(fields[0]) - killedAtEpochMs);
  }
  return out;
}

async function readFailover(directory: string, mode: 'kill' | 'hang'): Promise<{ mode: 'kill' | 'hang'; report: FailoverReport | null; timelines: Timeline[] }> {
  const file = path.join(directory, `failover-${mode}.json`);
  const report = JSON.parse(await fs.readFile(file, 'utf8')) as FailoverReport;
  const timelines: Timeline[] = [];
  for (const run of report.runs) {
    const text = await fs.readFile(path.join(directory, run.log), 'utf8');
    timelines.push({ mode, pauseMs: run.pauseMs, completionsMs: parseClatLog(text, run.killedAtEpochMs) });
  }
  return { mode, report, timelines };
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .option('bench', { type: 'string', array: true, describe: 'JSON written by scripts/bench --json; give it once per run (bars: median, whiskers: the spread)' })
    .option('setups', { type: 'string', describe: 'only these set-ups (comma-separated, as in the bench rows, e.g. "2 nodes, via owner;2 nodes, via partner" with ;)' })
    .option('failover', { type: 'string', describe: 'directory written by scripts/failover-pause --keep-log (failover-kill.json, failover-hang.json and their logs)' })
    .option('out', { type: 'string', default: 'docs/plots', describe: 'where the SVG files go' })
    .strict()
    .parseAsync();
  await fs.mkdir(args.out, { recursive: true });
  if (args.bench && args.bench.length > 0) {
    const wanted = args.setups?.split(';').map((setup) => setup.trim());
    const reports: BenchReport[] = [];
    for (const file of args.bench) {
      const report = JSON.parse(await fs.readFile(file, 'utf8')) as BenchReport;
      reports.push({ ...report, rows: report.rows.filter((row) => !wanted || wanted.includes(row.setup)) });
    }
    const file = path.join(args.out, 'bench-ratio.svg');
    await fs.writeFile(file, ratioChart(reports, 'ftvm against nbdkit\'s file plugin: IOPS ratio per job (higher is better)'));
    process.stdout.write(`wrote ${file}\n`);
  }
  if (args.failover) {
    const panels = [];
    for (const mode of ['kill', 'hang'] as const) {
      if (await fs.access(path.join(args.failover, `failover-${mode}.json`)).then(() => true, () => false)) panels.push(await readFailover(args.failover, mode));
    }
    if (panels.length === 0) throw new Error(`${args.failover} holds no failover-kill.json or failover-hang.json`);
    const file = path.join(args.out, 'failover-timeline.svg');
    await fs.writeFile(file, timelineChart(panels));
    process.stdout.write(`wrote ${file}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((error: unknown) => {
    process.stderr.write(`plot-bench: ${(error as Error).message}\n`);
    process.exit(1);
  });
}
