// Helpers for tests of offline `ftvm raid` commands on a node's member files: run the CLI, take a
// fingerprint of every file in a directory, freeze a node process so its files hold still, and keep
// a client writing.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../../src/config/index.js';
import { FTVM_BIN, type FtvmNode } from './ftvm-process.js';
import { RawClient } from './raw-client.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

/** Runs `ftvm raid ...` with piped output (stderr is not a TTY). */
export function raid(...args: string[]): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FTVM_BIN, 'raid', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, elapsedMs: performance.now() - started }));
  });
}

export async function succeed(...args: string[]): Promise<Run> {
  const run = await raid(...args);
  expect(run.code, `ftvm raid ${args.join(' ')}\n${run.stderr}`).to.equal(0);
  return run;
}

/**
 * Every entry under `directory`: files by content hash, size and mtime, directories by name. Two
 * equal snapshots mean nothing was written, created or removed there.
 */
export async function snapshot(directory: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (at: string): Promise<void> => {
    for (const entry of await fs.readdir(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      const name = path.relative(directory, full);
      if (entry.isDirectory()) {
        out[name] = 'directory';
        await walk(full);
      } else if (entry.isFile()) {
        const stat = await fs.stat(full);
        out[name] = `${createHash('sha256').update(await fs.readFile(full)).digest('hex')} ${stat.size} bytes, mtime ${stat.mtimeMs}`;
      } else {
        out[name] = 'other';
      }
    }
  };
  await walk(directory);
  return out;
}

/** Member and lease files only (what an offline command must leave alone). */
export function memberAndLeaseFiles(all: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(all).filter(([name]) => /\.img(\.lease)?$/.test(name)));
}

export async function memberPaths(node: FtvmNode): Promise<string[]> {
  return (await loadConfig(node.configFile)).storage.members;
}

/** SIGSTOP, and wait until every thread is stopped: from then on the node writes nothing. */
export async function freeze(node: FtvmNode): Promise<() => void> {
  const pid = node.child.pid as number;
  process.kill(pid, 'SIGSTOP');
  for (const deadline = Date.now() + 5000; ; ) {
    const tasks = await fs.readdir(`/proc/${pid}/task`);
    const states = await Promise.all(tasks.map(async (task) => (await fs.readFile(`/proc/${pid}/task/${task}/stat`, 'utf8')).split(') ')[1]?.[0]));
    if (states.every((state) => state === 'T' || state === 't')) break;
    if (Date.now() > deadline) throw new Error(`node ${pid} did not stop: thread states ${states.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return () => process.kill(pid, 'SIGCONT');
}

/** A client writing 64 KiB blocks in a loop until stopped; stop() resolves with the number of acknowledged writes. */
export async function keepWriting(node: FtvmNode, volume: string, volumeBytes: number): Promise<{ stop(): Promise<number>; acknowledged(): number }> {
  const client = await RawClient.connect({ port: node.port });
  await client.attach(volume);
  let running = true;
  let acknowledged = 0;
  // Settled at once, so a loop ended by a killed node is no unhandled rejection; stop() reports it.
  const loop = (async () => {
    for (let round = 0; running; round++) {
      const offset = (round * 65536) % volumeBytes;
      client.request(1, { handle: BigInt(round + 1), offset, payload: Buffer.alloc(65536, round & 0xff) });
      const reply = await client.readReply();
      if (reply.error !== 0) throw new Error(`write at ${offset} failed with ${reply.error}`);
      acknowledged++;
    }
  })().then(
    () => null,
    (error: Error) => error,
  );
  return {
    acknowledged: () => acknowledged,
    async stop() {
      running = false;
      const error = await loop;
      client.close();
      if (error) throw error;
      return acknowledged;
    },
  };
}

/** Waits until `condition` holds (polling), or fails after `ms`. */
export async function eventually(condition: () => boolean, ms: number, what: string): Promise<void> {
  for (const deadline = Date.now() + ms; !condition(); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
