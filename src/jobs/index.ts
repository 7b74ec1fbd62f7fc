/** jobs/: unattended backups — the configuration file, domain selection, hooks, retention after backup, metrics, status, systemd units. */
export {
  DEFAULT_CONFIG_FILE,
  CONFIG_KEYS,
  ConfigFileError,
  parseConfig,
  parseBwlimit,
  loadConfig,
  checkDomainSections,
  effectiveSettings,
} from './config.js';
export type { DomainSettings, JobSettings, KvmbakConfig, EffectiveSettings, SettingSource } from './config.js';
export { parseDuration, formatAge } from './duration.js';
export { HOOK_PHASES, BLOCKING_PHASES, HookError, runHook, hookEnvironment } from './hooks.js';
export type { HookPhase, HookFacts, RunHookOptions } from './hooks.js';
export { LAST_RUN_DIR, LAST_RUN_FORMAT, lastRunDomains, readLastRun, writeLastRun } from './last-run.js';
export type { LastRun } from './last-run.js';
export { renderMetrics, writeMetricsFile } from './metrics.js';
export { backupStatus } from './status.js';
export type { DomainStatus, StatusOptions, StatusResult } from './status.js';
export { selectDomains } from './selection.js';
export type { SkippedDomain, Selection, SelectionOptions } from './selection.js';
export { runBackupJob, outcomeError } from './job.js';
export type { BackupJobOptions, BackupJobResult, DomainOutcome, JobEvent } from './job.js';
export {
  SYSTEMD_UNIT_DIR,
  DEFAULT_ON_CALENDAR,
  DEFAULT_RANDOMIZED_DELAY_SECONDS,
  UNIT_NAMES,
  systemdUnits,
  systemdWord,
  configDestinations,
  installSystemdUnits,
  uninstallSystemdUnits,
} from './systemd.js';
export type { SystemdUnit, SystemdUnitOptions, InstallOptions } from './systemd.js';
