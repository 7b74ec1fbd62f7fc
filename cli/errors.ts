import { isAbortError, isKvmbakError } from '../src/index.js';
import { cancelledExitCode } from './signals.js';

/** A command-line usage error: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  /** yargs' own messages: several lines on purpose. */
  readonly multiline: boolean;
  constructor(message: string, options: { multiline?: boolean } = {}) {
    super(message);
    this.multiline = options.multiline ?? false;
  }
}

/**
 * `text` with every control character written out (\n, \t, \x1b, ...), so
 * that a name or message holding a newline or a terminal escape can never
 * forge a line of kvmbak's output or drive the terminal. With `keepNewlines`,
 * line breaks stay (text kvmbak lays out in lines itself).
 */
export function escapeControl(text: string, keepNewlines = false): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === '\n') return keepNewlines ? c : '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** Writes one line to stderr, control characters escaped. */
export function errLine(text: string): void {
  process.stderr.write(`${escapeControl(text)}\n`);
}

/**
 * Prints one line for an error on stderr (the stack only with --debug) and
 * returns the exit code: 2 for usage errors, 128 + the signal's number for a
 * run cancelled by a signal (130 for SIGINT), 1 otherwise.
 */
export function reportError(err: unknown, debug: boolean, json: boolean): number {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = e instanceof UsageError ? 2 : isAbortError(e) ? cancelledExitCode() : 1;
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
  const text = debug && e.stack ? e.stack : escapeControl(e.message, e instanceof UsageError && e.multiline);
  process.stderr.write(`kvmbak: ${text}${e instanceof UsageError ? `\nRun 'kvmbak --help' for usage.` : ''}\n`);
  return code;
}

/** A library text (a message, a skip reason) with its quoted option fields said as flags. */
export function flagsIn(text: string, flags: Readonly<Record<string, string>>): string {
  return text.replace(/`([A-Za-z][\w.]*)`/g, (all, field: string) => flags[field] ?? all);
}

/**
 * The library names its option fields (`agentTimeoutSeconds`, or in advice
 * quoted: "use `mode` pause"); the CLI says them as its flags. Rewrites the
 * message of `e` in place with `flags` (field → flag) and returns it.
 */
export function withFlags<T>(e: T, flags: Readonly<Record<string, string>>): T {
  if (!(e instanceof Error)) return e;
  let m = flagsIn(e.message, flags);
  const option = isKvmbakError(e) ? (e as { option?: unknown }).option : undefined;
  if (typeof option === 'string' && flags[option] !== undefined && new RegExp(`^${option}\\b`).test(m)) {
    m = flags[option] + m.slice(option.length);
  }
  e.message = m;
  return e;
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
