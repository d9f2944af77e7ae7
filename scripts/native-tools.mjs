#!/usr/bin/env node
// Makes sure the real NBD clients the native tests drive are installed. With --install and root,
// missing Debian packages are installed (apt-get); otherwise it prints what is missing and how to
// install it, and the native tests report those cases as pending (or fail, under CI=true).
import { execFileSync, spawnSync } from 'node:child_process';

const TOOLS = {
  nbdinfo: 'libnbd-bin', nbdcopy: 'libnbd-bin', nbdsh: 'python3-libnbd', fio: 'fio',
  'qemu-io': 'qemu-utils', 'qemu-img': 'qemu-utils', 'qemu-storage-daemon': 'qemu-system-common',
  'qemu-system-x86_64': 'qemu-system-x86', nbdkit: 'nbdkit', 'nbd-client': 'nbd-client', dmsetup: 'dmsetup',
  'mkfs.ext4': 'e2fsprogs', e2fsck: 'e2fsprogs', cpio: 'cpio', fusermount3: 'fuse3', ip: 'iproute2',
  losetup: 'mount', insmod: 'kmod', certtool: 'gnutls-bin', psktool: 'gnutls-bin',
};
const EXTRA_PACKAGES = ['busybox-static'];

const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
const missing = Object.entries(TOOLS).filter(([tool]) => !has(tool));
const busybox = spawnSync('sh', ['-c', 'test -x /bin/busybox || dpkg -s busybox-static >/dev/null 2>&1']).status === 0;
const packages = [...new Set([...missing.map(([, pkg]) => pkg), ...(busybox ? [] : EXTRA_PACKAGES)])];

if (packages.length === 0) process.exit(0);
const command = `apt-get update && apt-get install -y --no-install-recommends ${packages.join(' ')}`;
if (process.argv.includes('--install') && process.getuid?.() === 0 && process.env.FTVM_NO_APT !== '1') {
  process.stderr.write(`native-tools: installing ${packages.join(' ')}\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('sh', ['-c', command], { stdio: ['ignore', 'ignore', 'inherit'], env });
} else {
  process.stderr.write(`native-tools: missing ${missing.map(([tool]) => tool).join(', ') || 'busybox-static'}\n`);
  process.stderr.write(`native-tools: install with: ${command}\n`);
}
