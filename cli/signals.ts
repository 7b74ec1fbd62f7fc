import { AbortError } from '../src/index.js';
import { asUsage } from './errors.js';

/**
 * SIGINT/SIGTERM → abort the running operation through its AbortSignal (it
 * cleans up and the command exits 130); a second signal exits at once.
 */
export function abortOnSignals(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort(new AbortError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/**
 * Runs one library call with SIGINT/SIGTERM wired to its AbortSignal: a
 * library option error becomes a usage error (with `usageOptions`, only one
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
