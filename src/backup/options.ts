/**
 * Checking backup options: every field, before anything is planned or
 * touched. The archive's own checks (level, threads, chunk size) are used as
 * they are, so the library, the CLI and the archiver accept exactly the same
 * values. Messages name the option fields; the CLI maps them to its flags.
 */
import { checkChunkSize, checkLevel, checkThreads } from '../archive/index.js';
import { CHUNK_SIZE } from '../chunks/index.js';
import { ConfigError } from '../errors.js';
import { STORAGE_FORMATS, type StorageFormat } from '../manifest/index.js';
import { parseSnapshotSize } from './sizing.js';
import { BACKUP_MODES, type BackupOptions } from './types.js';

/** Seconds a guest-agent call may take when no `agentTimeoutSeconds` is given. */
export const DEFAULT_AGENT_TIMEOUT_SECONDS = 10;
/** How disks are stored when no `format` is given: into the destination's chunk store. */
export const DEFAULT_FORMAT: StorageFormat = 'chunks';
/** libvirt takes the agent timeout as a C int of seconds. */
const MAX_AGENT_TIMEOUT_SECONDS = 2 ** 31 - 1;

/** The BackupOptions fields, for callers mapping them to their own names (the CLI's flags). */
export const BACKUP_OPTION_NAMES = [
  'domain',
  'dest',
  'uri',
  'mode',
  'quiesceFallback',
  'agentTimeoutSeconds',
  'snapshotSize',
  'format',
  'level',
  'threads',
  'chunkSize',
  'full',
  'exclude',
  'dryRun',
  'extendThreshold',
  'watchIntervalMs',
  'hooks',
] as const;

export function checkAgentTimeout(v: unknown): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_AGENT_TIMEOUT_SECONDS) {
    throw new ConfigError(
      `agentTimeoutSeconds must be a whole number of seconds from 1 to ${MAX_AGENT_TIMEOUT_SECONDS}, got ${String(v)}`,
      'agentTimeoutSeconds',
    );
  }
}

function checkString(v: unknown, field: string, what: string): void {
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${field} must be ${what}, got ${JSON.stringify(v)}`, field);
}

/**
 * Checks every field of `o` (ConfigError naming the first bad one). With
 * `needDest` false (inspect) the destination may be left out.
 */
export function checkBackupOptions(o: BackupOptions, needDest = true): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('backup takes an options object with a domain', 'domain');
  checkString(o.domain, 'domain', 'the name or UUID of the domain to back up');
  if (needDest || o.dest !== undefined) checkString(o.dest, 'dest', 'the destination folder for the backup');
  if (o.uri !== undefined) checkString(o.uri, 'uri', 'a libvirt URI');
  if (o.mode !== undefined && !BACKUP_MODES.includes(o.mode)) {
    throw new ConfigError(`mode ${JSON.stringify(o.mode)} is not a mode; use one of ${BACKUP_MODES.join(', ')}`, 'mode');
  }
  if (o.quiesceFallback !== undefined && o.quiesceFallback !== 'pause' && o.quiesceFallback !== 'none') {
    throw new ConfigError(`quiesceFallback must be 'pause' or 'none', got ${JSON.stringify(o.quiesceFallback)}`, 'quiesceFallback');
  }
  checkAgentTimeout(o.agentTimeoutSeconds);
  parseSnapshotSize(o.snapshotSize);
  if (o.level !== undefined) checkLevel(o.level);
  if (o.threads !== undefined) checkThreads(o.threads);
  if (o.format !== undefined && !(STORAGE_FORMATS as readonly unknown[]).includes(o.format)) {
    throw new ConfigError(`format ${JSON.stringify(o.format)} is not a storage format; use one of ${STORAGE_FORMATS.join(', ')}`, 'format');
  }
  if (o.chunkSize !== undefined) {
    checkChunkSize(o.chunkSize);
    // Without a format, chunkSize is refused rather than taken to mean image: the
    // format decides the whole layout of the set (and what prune and restore read).
    if ((o.format ?? DEFAULT_FORMAT) === 'chunks' && o.chunkSize !== CHUNK_SIZE) {
      throw new ConfigError(
        `chunkSize applies to format image only: the chunk store${o.format === undefined ? ' (the default format)' : ''} cuts every disk into ${CHUNK_SIZE / 1048576} MiB chunks; leave chunkSize out or add format image`,
        'chunkSize',
      );
    }
  }
  if (o.exclude !== undefined) {
    if (!Array.isArray(o.exclude) || o.exclude.some((t) => typeof t !== 'string' || t === '')) {
      throw new ConfigError('exclude must be a list of disk targets such as vdb', 'exclude');
    }
  }
  if (o.full !== undefined && typeof o.full !== 'boolean') throw new ConfigError('full must be true or false', 'full');
  if (o.dryRun !== undefined && typeof o.dryRun !== 'boolean') throw new ConfigError('dryRun must be true or false', 'dryRun');
  if (o.extendThreshold !== undefined && !(typeof o.extendThreshold === 'number' && o.extendThreshold > 0 && o.extendThreshold < 100)) {
    throw new ConfigError(`extendThreshold must be a percentage between 0 and 100, got ${String(o.extendThreshold)}`, 'extendThreshold');
  }
  if (o.watchIntervalMs !== undefined && !(Number.isInteger(o.watchIntervalMs) && o.watchIntervalMs >= 1)) {
    throw new ConfigError(
      `watchIntervalMs must be a whole number of milliseconds of at least 1, got ${String(o.watchIntervalMs)}`,
      'watchIntervalMs',
    );
  }
  if (o.hooks !== undefined) {
    if (typeof o.hooks !== 'object' || o.hooks === null) throw new ConfigError('hooks must be an object of callbacks', 'hooks');
    for (const k of ['beforeHold', 'afterResume'] as const) {
      if (o.hooks[k] !== undefined && typeof o.hooks[k] !== 'function') throw new ConfigError(`hooks.${k} must be a function`, 'hooks');
    }
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new ConfigError('onProgress must be a function', 'onProgress');
}
