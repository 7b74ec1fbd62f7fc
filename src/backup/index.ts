/** backup/: the orchestration of a live backup, and recovery of interrupted ones. */
export { backup, inspectBackup, type BackupContext } from './backup.js';
export { BackupPlanError, chooseMode, classifyDisks, snapshotNameFor, runTagFor } from './plan.js';
export { VmNotResumedError, QuiesceError } from './window.js';
export { SnapshotInvalidError } from './watch.js';
export { recover, ownerTag, type RecoverOptions, type RecoverResult, type RecoveredRun } from './recover.js';
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
