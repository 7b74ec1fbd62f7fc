/**
 * Child processes, one way: a CommandRunner runs a program with an argument
 * array (never a shell) and reports what it printed and how it ended. A
 * non-zero exit is a result, not an error: the caller knows what the program
 * means by it. Errors are reserved for "the program could not be run to the
 * end": not found, aborted, timed out, output too large.
 *
 * The process handling itself (timeouts, the SIGTERM→SIGKILL grace, output
 * limits, cancellation, not waiting for grandchildren that hold the pipes) is
 * execa's; this module only maps its outcomes onto kvmbak's errors.
 */
import { execa } from 'execa';
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

function buildEnv(base: Record<string, string | undefined>, extra: Record<string, string | undefined> | undefined): Record<string, string> {
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

const decoder = (bytes: Uint8Array | undefined): string =>
  bytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8') : '';

/**
 * The default runner: local processes through execa with no shell.
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

  async run(file: string, args: readonly string[], options: CommandRunOptions = {}): Promise<CommandResult> {
    if (typeof file !== 'string' || file.length === 0 || hasNul(file)) {
      throw new ConfigError(`program name must be a non-empty string without NUL bytes, got ${JSON.stringify(file)}`, 'file');
    }
    if (!Array.isArray(args) || args.some((a) => typeof a !== 'string' || hasNul(a))) {
      throw new ConfigError(`arguments of ${file} must be strings without NUL bytes`, 'args');
    }
    checkNonNegativeInteger(options.timeoutMs, 'timeoutMs');
    const { signal, timeoutMs, input } = options;
    const argv = [...args];
    if (signal?.aborted) {
      throw new AbortError(`${formatCommand(file, argv)} was aborted before it started`, { cause: signal.reason });
    }
    const env = buildEnv(this.#env ?? process.env, options.env);
    const subprocess = execa(file, argv, {
      shell: false,
      env,
      extendEnv: false,
      reject: false,
      encoding: 'buffer',
      stripFinalNewline: false,
      ...(input === undefined ? { stdin: 'ignore' as const } : { input: typeof input === 'string' ? Buffer.from(input) : input }),
      maxBuffer: this.#maxOutputBytes,
      ...(timeoutMs ? { timeout: timeoutMs } : {}),
      ...(signal ? { cancelSignal: signal } : {}),
      killSignal: 'SIGTERM',
      forceKillAfterDelay: this.#killGraceMs > 0 ? this.#killGraceMs : true,
      windowsHide: true,
    });
    // execa waits for the pipes to close, and a grandchild (a daemon the
    // program started, a backgrounded shell job) may hold them for ever. Once
    // the program itself is gone after an abort, a timeout or an output overflow, what it printed
    // is all we need: close our ends instead of waiting for theirs.
    // `killed` is set only by execa's own kill (abort, timeout, output limit).
    subprocess.once('exit', () => {
      if (subprocess.killed || signal?.aborted) {
        subprocess.stdout?.destroy();
        subprocess.stderr?.destroy();
      }
    });
    const result = await subprocess;
    const stdout = decoder(result.stdout);
    const stderr = decoder(result.stderr);
    if (result.isCanceled) {
      throw new AbortError(`${formatCommand(file, argv)} was aborted`, { cause: signal?.reason });
    }
    if (result.timedOut) throw new CommandTimeoutError(file, argv, timeoutMs ?? 0, stdout, stderr);
    if (result.isMaxBuffer) {
      const which = (result.stdout?.byteLength ?? 0) >= this.#maxOutputBytes ? 'stdout' : 'stderr';
      throw new CommandOutputTooLargeError(file, argv, which, this.#maxOutputBytes);
    }
    const cause = result.cause as NodeJS.ErrnoException | undefined;
    if (result.failed && result.exitCode === undefined && result.signal === undefined) {
      // The program never ran: spawn itself failed.
      if (cause?.code === 'ENOENT') throw new CommandNotFoundError(file, env.PATH ?? '', { cause });
      if (cause?.code === 'EACCES') {
        throw new KvmbakError(`${file} cannot be executed (permission denied): check its file mode or PATH`, 'KVMBAK_COMMAND_NOT_EXECUTABLE', {
          cause,
        });
      }
      throw new KvmbakError(`${file} could not be started: ${cause?.message ?? result.message}`, 'KVMBAK_COMMAND_START_FAILED', { cause });
    }
    return { stdout, stderr, exitCode: result.exitCode ?? null, signal: (result.signal as NodeJS.Signals | undefined) ?? null };
  }
}
