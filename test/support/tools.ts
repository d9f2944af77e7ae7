// Native tests need real clients (nbdinfo, qemu-io, fio, ...). Where one is missing, a test is
// reported pending with the tool and the install command, never silently passed; in CI (CI=true)
// or with FTVM_REQUIRE_NATIVE=1 a missing tool fails the test instead.
import { execFileSync } from 'node:child_process';

export const INSTALL_HINT =
  'apt-get update && apt-get install -y --no-install-recommends libnbd-bin python3-libnbd fio qemu-utils ' +
  'qemu-system-x86 nbdkit nbd-client dmsetup e2fsprogs cpio fuse3 busybox-static iproute2 kmod gnutls-bin';

export function hasTool(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function nativeRequired(): boolean {
  return process.env.CI === 'true' || process.env.FTVM_REQUIRE_NATIVE === '1';
}

/** Call at the top of a test or before() hook: skips (pending) or fails when a tool is missing. */
export function requireTools(context: Mocha.Context, ...tools: string[]): void {
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length === 0) return;
  const message = `missing ${missing.join(', ')}; install with: ${INSTALL_HINT}`;
  if (nativeRequired()) throw new Error(message);
  process.stderr.write(`      pending: ${message}\n`);
  context.skip();
}

/** Loop devices, mounts and network namespaces need root; same rules as a missing tool. */
export function requireRoot(context: Mocha.Context): void {
  if (process.getuid?.() === 0) return;
  const message = 'needs root (loop devices, mounts, network namespaces)';
  if (nativeRequired()) throw new Error(message);
  process.stderr.write(`      pending: ${message}\n`);
  context.skip();
}
