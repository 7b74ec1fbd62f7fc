// Shared pieces of the kvmbak lab (host side): locations, logging, child processes, a cache lock.
// Child processes are always spawned with argument arrays, never through a shell.
import { spawn } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, readFileSync, readdirSync, rmSync, statSync, writeSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const labDir = dirname(fileURLToPath(import.meta.url));
export const e2eDir = resolve(labDir, '..');
export const checkoutDir = resolve(e2eDir, '..', '..');

/** Where images, the .deb cache and run folders live: outside the checkout so CI clones reuse it. */
export function cacheDir() {
  return resolve(process.env.KVMBAK_LAB_CACHE || '/var/cache/kvmbak-lab');
}

export function log(message) {
  process.stderr.write(`[lab] ${message}\n`);
}

export class LabError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'LabError';
  }
}

/** Says why a lab command failed; returns its exit status (128 + n after SIGINT or SIGTERM, else 1). */
export function failureExitCode(err) {
  log(err instanceof LabError ? err.message : String(err?.stack ?? err));
  return err?.signal === 'SIGINT' ? 130 : err?.signal ? 143 : 1;
}

export function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Process groups of the commands run() is waiting for (each runs in its own group). */
const liveGroups = new Set();

/** Sends `signal` to every command run() started that is still running (their whole groups). */
export function stopChildren(signal = 'SIGTERM') {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, signal);
    } catch {
      // already gone
    }
  }
}

/**
 * Runs a program and waits for it, with a deadline (default 20 min: a hung mirror or build must
 * never hang CI). stdio 'inherit' streams to the console; 'capture' collects stdout/stderr
 * (returned); `logFile` appends both to that file. The command runs in its own process group so
 * stopChildren() and the deadline reach everything it started. Rejects with LabError on failure.
 */
export function run(file, args, { stdio = 'inherit', cwd, env, logFile, timeoutMs = 20 * 60_000 } = {}) {
  return new Promise((resolvePromise, reject) => {
    let out = 'inherit';
    let fd;
    if (logFile) {
      fd = openSync(logFile, 'a');
      writeSync(fd, `\n$ ${[file, ...args].join(' ')}\n`);
      out = fd;
    } else if (stdio === 'capture') {
      out = 'pipe';
    }
    const child = spawn(file, args, { cwd, env, stdio: ['ignore', out, out], detached: true });
    if (fd !== undefined) closeSync(fd);
    if (child.pid !== undefined) liveGroups.add(child.pid);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d) => (stderr += d));
    let settled = false;
    const settle = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      liveGroups.delete(child.pid);
      if (err) reject(err);
      else resolvePromise(value);
    };
    child.on('error', (err) => settle(new LabError(`cannot run ${file}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      if (code === 0 && !signal) {
        settle(null, { code, stdout, stderr });
        return;
      }
      const status = timedOut ? `killed after its deadline of ${seconds(timeoutMs)}` : signal ? `killed by ${signal}` : `exit code ${code}`;
      const detail = logFile ? ` (log: ${logFile})` : stderr.trim() ? `: ${stderr.trim().split('\n').slice(-5).join(' | ')}` : '';
      settle(new LabError(`${file} ${args.join(' ')} failed (${status})${detail}`));
    });
  });
}

/**
 * Until the returned function is called: on SIGINT/SIGTERM/SIGHUP, kill every running command
 * (whole process groups: a build in a throw-away folder needs no grace) and exit 130 (SIGINT)
 * or 143. For the phases before the VM exists; runJob() has its own handling.
 */
export function exitOnSignals() {
  const handler = (signal) => {
    log(`${signal}: stopping`);
    stopChildren('SIGKILL');
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of signals) process.on(sig, handler);
  return () => {
    for (const sig of signals) process.off(sig, handler);
  };
}

export function commandExists(name) {
  for (const dir of (process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/** True while a process with this pid exists. */
export function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/**
 * A lock file holding the owner's pid; a lock whose owner is gone is taken over.
 * Waits (polling) while another live process holds it. Returns a release function.
 */
export async function acquireLock(path, what) {
  mkdirSync(dirname(path), { recursive: true });
  let announced = false;
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    let owner = NaN;
    try {
      owner = Number.parseInt(readFileSync(path, 'utf8'), 10);
    } catch {
      // vanished between open and read: retry
    }
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner)) {
      if (!announced) log(`waiting for ${what} (held by pid ${owner}, lock ${path})`);
      announced = true;
      await sleep(2000);
    } else {
      rmSync(path, { force: true });
    }
  }
}

/** Whether build/Release/kvmbak.node is missing or older than binding.gyp or a file in native/. */
function addonStale() {
  let built;
  try {
    built = statSync(join(checkoutDir, 'build', 'Release', 'kvmbak.node')).mtimeMs;
  } catch {
    return true;
  }
  const sources = [join(checkoutDir, 'binding.gyp'), ...readdirSync(join(checkoutDir, 'native')).map((n) => join(checkoutDir, 'native', n))];
  return sources.some((p) => statSync(p).mtimeMs > built);
}

/**
 * Builds the package on the host (tsup, then the native addon); the guest loads it. Returns the
 * ms it took. `addon: 'if-stale'` skips node-gyp when the addon is newer than its sources.
 */
export async function buildPackage({ addon = 'always' } = {}) {
  const logFile = join(cacheDir(), 'logs', `package-build-${process.pid}.log`);
  closeSync(openSync(logFile, 'w'));
  const started = Date.now();
  try {
    await run('npx', ['tsup'], { cwd: checkoutDir, logFile });
    if (addon === 'always' || addonStale()) await run('npm', ['run', 'build:native'], { cwd: checkoutDir, logFile });
  } catch (err) {
    const tail = readFileSync(logFile, 'utf8').split('\n').slice(-25).join('\n');
    throw new LabError(`building the package failed: ${err.message}\n${tail}`, { cause: err });
  }
  return Date.now() - started;
}
