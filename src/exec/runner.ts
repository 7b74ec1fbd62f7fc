/**
 * Child processes, one way: a CommandRunner runs a program with an argument
 * array (never a shell) and reports what it printed and how it ended. A
 * non-zero exit is a result, not an error: the caller knows what the program
 * means by it. Errors are reserved for "the program could not be run to the
 * end": not found, aborted, timed out, output too large.
 */
import { spawn } from 'node:child_process';
import { AbortError, ConfigError, KvmbakError } from '../errors.js';
import { CommandNotFoundError, CommandOutputTooLargeError, CommandTimeoutError, formatCommand } from './errors.js';

export interface CommandRunOptions {
  /** Aborting kills the child (SIGTERM, then SIGKILL) and rejects with AbortError. */
  signal?: AbortSignal;
  /** Kill the child and reject with CommandTimeoutError after this many milliseconds (0 or absent: no limit). */
  timeoutMs?: number;
  /** Extra environment variables (on top of the runner's base environment). `undefined` removes one. */
  env?: Record<string, string | undefined>;
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Uint8Array;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** The exit code, or null when the child was ended by a signal. */
  exitCode: number | null;
  /** The signal that ended the child (e.g. 'SIGKILL'), or null when it exited. */
  signal: NodeJS.Signals | null;
}

/** Runs one program to completion. Injectable: a later runner may run commands on another host. */
export interface CommandRunner {
  run(file: string, args: readonly string[], options?: CommandRunOptions): Promise<CommandResult>;
}

/** Variables every command gets: C locale (stable, parseable messages) and no lvm2 fd-leak warnings. */
export const COMMAND_BASE_ENV: Readonly<Record<string, string>> = Object.freeze({
  LC_ALL: 'C',
  LVM_SUPPRESS_FD_WARNINGS: '1',
});

/** Directories holding lvm2 and other admin tools, appended to PATH when missing (non-root users lack them). */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

export interface LocalCommandRunnerOptions {
  /** Time between SIGTERM and SIGKILL when aborting or timing out. Default 5000 ms. */
  killGraceMs?: number;
  /** Largest stdout (and, separately, stderr) accepted before the child is killed. Default 64 MiB. */
  maxOutputBytes?: number;
  /** Base environment. Default: process.env at the time of each run. */
  env?: Record<string, string | undefined>;
}

function checkNonNegativeInteger(value: number | undefined, option: string): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ConfigError(`${option} must be a non-negative integer number of milliseconds or bytes, got ${String(value)}`, option);
  }
}

function withSbin(path: string | undefined): string {
  const parts = (path ?? '').split(':').filter((p) => p.length > 0);
  for (const dir of SBIN_DIRS) if (!parts.includes(dir)) parts.push(dir);
  return parts.join(':');
}

function buildEnv(
  base: Record<string, string | undefined>,
  extra: Record<string, string | undefined> | undefined,
): Record<string, string> {
  const merged: Record<string, string | undefined> = { ...base, PATH: withSbin(base.PATH), ...COMMAND_BASE_ENV };
  if (extra) {
    for (const [key, value] of Object.entries(extra)) merged[key] = value;
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(merged)) if (value !== undefined) env[key] = value;
  return env;
}

function hasNul(s: string): boolean {
  return s.includes('\0');
}

/**
 * The default runner: local processes through `spawn` with `shell: false`.
 * The environment always carries LC_ALL=C and LVM_SUPPRESS_FD_WARNINGS=1
 * (overridable per call), and PATH is completed with the sbin directories.
 */
export class LocalCommandRunner implements CommandRunner {
  readonly #killGraceMs: number;
  readonly #maxOutputBytes: number;
  readonly #env: Record<string, string | undefined> | undefined;

  constructor(options: LocalCommandRunnerOptions = {}) {
    checkNonNegativeInteger(options.killGraceMs, 'killGraceMs');
    checkNonNegativeInteger(options.maxOutputBytes, 'maxOutputBytes');
    this.#killGraceMs = options.killGraceMs ?? 5000;
    this.#maxOutputBytes = options.maxOutputBytes ?? 64 * 1024 * 1024;
    this.#env = options.env;
  }

  run(file: string, args: readonly string[], options: CommandRunOptions = {}): Promise<CommandResult> {
    if (typeof file !== 'string' || file.length === 0 || hasNul(file)) {
      return Promise.reject(new ConfigError(`program name must be a non-empty string without NUL bytes, got ${JSON.stringify(file)}`, 'file'));
    }
    if (!Array.isArray(args) || args.some((a) => typeof a !== 'string' || hasNul(a))) {
      return Promise.reject(new ConfigError(`arguments of ${file} must be strings without NUL bytes`, 'args'));
    }
    try {
      checkNonNegativeInteger(options.timeoutMs, 'timeoutMs');
    } catch (e) {
      return Promise.reject(e);
    }
    const { signal, timeoutMs, input } = options;
    const argv = [...args];
    if (signal?.aborted) {
      return Promise.reject(new AbortError(`${formatCommand(file, argv)} was aborted before it started`, { cause: signal.reason }));
    }
    const env = buildEnv(this.#env ?? process.env, options.env);
    const killGraceMs = this.#killGraceMs;
    const maxOutputBytes = this.#maxOutputBytes;

    return new Promise<CommandResult>((resolve, reject) => {
      const child = spawn(file, argv, {
        shell: false,
        env,
        stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });

      const stdoutChunks: Buffer[] = [];
      const stderrChunks: Buffer[] = [];
      let stdoutBytes = 0;
      let stderrBytes = 0;
      let settled = false;
      let exited = false;
      let failure: Error | undefined;
      let timeoutTimer: NodeJS.Timeout | undefined;
      let killTimer: NodeJS.Timeout | undefined;

      const collected = (): { stdout: string; stderr: string } => ({
        stdout: Buffer.concat(stdoutChunks).toString('utf8'),
        stderr: Buffer.concat(stderrChunks).toString('utf8'),
      });

      const cleanup = (): void => {
        if (timeoutTimer) clearTimeout(timeoutTimer);
        if (killTimer) clearTimeout(killTimer);
        signal?.removeEventListener('abort', onAbort);
      };

      const settleReject = (error: Error): void => {
        if (settled) return;
        settled = true;
        cleanup();
        // Do not wait for grandchildren that may still hold the pipes.
        child.stdout?.destroy();
        child.stderr?.destroy();
        child.stdin?.destroy();
        reject(error);
      };

      /** Ends the child for `error`; rejects once the child is gone. */
      const terminate = (error: Error): void => {
        if (settled || failure) return;
        failure = error;
        if (exited) {
          settleReject(error);
          return;
        }
        child.kill('SIGTERM');
        killTimer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, killGraceMs);
        killTimer.unref?.();
      };

      function onAbort(): void {
        terminate(new AbortError(`${formatCommand(file, argv)} was aborted`, { cause: signal?.reason }));
      }

      const collect = (chunks: Buffer[], which: 'stdout' | 'stderr') => (chunk: Buffer) => {
        if (which === 'stdout') stdoutBytes += chunk.length;
        else stderrBytes += chunk.length;
        const total = which === 'stdout' ? stdoutBytes : stderrBytes;
        if (total > maxOutputBytes) {
          terminate(new CommandOutputTooLargeError(file, argv, which, maxOutputBytes));
          return;
        }
        chunks.push(chunk);
      };
      child.stdout?.on('data', collect(stdoutChunks, 'stdout'));
      child.stderr?.on('data', collect(stderrChunks, 'stderr'));

      if (child.stdin) {
        // A child that exits without reading its input makes the write fail with EPIPE: not our error.
        child.stdin.on('error', () => {});
        child.stdin.end(input);
      }

      child.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') {
          settleReject(new CommandNotFoundError(file, env.PATH ?? '', { cause: err }));
        } else if (err.code === 'EACCES') {
          settleReject(
            new KvmbakError(`${file} cannot be executed (permission denied): check its file mode or PATH`, 'KVMBAK_COMMAND_NOT_EXECUTABLE', {
              cause: err,
            }),
          );
        } else if (!exited && child.pid === undefined) {
          settleReject(new KvmbakError(`${file} could not be started: ${err.message}`, 'KVMBAK_COMMAND_START_FAILED', { cause: err }));
        }
        // Other errors (a kill() failing after exit) end through 'exit'/'close'.
      });

      child.on('exit', () => {
        exited = true;
        if (failure) settleReject(failure);
      });

      child.on('close', (exitCode: number | null, sig: NodeJS.Signals | null) => {
        exited = true;
        if (failure) {
          settleReject(failure);
          return;
        }
        if (settled) return;
        settled = true;
        cleanup();
        resolve({ ...collected(), exitCode, signal: sig });
      });

      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timeoutTimer = setTimeout(() => {
          const sofar = collected();
          terminate(new CommandTimeoutError(file, argv, timeoutMs, sofar.stdout, sofar.stderr));
        }, timeoutMs);
      }
    });
  }
}
