import { KvmbakError, isKvmbakError, type KvmbakErrorOptions } from '../errors.js';

export const RESTORE_ERROR_CODES = [
  /** A precondition does not hold (existing LV or domain, too small LV, full VG, damaged set): nothing was touched. */
  'KVMBAK_RESTORE_REFUSED',
  /** Restoring failed part-way (image write, checksum, define): see createdLvs/removedLvs/overwrittenLvs. */
  'KVMBAK_RESTORE_FAILED',
  /** Disks restored and the domain defined, but it could not be resumed from its memory state or started. */
  'KVMBAK_RESTORE_NOT_STARTED',
] as const;
export type RestoreErrorCode = (typeof RESTORE_ERROR_CODES)[number];

export interface RestoreErrorDetails {
  /** The set folder. */
  set: string;
  /** The domain name being restored. */
  domain: string;
  /** LVs (VG/LV) restore created that still exist. */
  createdLvs?: string[];
  /** LVs restore created and removed again while cleaning up. */
  removedLvs?: string[];
  /** LVs that existed before and were written over in place (`force` + `inPlace`), fully or partly. */
  overwrittenLvs?: string[];
  /** The domain was defined from the set. */
  defined?: boolean;
}

/** A restore that was refused or did not finish; the message says what state things are in. */
export class RestoreError extends KvmbakError {
  declare readonly code: RestoreErrorCode;
  readonly set: string;
  readonly domain: string;
  readonly createdLvs: string[];
  readonly removedLvs: string[];
  readonly overwrittenLvs: string[];
  readonly defined: boolean;

  constructor(message: string, code: RestoreErrorCode, details: RestoreErrorDetails, options: KvmbakErrorOptions = {}) {
    super(message, code, options);
    this.set = details.set;
    this.domain = details.domain;
    this.createdLvs = details.createdLvs ?? [];
    this.removedLvs = details.removedLvs ?? [];
    this.overwrittenLvs = details.overwrittenLvs ?? [];
    this.defined = details.defined ?? false;
  }
}
Object.defineProperty(RestoreError.prototype, 'name', {
  value: 'RestoreError',
  enumerable: false,
  configurable: true,
  writable: true,
});

export function isRestoreError(e: unknown, code?: RestoreErrorCode): e is RestoreError {
  return isKvmbakError(e) && e.name === 'RestoreError' && (code === undefined || e.code === code);
}
