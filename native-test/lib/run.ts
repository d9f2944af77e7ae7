// Small helpers for the native-client tests: run a tool with a time limit, make random files, hash files.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';

export interface RunResult {
  /** Exit code, or null when the process died of a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * `nbdsh` runs `python3 -m nbd` from PATH; a Python manager (pyenv) may put an interpreter without the
 * Debian python3-libnbd module first. The system directories go first for nbdsh so the real one is used.
 */
export const NBDSH_ENV: NodeJS.ProcessEnv = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` };

/** Runs a command to completion and resolves with its output whatever the exit code; rejects on timeout. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`${command} ${args.join(' ')} timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`));
      else resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Like run(), but a non-zero exit is an error that shows the command and its output. */
export async function runOk(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
  return result;
}

/** Writes `sizeBytes` of random data in 1 MiB pieces (never holds the whole file in memory). */
export async function writeRandomFile(path: string, sizeBytes: number): Promise<void> {
  const handle = await fs.open(path, 'w');
  try {
    for (let done = 0; done < sizeBytes; done += 1 << 20) await handle.write(randomBytes(Math.min(1 << 20, sizeBytes - done)));
  } finally {
    await handle.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
