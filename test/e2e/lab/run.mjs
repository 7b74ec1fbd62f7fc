// The lab runner: boots the cached image under QEMU/TCG with a throw-away overlay, a fresh sparse
// data disk (the LVM physical volume), the image again as a read-only disk (for the inner Linux
// guest), the checkout (9p tag "src") and a control folder (9p tag "ctl"); the image's lab-job
// unit runs the job found there and powers off. The job's output is
// streamed to our stdout while it runs; its exit status is returned. QEMU is always killed on the
// hard deadline, on SIGINT/SIGTERM/SIGHUP, and (through PR_SET_PDEATHSIG) if this process dies.
//
// CLI: node test/e2e/lab/run.mjs [--timeout MIN] [--keep] [--env NAME=VALUE]... -- COMMAND [ARG]...
//   COMMAND runs in the guest as root, in /lab/src (the checkout). Exit status = the job's.
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabError, cacheDir, checkoutDir, exitOnSignals, failureExitCode, log, pidAlive, run, seconds } from './common.mjs';
import { ensureImage } from './image.mjs';

const KEEP_RUNS = 10;
const POLL_MS = 250;

export function defaultTimeoutMinutes() {
  const raw = process.env.KVMBAK_LAB_TIMEOUT;
  if (raw === undefined || raw === '') return 50;
  const minutes = Number(raw);
  if (!Number.isFinite(minutes) || minutes <= 0) {
    throw new LabError(`KVMBAK_LAB_TIMEOUT must be a positive number of minutes, got ${JSON.stringify(raw)}`);
  }
  return minutes;
}

function tail(path, lines) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no serial log)';
  }
}

/** Keeps the last KEEP_RUNS run folders; drops the disks of runs whose QEMU is gone (a killed runner). */
function pruneRuns(runsDir, keepName) {
  const names = readdirSync(runsDir)
    .filter((n) => n !== keepName)
    .sort();
  const drop = names.length - (KEEP_RUNS - 1);
  names.forEach((name, i) => {
    const dir = join(runsDir, name);
    if (i < drop) {
      rmSync(dir, { recursive: true, force: true });
      return;
    }
    let pid = NaN;
    try {
      pid = Number.parseInt(readFileSync(join(dir, 'qemu.pid'), 'utf8'), 10);
    } catch {
      // no pid file: nothing is running there
    }
    if (!(pid > 0 && pidAlive(pid))) {
      for (const disk of ['root.qcow2', 'data.raw']) rmSync(join(dir, disk), { force: true });
    }
  });
}

/** Appends new bytes of a growing file to a writable stream. */
class Tail {
  constructor(path, sink) {
    this.path = path;
    this.sink = sink;
    this.offset = 0;
    this.buf = Buffer.alloc(64 * 1024);
  }
  pump() {
    let fd;
    try {
      fd = openSync(this.path, 'r');
    } catch {
      return;
    }
    try {
      if (fstatSync(fd).size < this.offset) this.offset = 0;
      for (;;) {
        const n = readSync(fd, this.buf, 0, this.buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        this.sink.write(Buffer.from(this.buf.subarray(0, n)));
      }
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Boots the lab and runs one job. Returns { exitCode, runDir, serialLog, bootMs, jobMs, totalMs }.
 * Throws LabError (with `signal` set when interrupted) when no exit status came back.
 */
export async function runJob({
  imageDir,
  argv,
  env = {},
  timeoutMinutes = defaultTimeoutMinutes(),
  keep = false,
  dataDiskBytes = 4 * 1024 ** 3,
  memoryMiB = 3072,
  output = process.stdout,
}) {
  if (!Array.isArray(argv) || argv.length === 0) throw new LabError('runJob: argv must name a command');
  if (argv.some((a) => typeof a !== 'string' || a.includes('\0'))) throw new LabError('runJob: argv entries must be strings without NUL');
  for (const [name, value] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || String(value).includes('\0')) throw new LabError(`runJob: bad environment entry ${name}`);
  }
  const runsDir = join(cacheDir(), 'runs');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, 'Z');
  const runName = `${stamp}-${process.pid}`;
  const runDir = join(runsDir, runName);
  // Commas in paths would be read as option separators by QEMU.
  for (const p of [checkoutDir, runDir, imageDir]) {
    if (p.includes(',')) throw new LabError(`the lab cannot use a path containing a comma: ${p}`);
  }
  const ctl = join(runDir, 'ctl');
  mkdirSync(ctl, { recursive: true });
  pruneRuns(runsDir, runName);

  writeFileSync(join(ctl, 'argv'), argv.map((a) => `${a}\0`).join(''));
  writeFileSync(
    join(ctl, 'env'),
    Object.entries(env)
      .map(([k, v]) => `${k}=${v}\0`)
      .join(''),
  );
  if (keep) writeFileSync(join(ctl, 'keep'), '');

  const overlay = join(runDir, 'root.qcow2');
  const dataDisk = join(runDir, 'data.raw');
  const serialLog = join(runDir, 'serial.log');
  const qemuLog = join(runDir, 'qemu.log');
  const qemuDebugLog = join(runDir, 'qemu-debug.log');
  const consoleSock = join(runDir, 'console.sock');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', join(imageDir, 'rootfs.raw'), overlay], { stdio: 'capture' });
  closeSync(openSync(dataDisk, 'w', 0o600));
  truncateSync(dataDisk, dataDiskBytes);

  const qemuArgs = [
    '-name',
    'kvmbak-lab',
    '-machine',
    'q35',
    '-accel',
    'tcg,thread=multi,tb-size=512',
    '-cpu',
    'max',
    '-smp',
    '2',
    '-m',
    String(memoryMiB),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-nic',
    'none',
    '-kernel',
    join(imageDir, 'vmlinuz'),
    '-initrd',
    join(imageDir, 'initrd.img'),
    '-append',
    'root=/dev/vda rw console=ttyS0,115200 panic=1 mitigations=off apparmor=0 quiet',
    '-drive',
    `file=${overlay},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap`,
    '-device',
    'virtio-blk-pci,drive=root,serial=labroot',
    '-drive',
    `file=${dataDisk},if=none,id=data,format=raw,cache=unsafe,discard=unmap`,
    '-device',
    'virtio-blk-pci,drive=data,serial=labdata',
    // The image itself, read-only: guest/fixture.sh boots it again inside the lab, through a qcow2
    // overlay, as the inner Linux guest with a real qemu-guest-agent (the quiesce tests).
    '-drive',
    `file=${join(imageDir, 'rootfs.raw')},if=none,id=image,format=raw,readonly=on`,
    '-device',
    'virtio-blk-pci,drive=image,serial=labimage',
    '-virtfs',
    `local,path=${checkoutDir},mount_tag=src,security_model=none,multidevs=remap`,
    '-virtfs',
    `local,path=${ctl},mount_tag=ctl,security_model=none,multidevs=remap`,
    '-device',
    'virtio-rng-pci',
    // Resets and guest errors (e.g. a triple fault) leave a trace here; quiet otherwise.
    '-d',
    'cpu_reset,guest_errors',
    '-D',
    qemuDebugLog,
  ];
  if (keep) {
    qemuArgs.push('-chardev', `socket,id=con,path=${consoleSock},server=on,wait=off,logfile=${serialLog}`, '-serial', 'chardev:con');
  } else {
    qemuArgs.push('-serial', `file:${serialLog}`);
  }

  const qemuOut = openSync(qemuLog, 'w');
  const [file, args] = keep ? ['qemu-system-x86_64', qemuArgs] : ['setpriv', ['--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...qemuArgs]];
  const t0 = Date.now();
  const qemu = spawn(file, args, { stdio: ['ignore', qemuOut, qemuOut], detached: keep });
  closeSync(qemuOut);
  if (qemu.pid !== undefined) writeFileSync(join(runDir, 'qemu.pid'), String(qemu.pid));
  log(`booting the lab VM (pid ${qemu.pid}, run folder ${runDir})`);

  let alive = true;
  const kill = () => {
    if (alive) {
      try {
        qemu.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  let interrupted = null;
  let timedOut = false;
  const onSignal = (signal) => {
    if (interrupted) process.exit(signal === 'SIGINT' ? 130 : 143);
    interrupted = signal;
    log(`${signal}: killing the lab VM`);
    kill();
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  process.on('exit', kill);
  const deadline = setTimeout(() => {
    timedOut = true;
    log(`hard deadline of ${timeoutMinutes} min reached: killing the lab VM`);
    kill();
  }, timeoutMinutes * 60_000);

  const out = new Tail(join(ctl, 'output'), output);
  let startedAt = null;
  let exitCode = null;
  let keptRunning = false;
  const exited = new Promise((resolve) => {
    qemu.on('exit', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
    qemu.on('error', (err) => {
      alive = false;
      resolve({ code: null, signal: null, error: err });
    });
  });
  let qemuExit = null;
  exited.then((r) => (qemuExit = r));
  try {
    while (qemuExit === null) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      if (startedAt === null && existsSync(join(ctl, 'started'))) {
        startedAt = Date.now();
        log(`guest job started ${seconds(startedAt - t0)} after boot began`);
      }
      out.pump();
      if (keep && existsSync(join(ctl, 'exit-code'))) {
        keptRunning = true;
        break;
      }
    }
    out.pump();
    const endedAt = Date.now();
    try {
      exitCode = Number.parseInt(readFileSync(join(ctl, 'exit-code'), 'utf8'), 10);
    } catch {
      exitCode = null;
    }
    if (interrupted) {
      const err = new LabError(`interrupted by ${interrupted}; the lab VM was killed (serial log: ${serialLog})`);
      err.signal = interrupted;
      throw err;
    }
    if (timedOut) {
      throw new LabError(
        `the lab run exceeded its hard deadline of ${timeoutMinutes} min (KVMBAK_LAB_TIMEOUT) and was killed.\n` +
          `serial log: ${serialLog}\n--- last lines ---\n${tail(serialLog, 30)}`,
      );
    }
    if (qemuExit?.error) throw new LabError(`cannot start QEMU: ${qemuExit.error.message}`);
    if (exitCode === null || Number.isNaN(exitCode)) {
      const why = startedAt === null ? 'the guest never started the job' : 'the guest did not report an exit status';
      throw new LabError(
        `${why} (QEMU exited with ${qemuExit?.code ?? qemuExit?.signal}).\n` +
          `serial log: ${serialLog}\nQEMU log: ${qemuLog} (resets: ${qemuDebugLog})\n--- QEMU ---\n${tail(qemuLog, 10)}\n--- serial (last lines) ---\n${tail(serialLog, 30)}`,
      );
    }
    if (keptRunning) {
      qemu.unref();
      log(
        `the lab VM keeps running (pid ${qemu.pid}): console ${consoleSock} (e.g. socat -,raw,echo=0 UNIX-CONNECT:${consoleSock}; login root, no password)`,
      );
      log(`stop it with: kill ${qemu.pid}`);
    }
    return {
      exitCode,
      runDir,
      serialLog,
      bootMs: startedAt === null ? null : startedAt - t0,
      jobMs: startedAt === null ? null : endedAt - startedAt,
      totalMs: endedAt - t0,
    };
  } finally {
    clearTimeout(deadline);
    for (const s of signals) process.off(s, onSignal);
    process.off('exit', kill);
    if (!keptRunning) {
      kill();
      await exited;
      if (!keep) {
        rmSync(overlay, { force: true });
        rmSync(dataDisk, { force: true });
      }
    }
  }
}

function parseCli(args) {
  const opts = { env: {}, keep: process.env.KVMBAK_LAB_KEEP === '1', timeoutMinutes: undefined, argv: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      opts.argv = args.slice(i + 1);
      break;
    } else if (a === '--keep') {
      opts.keep = true;
    } else if (a === '--timeout') {
      opts.timeoutMinutes = Number(args[++i]);
      if (!Number.isFinite(opts.timeoutMinutes) || opts.timeoutMinutes <= 0) throw new LabError('--timeout needs a positive number of minutes');
    } else if (a === '--env') {
      const kv = args[++i] ?? '';
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new LabError(`--env needs NAME=VALUE, got ${JSON.stringify(kv)}`);
      opts.env[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else {
      throw new LabError(`unknown option ${a}; usage: run.mjs [--timeout MIN] [--keep] [--env NAME=VALUE]... -- COMMAND [ARG]...`);
    }
  }
  if (opts.argv.length === 0) throw new LabError('usage: run.mjs [--timeout MIN] [--keep] [--env NAME=VALUE]... -- COMMAND [ARG]...');
  return opts;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const opts = parseCli(process.argv.slice(2));
    if (process.getuid?.() !== 0) throw new LabError('the lab runs as root (QEMU with 9p shares of root-owned files): run as root');
    const stopExitingOnSignals = exitOnSignals();
    const { dir } = await ensureImage();
    stopExitingOnSignals();
    const result = await runJob({
      imageDir: dir,
      argv: opts.argv,
      env: opts.env,
      keep: opts.keep,
      timeoutMinutes: opts.timeoutMinutes ?? defaultTimeoutMinutes(),
    });
    log(
      `job exit status ${result.exitCode} (boot ${seconds(result.bootMs ?? 0)}, job ${seconds(result.jobMs ?? 0)}; serial log ${result.serialLog})`,
    );
    process.exitCode = result.exitCode;
  } catch (err) {
    process.exitCode = failureExitCode(err);
  }
}
