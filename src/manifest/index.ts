/** manifest/: the versioned kvmbak/1 manifest schema — write, read, validate. */
export * from './types.js';
export { ManifestError, isManifestError, MANIFEST_ERROR_CODES } from './errors.js';
export type { ManifestErrorCode, ManifestIssue } from './errors.js';
export { validateManifest, MANIFEST_LIMITS } from './validate.js';
export { readManifest, writeManifest, parseManifest, stringifyManifest } from './io.js';
