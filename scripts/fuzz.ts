// Fuzzes the protocol decoders and a running NBD server (test/fuzz/): targets run round-robin in
// time slices until the budget is spent; each new kind of finding is printed with its seed and
// written (input bytes as hex) to the findings directory. With --seed and no --minutes, one case
// is replayed instead: the seed regenerates it, or --input gives its bytes.
// Usage: npm run fuzz -- --minutes 10 [--target all|nbd-handshake|nbd-requests|partner|server] [--seed S]
//        npm run fuzz -- --target partner --seed 1234 [--input fuzz-findings/partner-1234.json]
//        (node --expose-gc makes the server target's memory bounds tight; without it they are generous)
import { randomInt } from 'node:crypto';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { handshakeTarget, partnerTarget, requestsTarget } from '../test/fuzz/decoder-targets.js';
import { describeFinding, readInputs, replayCommand, writeFinding, type Finding } from '../test/fuzz/findings.js';
import { TARGET_NAMES, type FuzzTarget, type TargetName } from '../test/fuzz/fuzz-target.js';
import { minimize } from '../test/fuzz/minimize.js';
import { runCampaign } from '../test/fuzz/runner.js';
import { BOUNDED_PROFILE, LONG_PROFILE, serverTarget } from '../test/fuzz/server-target.js';

const argv = await yargs(hideBin(process.argv))
  .option('minutes', { type: 'number', describe: 'time budget across all targets' })
  .option('target', { type: 'string', choices: [...TARGET_NAMES, 'all'], default: 'all' })
  .option('seed', { type: 'number', describe: 'base seed of a campaign, or the one case to replay' })
  .option('input', { type: 'string', describe: 'replay these bytes (a finding .json or .hex) instead of generating' })
  .option('process', { type: 'boolean', default: false, describe: 'server target: a real `ftvm serve` process instead of an in-process server' })
  .option('profile', { type: 'string', choices: ['bounded', 'long'], default: 'long', describe: 'server target: round sizes' })
  .option('out', { type: 'string', default: 'fuzz-findings', describe: 'where findings are written' })
  .option('slice', { type: 'number', default: 5, describe: 'seconds per target per turn' })
  .option('disc', { type: 'boolean', default: true, describe: 'server target: hostile streams may send DISC (--no-disc explores past the DISC finding)' })
  .option('verbose', { type: 'boolean', default: false, describe: 'print every case as it starts' })
  .strict()
  .parseAsync();

function makeTarget(name: TargetName): FuzzTarget {
  switch (name) {
    case 'nbd-handshake':
      return handshakeTarget();
    case 'nbd-requests':
      return requestsTarget();
    case 'partner':
      return partnerTarget();
    case 'server':
      return serverTarget({ ...(argv.profile === 'long' ? LONG_PROFILE : BOUNDED_PROFILE), disc: argv.disc }, argv.process);
  }
}

const names: TargetName[] = argv.target === 'all' ? [...TARGET_NAMES] : [argv.target as TargetName];
const targets = names.map(makeTarget);

const serverOptions = `--profile ${argv.profile}${argv.process ? ' --process' : ''}${argv.disc ? '' : ' --no-disc'}`;

async function report(finding: Finding): Promise<void> {
  const target = targets.find((candidate) => candidate.name === finding.target) as FuzzTarget;
  if (finding.target === 'server') finding.replayOptions = serverOptions;
  if (finding.target !== 'server') finding.minimal = await minimize(target, finding.seed, finding.result, 5000);
  const file = writeFinding(argv.out, finding);
  process.stdout.write(`${describeFinding(finding)}\n  written: ${file}\n`);
}

let failed = false;
try {
  if (argv.seed !== undefined && argv.minutes === undefined) {
    for (const target of targets) {
      const seed = argv.seed >>> 0;
      const result = argv.input ? await target.replay(readInputs(argv.input).inputs, readInputs(argv.input).params, seed) : await target.runCase(seed);
      if (result.problems.length === 0) {
        process.stdout.write(`${target.name} seed ${seed}: every oracle held (${result.inputs.map((input) => input.length).join(', ')} input bytes)\n`);
        continue;
      }
      failed = true;
      await report({ target: target.name, seed, result });
    }
  } else {
    const baseSeed = (argv.seed ?? randomInt(0x1_0000_0000)) >>> 0;
    const minutes = argv.minutes ?? 1;
    process.stdout.write(`fuzzing ${names.join(', ')} for ${minutes} min, base seed ${baseSeed}\n`);
    const stats = await runCampaign(targets, {
      budgetMs: minutes * 60_000,
      baseSeed,
      sliceMs: argv.slice * 1000,
      onCase: argv.verbose ? (name, seed) => process.stdout.write(`${name} ${seed}\n`) : undefined,
      onFinding: async (finding) => {
        failed = true;
        await report(finding);
      },
    });
    process.stdout.write('\ntarget          iterations   minutes   per minute   findings\n');
    for (const [name, own] of stats) {
      const perMinute = own.elapsedMs > 0 ? Math.round((own.iterations * 60_000) / own.elapsedMs) : 0;
      process.stdout.write(`${name.padEnd(15)} ${String(own.iterations).padStart(10)}   ${(own.elapsedMs / 60_000).toFixed(2).padStart(7)}   ${String(perMinute).padStart(10)}   ${own.hits.size}\n`);
    }
    for (const [name, own] of stats) {
      for (const [key, seeds] of own.hits) {
        process.stdout.write(`  ${key}: ${seeds.length} seeds, first ${seeds[0]} (${replayCommand(name, seeds[0] as number, name === 'server' ? serverOptions : '')})\n`);
      }
    }
  }
} finally {
  for (const target of targets) await target.close();
}
process.exit(failed ? 1 : 0);
