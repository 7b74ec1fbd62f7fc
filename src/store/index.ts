/** store/: the backup-set layout on disk — naming, atomic commit, listing, locking, journal, retention, verify. */
export { StoreError, LockError, isStoreError, isLockError, STORE_ERROR_CODES } from './errors.js';
export type { StoreErrorCode } from './errors.js';
export { assertDomainName, isValidDomainName, formatSetId, parseSetId, compareSetIds, journalFileName, LOCK_FILE } from './naming.js';
export type { ParsedSetId } from './naming.js';
export { processOwner, ownerStatus, currentBootId } from './owner.js';
export type { ProcessOwner, LockOwner, OwnerStatus } from './owner.js';
export { CHECKSUMS_FILE, PARTIAL_SUFFIX, expectedFiles } from './layout.js';
export type { ExpectedFile } from './layout.js';
export { formatChecksums, parseChecksums } from './checksums.js';
export type { ChecksumEntry, ParsedChecksums } from './checksums.js';
export {
  assertDest,
  ensureDomainDir,
  readSetManifest,
  unsafeDirProblem,
  assertPrivateFolder,
  createSet,
  parseSetPath,
  setFilePath,
  writeSetFile,
  openSetFile,
  writeChecksums,
  commitSet,
  deleteSet,
} from './set.js';
export type { BackupSet, CreateSetOptions, WrittenFile, SetFileWriter } from './set.js';
export { listSets, setFigures } from './list.js';
export type { SetInfo, SetStatus } from './list.js';
export { acquireLock, readLock, parseLockOwner } from './lock.js';
export type { DomainLock } from './lock.js';
export { JOURNAL_FORMAT, openJournal, reopenJournal, readJournals, parseJournal, assessJournal } from './journal.js';
export type {
  Journal,
  JournalStep,
  JournalStepName,
  JournalEntry,
  JournalDocument,
  JournalSnapshot,
  JournalAssessment,
  JournalRecord,
  WindowAction,
} from './journal.js';
export {
  setChunkLists,
  manifestChunkListFiles,
  hasChunkStore,
  collectDestinationGarbage,
  chunkStoreUsage,
  chunkStoreSummary,
  estimateFreed,
} from './gc.js';
export type {
  FreedEstimate,
  SetChunkList,
  StoreWriter,
  DestinationGcResult,
  CollectDestinationOptions,
  ChunkStoreUsage,
  ChunkStoreSummary,
} from './gc.js';
export { selectRetention, pruneSets, assertRetentionRules, utcDayKey, isoWeekKey, utcMonthKey, INCOMPLETE_GRACE_MS } from './retention.js';
export type {
  RetentionRules,
  RetentionCandidate,
  RetentionSelection,
  PruneOptions,
  PruneProgress,
  PruneDomainResult,
  PruneResult,
  PruneGcResult,
} from './retention.js';
export { verifySetFiles, sha256File } from './verify.js';
export type { ChunkListToVerify, FileCheck, FileCheckStatus, ImageToVerify, SetVerification, VerifyOptions, VerifyProgress } from './verify.js';
export { IMAGES_DIR, backupSetFiles, createBackupSet, removeEmptyDomainDir } from './backup-set.js';
export type { BackupSetFiles } from './backup-set.js';
export { chunkStorePath, openChunkStore, storeChunked, storeChunkedDelta } from './chunked.js';
export type { StoreChunkedOptions } from './chunked.js';
