import { KvmbakError, isKvmbakError, type KvmbakErrorOptions } from '../errors.js';
import type { LockOwner } from './owner.js';

export const STORE_ERROR_CODES = [
  /** The destination folder does not exist (or is not a folder). */
  'KVMBAK_DEST_NOT_FOUND',
  /** No free set name for this second (too many collisions). */
  'KVMBAK_SET_EXISTS',
  /** commitSet on a set that already has a manifest. */
  'KVMBAK_SET_COMMITTED',
  /** commitSet found the set's files missing, wrong-sized, unfinished or unexpected. */
  'KVMBAK_SET_NOT_READY',
  /** A path given as a backup set does not look like one (deleteSet refuses it). */
  'KVMBAK_NOT_A_SET',
  /** A journal already exists for this set, or a journal file cannot be used. */
  'KVMBAK_JOURNAL',
  /** A backup folder another user could change (owned by someone else, or writable by group or others). */
  'KVMBAK_UNSAFE_DIR',
] as const;
export type StoreErrorCode = (typeof STORE_ERROR_CODES)[number];

function defineName(ctor: { prototype: object }, name: string): void {
  Object.defineProperty(ctor.prototype, 'name', { value: name, enumerable: false, configurable: true, writable: true });
}

/** A backup-set layout problem: bad destination, set not ready to commit, refused delete. */
export class StoreError extends KvmbakError {
  declare readonly code: StoreErrorCode;
  /** The file or folder concerned. */
  readonly path: string;

  constructor(message: string, code: StoreErrorCode, path: string, options: KvmbakErrorOptions = {}) {
    super(message, code, options);
    this.path = path;
  }
}
defineName(StoreError, 'StoreError');

/** Another kvmbak holds the domain's lock (or a lock cannot be judged safely). */
export class LockError extends KvmbakError {
  declare readonly code: 'KVMBAK_LOCKED';
  readonly domain: string;
  readonly lockPath: string;
  /** What the lock file says, when it could be read. */
  readonly holder: LockOwner | null;

  constructor(message: string, details: { domain: string; lockPath: string; holder: LockOwner | null }, options: KvmbakErrorOptions = {}) {
    super(message, 'KVMBAK_LOCKED', options);
    this.domain = details.domain;
    this.lockPath = details.lockPath;
    this.holder = details.holder;
  }
}
defineName(LockError, 'LockError');

export function isStoreError(e: unknown, code?: StoreErrorCode): e is StoreError {
  return isKvmbakError(e) && e.name === 'StoreError' && (code === undefined || e.code === code);
}

export function isLockError(e: unknown): e is LockError {
  return isKvmbakError(e) && e.name === 'LockError';
}
