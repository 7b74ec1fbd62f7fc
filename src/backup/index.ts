/** backup/: the orchestration of a live backup, and recovery of interrupted ones. */
export { backup, inspectBackup, type BackupContext } from './backup.js';
export { BackupPlanError, chooseMode, classifyDisks, snapshotNameFor, runTagFor } from './plan.js';
export { VmNotResumedError, QuiesceError, AGENT_TIMEOUT_AFTER } from './hold.js';
export { SnapshotInvalidError } from './watch.js';
export { pruneBackups, type PruneBackupsOptions, type PruneBackupsResult } from './prune.js';
export { ThinDeltaError, thinChangedChunks, type ThinChangedChunks, type ThinChangedChunksInput } from './thin-delta.js';
export {
  recover,
  checkRecoverOptions,
  ownerTag,
  type RecoverOptions,
  type RecoverProgress,
  type RecoverResult,
  type RecoveredRun,
} from './recover.js';
export { BACKUP_OPTION_NAMES, DEFAULT_AGENT_TIMEOUT_SECONDS, DEFAULT_FORMAT, checkBackupOptions } from './options.js';
export { parseSnapshotSize, snapshotSizeFor, type SnapshotSizeRequest } from './sizing.js';
export type {
  BackupOptions,
  BackupHookContext,
  BackupPhase,
  BackupProgress,
  BackupPlan,
  BackupResult,
  BackupDiskResult,
  PlannedDisk,
  SkippedDisk,
} from './types.js';
