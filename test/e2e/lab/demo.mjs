// `npm run demo` (as root): kvmbak doing its job, for someone without a libvirt + LVM host.
//   1. build or reuse the lab image, and build the package on the host, in parallel (as the e2e run)
//   2. boot the lab VM; inside, guest/demo-job.sh sets up a small VM on two LVs with known data and
//      runs the real CLI, printing each command: backup, the VM and its LVs destroyed, restore, the
//      VM running with the same data, list, verify, status
//   3. the VM powers off; the exit status is the demo's
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LabError, buildPackage, cacheDir, exitOnSignals, failureExitCode, log, seconds } from './common.mjs';
import { ensureImage } from './image.mjs';
import { defaultTimeoutMinutes, runJob } from './run.mjs';

async function main() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new LabError(`the demo runs in the kvmbak lab, which needs Linux on x86_64 (this is ${process.platform}/${process.arch})`);
  }
  if (process.getuid() !== 0) {
    throw new LabError('the demo boots the kvmbak lab (a Debian VM under QEMU, built with debootstrap): run `sudo npm run demo`');
  }
  mkdirSync(join(cacheDir(), 'logs'), { recursive: true });
  const t0 = Date.now();
  log('kvmbak demo: preparing the lab (a Debian 12 VM with lvm2 and libvirtd; the first run builds its image, 2-3 min)');
  const stopExitingOnSignals = exitOnSignals();
  // Settle both before going on, so a failure never leaves the other running unobserved.
  const [imageResult, packageResult] = await Promise.allSettled([ensureImage(), buildPackage({ addon: 'if-stale' })]);
  stopExitingOnSignals();
  if (imageResult.status === 'rejected') throw imageResult.reason;
  if (packageResult.status === 'rejected') throw packageResult.reason;
  const image = imageResult.value;
  const packageMs = packageResult.value;
  log(`image ${image.built ? 'built' : 'reused'}; package built in ${seconds(packageMs)}; booting the lab VM (about 30 s)`);
  const result = await runJob({
    imageDir: image.dir,
    argv: ['bash', 'test/e2e/guest/demo-job.sh'],
    env: process.stdout.isTTY ? { FORCE_COLOR: '1' } : {},
    timeoutMinutes: Math.min(defaultTimeoutMinutes(), 20),
  });
  log(`the lab VM is off; the demo took ${seconds(Date.now() - t0)} (serial log: ${result.serialLog})`);
  if (result.exitCode !== 0) log(`the demo FAILED (exit status ${result.exitCode})`);
  return result.exitCode;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.exitCode = failureExitCode(err);
}
