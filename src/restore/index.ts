/** restore/: bring a backup set back (LVs, images, domain, memory state), and verify sets end to end. */
export { restore, checkRestoreOptions, RESTORE_OPTION_NAMES } from './restore.js';
export { planRestore, checkOptionsAgainstSet, type PlannedRestore } from './plan.js';
export { RestoreError, isRestoreError, RESTORE_ERROR_CODES, type RestoreErrorCode, type RestoreErrorDetails } from './errors.js';
export { rewriteDomainXml, domainXmlIdentity, randomMac, type DomainXmlRewrite, type RewrittenDomainXml } from './xml.js';
export { parseDiskMap, parseLvTarget, resolveDiskTargets, type DiskTarget } from './targets.js';
export {
  verifySet,
  verifySets,
  type SetVerifyResult,
  type VerifySetsResult,
  type ImageCheck,
  type ImageCheckStatus,
  type ChunkListCheck,
  type ChunkListCheckStatus,
  type VerifySetOptions,
  type VerifySetProgress,
} from './verify.js';
export { checkChunkLists, manifestChunkLists, chunkStoreOfSet } from './chunks.js';
export type {
  ChunkCheckOptions,
  ChunkCheckProgress,
  ChunkCheckResult,
  ChunkListProblem,
  ChunkListRef,
  ChunkProblem,
  ChunkProblemKind,
} from './chunks.js';
export type {
  RestoreOptions,
  RestoreContext,
  RestorePhase,
  RestoreProgress,
  RestoreDiskPlan,
  RestoreReplacement,
  RestorePlan,
  RestoreDiskResult,
  RestoreResult,
} from './types.js';
