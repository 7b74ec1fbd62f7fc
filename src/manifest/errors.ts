import { KvmbakError, isKvmbakError, type KvmbakErrorOptions } from '../errors.js';

export const MANIFEST_ERROR_CODES = [
  /** The set has no manifest.json: the backup did not finish (or the folder is not there). */
  'KVMBAK_MANIFEST_MISSING',
  /** manifest.json is not valid JSON. */
  'KVMBAK_MANIFEST_MALFORMED',
  /** The JSON has no kvmbak `format`: not a kvmbak backup set. */
  'KVMBAK_MANIFEST_FOREIGN',
  /** Written by a newer kvmbak (format kvmbak/N, N > 1). */
  'KVMBAK_MANIFEST_NEWER',
  /** A kvmbak/1 manifest with a missing or ill-typed field. */
  'KVMBAK_MANIFEST_INVALID',
] as const;
export type ManifestErrorCode = (typeof MANIFEST_ERROR_CODES)[number];

/** One problem found by the validator: the field's path and what is wrong. */
export interface ManifestIssue {
  /** e.g. 'disks[0].image.rawSha256'. */
  field: string;
  /** e.g. 'must be a sha256 (64 lowercase hex digits), got "abc"'. */
  message: string;
}

/** A manifest that cannot be used: missing, malformed, foreign, newer or invalid. */
export class ManifestError extends KvmbakError {
  declare readonly code: ManifestErrorCode;
  /** The manifest file (or set folder) concerned. */
  readonly path: string;
  /** Every problem found (KVMBAK_MANIFEST_INVALID only). */
  readonly issues: ManifestIssue[];
  /** The format found (KVMBAK_MANIFEST_FOREIGN / _NEWER). */
  readonly format: unknown;

  constructor(
    message: string,
    code: ManifestErrorCode,
    details: { path: string; issues?: ManifestIssue[]; format?: unknown },
    options: KvmbakErrorOptions = {},
  ) {
    super(message, code, options);
    this.path = details.path;
    this.issues = details.issues ?? [];
    this.format = details.format;
  }
}
Object.defineProperty(ManifestError.prototype, 'name', {
  value: 'ManifestError',
  enumerable: false,
  configurable: true,
  writable: true,
});

export function isManifestError(e: unknown, code?: ManifestErrorCode): e is ManifestError {
  return isKvmbakError(e) && e.name === 'ManifestError' && (code === undefined || e.code === code);
}
