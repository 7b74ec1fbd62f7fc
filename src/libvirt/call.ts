/**
 * The one boundary between the native addon and the typed API: every raw
 * call goes through here, so no addon error can reach a caller unconverted.
 *
 * Errors from the addon are converted here: a libvirt failure becomes a
 * LibvirtError with libvirt's symbolic names, a call on a released handle a
 * ClosedHandleError. Native async errors are created on the JS thread with no
 * useful frames, so the stack is captured synchronously before the native
 * call and reattached: it points at the caller.
 */
import { ClosedHandleError, LibvirtError, type LibvirtErrorDetails } from '../errors.js';
import { VIR_ERROR_DOMAIN_NAMES, VIR_ERROR_NUMBER_NAMES } from './error-codes.js';

/** Symbolic name of a virErrorNumber ('VIR_ERR_NO_DOMAIN' for 42). */
export function virErrorName(code: number): string {
  return VIR_ERROR_NUMBER_NAMES[code] ?? `VIR_ERR_UNKNOWN_${code}`;
}

/** Symbolic name of a virErrorDomain ('VIR_FROM_TEST' for 12). */
export function virErrorDomainName(domain: number): string {
  return VIR_ERROR_DOMAIN_NAMES[domain] ?? `VIR_FROM_UNKNOWN_${domain}`;
}

interface NativeLibvirtError extends Error {
  virCode: number;
  virErrorDomain: number;
  level: number;
  operation: string;
  str1?: string;
  str2?: string;
  str3?: string;
  int1?: number;
  int2?: number;
}

function isNativeLibvirtError(e: unknown): e is NativeLibvirtError {
  return (
    e instanceof Error &&
    typeof (e as Partial<NativeLibvirtError>).virCode === 'number' &&
    typeof (e as Partial<NativeLibvirtError>).operation === 'string'
  );
}

/** Builds the LibvirtError for an error object thrown by the addon. */
export function toLibvirtError(e: NativeLibvirtError): LibvirtError {
  const details: LibvirtErrorDetails = {
    code: virErrorName(e.virCode),
    virCode: e.virCode,
    virErrorDomain: e.virErrorDomain,
    virErrorDomainName: virErrorDomainName(e.virErrorDomain),
    level: e.level,
    operation: e.operation,
  };
  for (const k of ['str1', 'str2', 'str3'] as const) if (typeof e[k] === 'string') details[k] = e[k];
  for (const k of ['int1', 'int2'] as const) if (typeof e[k] === 'number') details[k] = e[k];
  return new LibvirtError(e.message, details);
}

/** Converts anything the addon threw; `frames` are the caller's stack frames. */
export function convertNativeError(e: unknown, frames: string | undefined): unknown {
  let out: unknown = e;
  if (isNativeLibvirtError(e)) out = toLibvirtError(e);
  else if (e instanceof Error && (e as { code?: unknown }).code === 'KVMBAK_CLOSED_HANDLE') {
    out = new ClosedHandleError(e.message);
  }
  if (out instanceof Error && frames !== undefined) {
    out.stack = `${out.name}: ${out.message}\n${frames}`;
  }
  return out;
}

function callerFrames(holder: { stack?: string }): string | undefined {
  const stack = holder.stack;
  if (stack === undefined) return undefined;
  const nl = stack.indexOf('\n');
  return nl < 0 ? '' : stack.slice(nl + 1);
}

/**
 * The current stack frames, without this function's own. Public methods that
 * wait before making their native call (the save/restore limiter) take it
 * first and pass it to nativeCall.
 */
export function callSite(): string | undefined {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, callSite);
  return callerFrames(holder);
}

/**
 * Runs an asynchronous native call. The stack is captured before `fn` runs
 * (or given as `site`), so a rejection carries the frames of whoever called
 * the public method.
 */
export async function nativeCall<T>(fn: () => Promise<T>, site?: string): Promise<T> {
  let frames = site;
  if (frames === undefined) {
    const holder: { stack?: string } = {};
    Error.captureStackTrace(holder, nativeCall);
    frames = callerFrames(holder);
  }
  try {
    return await fn();
  } catch (e) {
    throw convertNativeError(e, frames);
  }
}

/** Runs a synchronous native call (accessors, free/close). */
export function nativeCallSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const holder: { stack?: string } = {};
    Error.captureStackTrace(holder, nativeCallSync);
    throw convertNativeError(e, callerFrames(holder));
  }
}
