/**
 * Who is running an operation: enough to tell later, from another process,
 * whether that run can still be alive (same host, same boot, same process
 * incarnation) — used by locks and journals.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isRecord } from '../util/fs.js';

/** The identity of a kvmbak process, as written into lock and journal files. */
export interface ProcessOwner {
  pid: number;
  /** os.hostname(). */
  host: string;
  /** /proc/sys/kernel/random/boot_id: changes at every boot. null when unavailable. */
  bootId: string | null;
  /** The process start time in clock ticks after boot (/proc/PID/stat field 22): tells a reused pid apart. */
  pidStart: number | null;
  /** When the operation started, ISO 8601 UTC. */
  startedAt: string;
}

/** A lock file's content. */
export interface LockOwner extends ProcessOwner {
  domain: string;
  /** What the holder is doing: 'backup', 'restore', 'prune', 'recover', ... */
  operation: string;
  /** Random, unique to this lock instance. */
  nonce: string;
}

/** 'alive': the process may still run; 'dead': it certainly does not; 'unknown': another host. */
export type OwnerStatus = 'alive' | 'dead' | 'unknown';

/** True when `v` (parsed JSON) has every ProcessOwner field with the right type. */
export function isProcessOwner(v: unknown): v is ProcessOwner {
  return (
    isRecord(v) &&
    typeof v.pid === 'number' &&
    typeof v.host === 'string' &&
    (typeof v.bootId === 'string' || v.bootId === null) &&
    (typeof v.pidStart === 'number' || v.pidStart === null) &&
    typeof v.startedAt === 'string'
  );
}

let cachedBootId: string | null | undefined;

export function currentBootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      cachedBootId = null;
    }
  }
  return cachedBootId;
}

/** State letter and start time of a process from /proc/PID/stat, or null when it has no entry. */
function procStat(pid: number): { state: string; start: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]);
  return { state: fields[0] ?? '?', start: Number.isSafeInteger(start) ? start : NaN };
}

/** The identity of this process, for an operation starting now. */
export function processOwner(startedAt: Date = new Date()): ProcessOwner {
  const stat = procStat(process.pid);
  return {
    pid: process.pid,
    host: hostname(),
    bootId: currentBootId(),
    pidStart: stat && Number.isFinite(stat.start) ? stat.start : null,
    startedAt: startedAt.toISOString(),
  };
}

/**
 * Whether the process that wrote `owner` can still be running. Another host
 * cannot be checked ('unknown'). On this host it is dead when the boot id
 * differs (rebooted since), when no process has its pid, when that pid is a
 * zombie, or when the pid now belongs to a process started at another time.
 */
export function ownerStatus(owner: Pick<ProcessOwner, 'pid' | 'host' | 'bootId' | 'pidStart'>): OwnerStatus {
  if (owner.host !== hostname()) return 'unknown';
  const boot = currentBootId();
  if (boot !== null && owner.bootId !== null && owner.bootId !== boot) return 'dead';
  if (!Number.isSafeInteger(owner.pid) || owner.pid <= 0) return 'dead';
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as { code?: string }).code === 'ESRCH') return 'dead';
    // EPERM: a process with that pid exists (another user's).
  }
  const stat = procStat(owner.pid);
  if (stat === null) return 'alive';
  if (stat.state === 'Z' || stat.state === 'X') return 'dead';
  if (owner.pidStart !== null && Number.isFinite(stat.start) && stat.start !== owner.pidStart) return 'dead';
  return 'alive';
}
