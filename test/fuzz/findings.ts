// A finding is one broken oracle on one seed. It is printed with the replay command and written to
// disk with its input bytes as hex, so it can be replayed by seed or by bytes, and pasted into
// regressions.test.ts.
import fs from 'node:fs';
import path from 'node:path';
import type { CaseResult, TargetName } from './fuzz-target.js';

export interface Finding {
  target: TargetName;
  seed: number;
  /** Options the replay needs besides target and seed (the server target's profile). */
  replayOptions?: string;
  result: CaseResult;
  /** The same problem in fewer bytes, when the minimizer got there. */
  minimal?: Buffer;
}

/** Problems of one kind are one finding, however many seeds hit them. */
export function signature(target: TargetName, result: CaseResult): string {
  return `${target}:${[...new Set(result.problems.map((problem) => problem.kind))].sort().join('+')}`;
}

export function replayCommand(target: TargetName, seed: number, options = ''): string {
  return `npm run fuzz -- --target ${target}${options ? ` ${options}` : ''} --seed ${seed}`;
}

export function describeFinding(finding: Finding): string {
  const { target, seed, result } = finding;
  const lines = [`FINDING target=${target} seed=${seed}`, `  replay: ${replayCommand(target, seed, finding.replayOptions)}`];
  for (const problem of result.problems.slice(0, 8)) lines.push(`  ${problem.kind}: ${problem.detail.split('\n')[0]?.slice(0, 400)}`);
  if (result.problems.length > 8) lines.push(`  … ${result.problems.length - 8} more`);
  const inputs = result.inputs.map((input) => input.length);
  lines.push(`  input: ${inputs.length} stream(s) of ${inputs.join(', ')} bytes${Object.keys(result.params).length ? `, params ${JSON.stringify(result.params)}` : ''}`);
  if (finding.minimal) lines.push(`  minimal (${finding.minimal.length} bytes): ${finding.minimal.toString('hex').slice(0, 512)}`);
  return lines.join('\n');
}

/** Writes `<dir>/<target>-<seed>.json` (everything) and `.hex` (the input, one stream per line). */
export function writeFinding(directory: string, finding: Finding): string {
  fs.mkdirSync(directory, { recursive: true });
  const base = path.join(directory, `${finding.target}-${finding.seed}`);
  const record = {
    target: finding.target,
    seed: finding.seed,
    replay: replayCommand(finding.target, finding.seed, finding.replayOptions),
    problems: finding.result.problems,
    params: finding.result.params,
    inputs: finding.result.inputs.map((input) => input.toString('hex')),
    minimal: finding.minimal?.toString('hex'),
  };
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(record, null, 2)}\n`);
  fs.writeFileSync(`${base}.hex`, `${finding.result.inputs.map((input) => input.toString('hex')).join('\n')}\n`);
  if (finding.minimal) fs.writeFileSync(`${base}.min.hex`, `${finding.minimal.toString('hex')}\n`);
  return `${base}.json`;
}

/** Reads a `.hex` file (one stream per line) or a finding's `.json`. */
export function readInputs(file: string): { inputs: Buffer[]; params: CaseResult['params'] } {
  const text = fs.readFileSync(file, 'utf8');
  if (file.endsWith('.json')) {
    const record = JSON.parse(text) as { inputs: string[]; params?: CaseResult['params'] };
    return { inputs: record.inputs.map((hex) => Buffer.from(hex, 'hex')), params: record.params ?? {} };
  }
  return { inputs: text.split('\n').filter((line) => line.trim() !== '').map((line) => Buffer.from(line.trim(), 'hex')), params: {} };
}
