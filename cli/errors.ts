import { isAbortError, isKvmbakError } from '../src/index.js';

/** A command-line usage error: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * Prints one line for an error on stderr (the stack only with --debug) and
 * returns the exit code: 2 for usage errors, 130 for a cancelled run, 1 otherwise.
 */
export function reportError(err: unknown, debug: boolean, json: boolean): number {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = e instanceof UsageError ? 2 : isAbortError(e) ? 130 : 1;
  const message = e instanceof UsageError ? `${e.message}\nRun 'kvmbak --help' for usage.` : e.message;
  if (json) {
    const doc = {
      ok: false,
      error: {
        name: e.name,
        code: isKvmbakError(e) ? e.code : e instanceof UsageError ? 'USAGE' : undefined,
        message: e.message,
      },
    };
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  }
  process.stderr.write(`kvmbak: ${debug && e.stack ? e.stack : message}\n`);
  return code;
}

/**
 * A library ConfigError (KVMBAK_INVALID_ARGUMENT) is a usage error (exit 2);
 * with `options`, only when it is about one of them.
 */
export function asUsage(e: unknown, options?: readonly string[]): unknown {
  if (!isKvmbakError(e) || e.code !== 'KVMBAK_INVALID_ARGUMENT') return e;
  const option = (e as { option?: string }).option;
  if (options !== undefined && (option === undefined || !options.includes(option))) return e;
  return new UsageError(e.message);
}
