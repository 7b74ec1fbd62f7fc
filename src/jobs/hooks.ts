/**
 * Hook scripts: an executable the administrator names (`hook`), called at
 * each phase of a run with the phase as its only argument and the facts in
 * KVMBAK_* environment variables — never through a shell. Its output is
 * handed to the caller line by line (kvmbak's log); it gets a time limit,
 * after which it is killed (SIGTERM, then SIGKILL) and counts as failed.
 */
import { spawn } from 'node:child_process';
import { KvmbakError } from '../errors.js';

/** The phases, in the order of a run (per domain from backup-start to backup-end/backup-abort). */
export const HOOK_PHASES = ['job-start', 'backup-start', 'pre-hold', 'post-resume', 'backup-end', 'backup-abort', 'job-end'] as const;
export type HookPhase = (typeof HOOK_PHASES)[number];

/** Phases whose failure stops the domain (job-start: every domain) before anything is touched. */
export const BLOCKING_PHASES: readonly HookPhase[] = ['job-start', 'backup-start', 'pre-hold'];

export interface HookFacts {
  domain?: string;
  mode?: string;
  /** The backup set's folder (once it exists). */
  set?: string;
  /** 'ok' or 'failed' (backup-end, backup-abort, job-end). */
  status?: 'ok' | 'failed';
  /** The failure's message (backup-abort, job-end after a failure). */
  error?: string;
}

export interface RunHookOptions {
  /** Default 300 s. */
  timeoutSeconds?: number;
  /** Each line the hook prints (stdout and stderr). */
  onOutput?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
  /** Grace between SIGTERM and SIGKILL at the time limit (ms, default 5000). */
  killGraceMs?: number;
}

/** A hook that failed: exited non-zero, was killed, timed out or could not be started. */
export class HookError extends KvmbakError {
  readonly phase: HookPhase;
  readonly hook: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  constructor(
    message: string,
    details: { phase: HookPhase; hook: string; exitCode: number | null; signal: string | null; timedOut: boolean },
    options: { cause?: unknown } = {},
  ) {
    super(message, 'KVMBAK_HOOK_FAILED', options);
    this.phase = details.phase;
    this.hook = details.hook;
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.timedOut = details.timedOut;
  }
}
Object.defineProperty(HookError.prototype, 'name', { value: 'HookError', enumerable: false });

/** The environment a hook sees: kvmbak's own, plus the phase's facts (unset facts are absent). */
export function hookEnvironment(phase: HookPhase, facts: HookFacts, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of Object.keys(env)) if (k.startsWith('KVMBAK_')) delete env[k];
  env.KVMBAK_PHASE = phase;
  if (facts.domain !== undefined) env.KVMBAK_DOMAIN = facts.domain;
  if (facts.mode !== undefined) env.KVMBAK_MODE = facts.mode;
  if (facts.set !== undefined) env.KVMBAK_SET = facts.set;
  if (facts.status !== undefined) env.KVMBAK_STATUS = facts.status;
  if (facts.error !== undefined) env.KVMBAK_ERROR = facts.error;
  return env;
}

/** Runs `hook PHASE`; resolves when it exits 0, rejects with a HookError otherwise. */
export function runHook(hook: string, phase: HookPhase, facts: HookFacts, options: RunHookOptions = {}): Promise<void> {
  const timeoutMs = Math.round((options.timeoutSeconds ?? 300) * 1000);
  const grace = options.killGraceMs ?? 5000;
  return new Promise((resolve, reject) => {
    // Its own process group, so the time limit reaches what the hook started too (a shell's `sleep`).
    const child = spawn(hook, [phase], {
      env: hookEnvironment(phase, facts),
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
      detached: true,
    });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const signalGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        child.kill(sig);
      }
    };
    const kill = (): void => {
      signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), grace);
      killTimer.unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, timeoutMs);
    const onAbort = (): void => kill();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const lines = (stream: 'stdout' | 'stderr'): ((d: Buffer) => void) => {
      let rest = '';
      const flush = (): void => {
        if (rest !== '') options.onOutput?.(rest, stream);
        rest = '';
      };
      child[stream]!.on('end', flush);
      return (d) => {
        const parts = (rest + d.toString('utf8')).split('\n');
        rest = parts.pop()!;
        for (const p of parts) options.onOutput?.(p.replace(/\r$/, ''), stream);
      };
    };
    child.stdout!.on('data', lines('stdout'));
    child.stderr!.on('data', lines('stderr'));
    let settled = false;
    const finish = (err: HookError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', onAbort);
      if (err === null) resolve();
      else reject(err);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'ENOENT' ? 'does not exist' : e.code === 'EACCES' ? 'is not executable (chmod +x it)' : e.message;
      finish(new HookError(`hook ${hook} ${phase}: ${why}`, { phase, hook, exitCode: null, signal: null, timedOut: false }, { cause: e }));
    });
    // The result is the hook's exit; a process it left behind holding its output open is not waited for long.
    let drainTimer: NodeJS.Timeout | undefined;
    child.on('exit', (code, sig) => {
      drainTimer = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        done(code, sig);
      }, 2000);
      drainTimer.unref();
    });
    child.on('close', (code, sig) => done(code, sig));
    const done = (code: number | null, sig: NodeJS.Signals | null): void => {
      if (drainTimer !== undefined) clearTimeout(drainTimer);
      if (code === 0) return finish(null);
      const why = timedOut
        ? `did not finish within ${options.timeoutSeconds ?? 300} s and was killed`
        : sig !== null
          ? `was killed by ${sig}`
          : `exited with status ${code}`;
      finish(new HookError(`hook ${hook} ${phase} ${why}`, { phase, hook, exitCode: code, signal: sig, timedOut }));
    };
  });
}
