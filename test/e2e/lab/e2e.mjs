// `npm run test:e2e [-- VITEST_ARGS...]`: the whole lab run, from a bare machine (as root).
//   1. build or reuse the lab image, and build the package on the host (tsup + native addon), in parallel
//   2. boot the lab VM once; inside: the fixture (guest/fixture.sh), then `vitest run --project e2e`
//   3. report the phase times; exit with the suite's status
// KVMBAK_SKIP_LAB=1 skips it explicitly; otherwise a lab that cannot run is a failure saying why.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LabError, buildPackage, cacheDir, exitOnSignals, failureExitCode, log, seconds } from './common.mjs';
import { ensureImage } from './image.mjs';
import { defaultTimeoutMinutes, runJob } from './run.mjs';

function preflight() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new LabError(`the e2e lab needs Linux on x86_64 (this is ${process.platform}/${process.arch}); set KVMBAK_SKIP_LAB=1 to skip it`);
  }
  if (process.getuid() !== 0) {
    throw new LabError(
      'the e2e lab must run as root (it builds a Debian image with debootstrap/chroot and boots it under QEMU): ' +
        'run `sudo npm run test:e2e`, or set KVMBAK_SKIP_LAB=1 to skip it explicitly',
    );
  }
}

function readPhases(runDir) {
  try {
    return readFileSync(join(runDir, 'ctl', 'phases'), 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length === 2)
      .map(([name, ms]) => [name, Number(ms)]);
  } catch {
    return [];
  }
}

async function main() {
  if (process.env.KVMBAK_SKIP_LAB === '1') {
    log('KVMBAK_SKIP_LAB=1: the e2e lab is skipped (explicitly)');
    return 0;
  }
  preflight();
  mkdirSync(join(cacheDir(), 'logs'), { recursive: true });
  const t0 = Date.now();
  log(`cache: ${cacheDir()}`);

  const imageStarted = Date.now();
  const stopExitingOnSignals = exitOnSignals();
  const imagePromise = ensureImage().then((img) => ({ ...img, ms: Date.now() - imageStarted }));
  const packagePromise = buildPackage();
  // Settle both before reporting, so a failure never leaves the other running unobserved.
  const [imageResult, packageResult] = await Promise.allSettled([imagePromise, packagePromise]);
  stopExitingOnSignals();
  if (imageResult.status === 'rejected') throw imageResult.reason;
  if (packageResult.status === 'rejected') throw packageResult.reason;
  const image = imageResult.value;
  const packageMs = packageResult.value;
  log(`image ${image.built ? 'built' : 'reused'} in ${seconds(image.ms)}; package built in ${seconds(packageMs)}`);

  const timeoutMinutes = defaultTimeoutMinutes();
  const job = () =>
    runJob({
      imageDir: image.dir,
      argv: ['bash', 'test/e2e/guest/e2e-job.sh', ...process.argv.slice(2)],
      // Colours only when a person watches (vitest would otherwise guess from the guest's side).
      env: {
        KVMBAK_LAB_PHASES: '/lab/ctl/phases',
        ...(process.env.KVMBAK_LAB_LINUX ? { KVMBAK_LAB_LINUX: process.env.KVMBAK_LAB_LINUX } : {}),
        ...(process.env.KVMBAK_LAB_INNER ? { KVMBAK_LAB_INNER: process.env.KVMBAK_LAB_INNER } : {}),
        ...(process.stdout.isTTY ? { FORCE_COLOR: '1' } : { NO_COLOR: '1' }),
      },
      timeoutMinutes,
      keep: process.env.KVMBAK_LAB_KEEP === '1',
    });
  let result;
  try {
    result = await job();
  } catch (err) {
    // The VM itself died without a result (seen about once in 15 boots of QEMU/TCG with nested
    // SVM): that says nothing about kvmbak, so boot once more. A test failure, a timeout or an
    // interrupt is never retried.
    if (!(err instanceof LabError) || !/^the guest (did not report an exit status|never started the job)/.test(err.message)) throw err;
    log(`${err.message.split('\n')[0]}: the lab VM died without a result; booting it once more`);
    result = await job();
  }
  const guest = Object.fromEntries(readPhases(result.runDir));
  const rows = [
    [`image (${image.built ? 'cold build' : 'cached'})`, image.ms],
    ['package build (parallel with image)', packageMs],
    ['boot to job start', result.bootMs],
    ['fixture setup', guest.fixture],
    ['e2e suite', guest.suite],
    ['power-off', result.jobMs === null ? undefined : result.jobMs - (guest.fixture ?? 0) - (guest.suite ?? 0)],
    ['total', Date.now() - t0],
  ];
  log('phases:');
  for (const [name, ms] of rows) log(`  ${name.padEnd(38)} ${ms === undefined || ms === null ? '-' : seconds(ms)}`);
  log(`serial log: ${result.serialLog}`);
  if (result.exitCode !== 0) log(`e2e suite FAILED (exit status ${result.exitCode})`);
  else log('e2e suite passed');
  return result.exitCode;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.exitCode = failureExitCode(err);
}
