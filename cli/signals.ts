import { constants } from 'node:os';
import { AbortError } from '../src/index.js';
import { asUsage } from './errors.js';

/**
 * The signals that cancel a running operation. SIGHUP is what a dropped SSH
 * session sends, SIGQUIT is Ctrl-\: left to their default action they would
 * kill kvmbak with a VM saved or paused in the middle of its window.
 */
const CANCELLING: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

let interruptedBy: NodeJS.Signals | null = null;

/** The exit status of a run cancelled by a signal: 128 + its number (130 for SIGINT, 129 SIGHUP, 131 SIGQUIT, 143 SIGTERM). */
export function cancelledExitCode(): number {
  return 128 + (constants.signals[interruptedBy ?? 'SIGINT'] ?? 2);
}

/**
 * After a hangup the terminal is gone: writing progress or the final message
 * to it fails (EIO, EPIPE), and an unhandled stream error would kill kvmbak
 * in the middle of bringing a VM back. Such errors are dropped from then on.
 */
function ignoreOutputErrors(): void {
  for (const s of [process.stdout, process.stderr]) {
    if (!s.listeners('error').includes(dropError)) s.on('error', dropError);
  }
}
function dropError(): void {
  // The terminal is gone; there is nobody left to tell.
}

/**
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT abort the running operation through its
 * AbortSignal: it finishes what must not be left half-done (a backup window
 * brings the VM back and removes its snapshots), cleans up, and the command
 * exits 128 + the signal's number. A second SIGINT (Ctrl-C twice) exits at
 * once; any other signal while cancelling is ignored, so that a hangup or a
 * service manager's repeated SIGTERM cannot cut the cleanup short.
 */
export function abortOnSignals(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (sig === 'SIGHUP') ignoreOutputErrors();
    if (ac.signal.aborted) {
      if (sig === 'SIGINT') process.exit(cancelledExitCode());
      return;
    }
    interruptedBy = sig;
    ac.abort(new AbortError(`interrupted by ${sig}`));
  };
  for (const s of CANCELLING) process.on(s, onSignal);
  return {
    signal: ac.signal,
    dispose: () => {
      for (const s of CANCELLING) process.off(s, onSignal);
    },
  };
}

/**
 * Runs one library call with the cancelling signals wired to its AbortSignal:
 * a library option error becomes a usage error (with `usageOptions`, only one
 * about those options), and `cleanup` (e.g. clearing a progress bar) always
 * runs before the result or the error is reported.
 */
export async function runCancellable<T>(
  fn: (signal: AbortSignal) => Promise<T>,
  opts: { cleanup?: () => void; usageOptions?: readonly string[] } = {},
): Promise<T> {
  const sig = abortOnSignals();
  try {
    return await fn(sig.signal);
  } catch (e) {
    throw asUsage(e, opts.usageOptions);
  } finally {
    opts.cleanup?.();
    sig.dispose();
  }
}
