// QEMU's NBD client as a block device: qemu-storage-daemon connects (optionally with reconnect-delay,
// so it rides over a server's death once another listens on the same address) and exports the disk
// as a file through FUSE; a loop device turns the file into a block device.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { expect } from 'chai';
import { run, runOk } from './run.js';

/** qemu-storage-daemon (NBD client → FUSE file) plus the loop device on that file. */
export interface ClientStack {
  daemon: ChildProcess;
  daemonLog: () => string;
  loopDevice: string | null;
}

export async function isMountPoint(target: string): Promise<boolean> {
  const mountInfo = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return mountInfo.split('\n').some((line) => line.split(' ')[4] === target);
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return condition();
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Starts qemu-storage-daemon exporting the volume as `diskFile` through FUSE, then attaches a loop device. */
export async function startClientStack(target: { host: string; port: number; volume: string; sizeBytes: number; reconnectDelaySeconds?: number }, diskFile: string): Promise<ClientStack> {
  await fs.writeFile(diskFile, '');
  const daemon = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=nbd,node-name=n0,server.type=inet,server.host=${target.host},server.port=${target.port},export=${target.volume}${target.reconnectDelaySeconds ? `,reconnect-delay=${target.reconnectDelaySeconds}` : ''}`,
      '--export',
      `type=fuse,id=e0,node-name=n0,mountpoint=${diskFile},writable=on`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  daemon.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  daemon.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const stack: ClientStack = { daemon, daemonLog: () => log, loopDevice: null };
  const mounted = await waitFor(async () => exited(daemon) || (await isMountPoint(diskFile)), 15_000);
  if (!mounted || exited(daemon)) {
    await stopClientStack(stack, diskFile);
    throw new Error(`qemu-storage-daemon did not export ${diskFile}:\n${log}`);
  }
  expect((await fs.stat(diskFile)).size, 'the FUSE file has the volume size').to.equal(target.sizeBytes);
  stack.loopDevice = (await runOk('losetup', ['-f', '--show', diskFile])).stdout.trim();
  return stack;
}

/** Detaches the loop device and stops the daemon; best effort, for after() hooks too. */
export async function stopClientStack(stack: ClientStack | null, diskFile: string): Promise<void> {
  if (!stack) return;
  if (stack.loopDevice) await run('losetup', ['-d', stack.loopDevice]);
  stack.loopDevice = null;
  if (!exited(stack.daemon)) {
    const gone = new Promise<void>((resolve) => stack.daemon.once('exit', () => resolve()));
    stack.daemon.kill('SIGTERM');
    const timer = setTimeout(() => stack.daemon.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }
  if (await isMountPoint(diskFile)) await run('umount', ['-l', diskFile]);
}

