// Proves how a /proc/PID/stat line is judged: the process that started at the recorded time and
// is not a zombie is alive; a zombie (killed, not reaped yet), another start time or a name with
// spaces and parentheses are read right; and this very process is alive to processAlive.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { expect } from 'chai';
import { processAlive, statShowsAlive, thisProcess } from '../../../src/storage/index.js';
import { processStartTicks, thisHost } from '../../../src/storage/process-identity.js';

/** A stat line as Linux writes it: pid, (comm), state, then fields 4.. with the start time as field 22. */
function statLine(comm: string, state: string, startTicks: number): string {
  const fields = Array.from({ length: 50 }, (_, index) => String(index + 4));
  fields[22 - 4] = String(startTicks);
  return `4242 (${comm}) ${state} ${fields.join(' ')}\n`;
}

describe('process identity', () => {
  it('counts a running or sleeping process that started at the recorded time as alive', () => {
    expect(statShowsAlive(statLine('node', 'S', 987654), 987654)).to.equal(true);
    expect(statShowsAlive(statLine('node', 'R', 987654), 987654)).to.equal(true);
    expect(statShowsAlive(statLine('node', 'D', 987654), 987654)).to.equal(true);
  });

  it('counts a zombie or a dead entry as gone, though its start time matches', () => {
    expect(statShowsAlive(statLine('node', 'Z', 987654), 987654)).to.equal(false);
    expect(statShowsAlive(statLine('node', 'X', 987654), 987654)).to.equal(false);
  });

  it('counts a pid reused by a process that started at another time as gone', () => {
    expect(statShowsAlive(statLine('node', 'S', 987655), 987654)).to.equal(false);
  });

  it('reads the fields after the last parenthesis of the command name', () => {
    expect(statShowsAlive(statLine('ftvm (a) Z', 'S', 5), 5)).to.equal(true);
    expect(statShowsAlive(statLine('a) S (b', 'Z', 5), 5)).to.equal(false);
  });

  it('finds a killed child gone while it is still a zombie (its parent has not reaped it)', async () => {
    const child = spawn('sleep', ['100'], { stdio: 'ignore' });
    await new Promise((resolve) => child.once('spawn', resolve));
    const pid = child.pid as number;
    const identity = { pid, processStart: processStartTicks(pid) ?? 0, host: thisHost() };
    expect(processAlive(identity), 'running').to.equal(true);
    child.kill('SIGKILL');
    // Synchronously, so this event loop cannot reap it meanwhile: it stays a zombie in /proc.
    const deadline = Date.now() + 2000;
    let stat = '';
    while (Date.now() < deadline && !/\) Z /.test(stat)) stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    expect(stat, 'the child became a zombie').to.match(/\) Z /);
    expect(processAlive(identity), 'a zombie with its start time unchanged').to.equal(false);
    await new Promise((resolve) => child.once('exit', resolve));
  });

  it('finds this process alive', () => {
    expect(processAlive(thisProcess())).to.equal(true);
    expect(processAlive({ ...thisProcess(), processStart: thisProcess().processStart + 1 })).to.equal(false);
  });
});
