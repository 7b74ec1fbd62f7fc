/**
 * The kvmbak error model. Every error the library throws on purpose is a
 * KvmbakError with a stable string `code`; subclasses add the fields that
 * explain what failed. Guards work across realms through a brand symbol.
 */

const BRAND = Symbol.for('kvmbak.error');

export interface KvmbakErrorOptions {
  cause?: unknown;
}

export class KvmbakError extends Error {
  readonly code: string;

  constructor(message: string, code = 'KVMBAK_ERROR', options: KvmbakErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

function defineName(ctor: { prototype: object }, name: string): void {
  Object.defineProperty(ctor.prototype, 'name', {
    value: name,
    enumerable: false,
    configurable: true,
    writable: true,
  });
}
defineName(KvmbakError, 'KvmbakError');

/** Fields copied from libvirt's virError on the thread that failed. */
export interface LibvirtErrorDetails {
  code: string;
  virCode: number;
  virErrorDomain: number;
  virErrorDomainName: string;
  level: number;
  operation: string;
  str1?: string;
  str2?: string;
  str3?: string;
  int1?: number;
  int2?: number;
}

/** A failed libvirt call: libvirt's own message and symbolic code. */
export class LibvirtError extends KvmbakError {
  readonly virCode: number;
  readonly virErrorDomain: number;
  readonly virErrorDomainName: string;
  readonly level: number;
  readonly operation: string;
  readonly str1?: string;
  readonly str2?: string;
  readonly str3?: string;
  readonly int1?: number;
  readonly int2?: number;

  constructor(message: string, details: LibvirtErrorDetails, options: KvmbakErrorOptions = {}) {
    super(message, details.code, options);
    this.virCode = details.virCode;
    this.virErrorDomain = details.virErrorDomain;
    this.virErrorDomainName = details.virErrorDomainName;
    this.level = details.level;
    this.operation = details.operation;
    if (details.str1 !== undefined) this.str1 = details.str1;
    if (details.str2 !== undefined) this.str2 = details.str2;
    if (details.str3 !== undefined) this.str3 = details.str3;
    if (details.int1 !== undefined) this.int1 = details.int1;
    if (details.int2 !== undefined) this.int2 = details.int2;
  }
}
defineName(LibvirtError, 'LibvirtError');

export interface LvmCommandErrorDetails {
  command: string;
  args: readonly string[];
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** An lvm2 command that exited non-zero (or was killed). */
export class LvmCommandError extends KvmbakError {
  readonly command: string;
  readonly args: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  /** First meaningful stderr line, or the exit status when stderr is empty. */
  readonly shortMessage: string;

  constructor(details: LvmCommandErrorDetails, options: KvmbakErrorOptions = {}) {
    const firstLine =
      details.stderr
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.length > 0 && !/^WARNING:/.test(l))[0] ?? '';
    const status = details.signal !== null ? `killed by ${details.signal}` : `exit code ${details.exitCode}`;
    const shortMessage = firstLine || status;
    super(`${details.command} failed (${status}): ${shortMessage}`, 'KVMBAK_LVM_COMMAND', options);
    this.command = details.command;
    this.args = [...details.args];
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stdout = details.stdout;
    this.stderr = details.stderr;
    this.shortMessage = shortMessage;
  }
}
defineName(LvmCommandError, 'LvmCommandError');

/** The native addon could not be loaded. */
export class NativeLoadError extends KvmbakError {
  readonly tried: string[];
  constructor(message: string, tried: string[], options: KvmbakErrorOptions = {}) {
    super(message, 'KVMBAK_NATIVE_LOAD', options);
    this.tried = tried;
  }
}
defineName(NativeLoadError, 'NativeLoadError');

/** A bad argument or option value supplied by the caller. */
export class ConfigError extends KvmbakError {
  readonly option: string | undefined;
  constructor(message: string, option?: string, options: KvmbakErrorOptions = {}) {
    super(message, 'KVMBAK_INVALID_ARGUMENT', options);
    this.option = option;
  }
}
defineName(ConfigError, 'ConfigError');

/** The operation was cancelled through an AbortSignal. */
export class AbortError extends KvmbakError {
  constructor(message = 'The operation was aborted', options: KvmbakErrorOptions = {}) {
    super(message, 'ABORT_ERR', options);
  }
}
defineName(AbortError, 'AbortError');

/** A wrapper (Domain, Hypervisor, ...) was used after free()/close(). */
export class ClosedHandleError extends KvmbakError {
  constructor(message: string) {
    super(message, 'KVMBAK_CLOSED_HANDLE');
  }
}
defineName(ClosedHandleError, 'ClosedHandleError');

export function isKvmbakError(e: unknown): e is KvmbakError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
}

/**
 * True when `e` is a LibvirtError, optionally with the given code. The code
 * may be given with or without the `VIR_ERR_` prefix: 'NO_DOMAIN' and
 * 'VIR_ERR_NO_DOMAIN' are the same.
 */
export function isLibvirtError(e: unknown, code?: string): e is LibvirtError {
  if (!isKvmbakError(e) || (e as Error).name !== 'LibvirtError') return false;
  if (code === undefined) return true;
  const want = code.startsWith('VIR_ERR_') ? code : `VIR_ERR_${code}`;
  return e.code === want;
}

export function isLvmCommandError(e: unknown): e is LvmCommandError {
  return isKvmbakError(e) && e.code === 'KVMBAK_LVM_COMMAND';
}

export function isAbortError(e: unknown): boolean {
  return (
    (isKvmbakError(e) && e.code === 'ABORT_ERR') ||
    (e instanceof Error && (e.name === 'AbortError' || (e as { code?: unknown }).code === 'ABORT_ERR'))
  );
}

/** Throws an AbortError (with the signal's reason as cause) when the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError('The operation was aborted', { cause: signal.reason });
}
