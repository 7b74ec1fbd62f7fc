/**
 * libvirt flag and enum values used by kvmbak, as plain `as const` objects
 * (never `const enum`: those do not survive isolatedModules consumers).
 * The numbers are libvirt's (libvirt-domain.h, libvirt-storage.h); they are
 * part of libvirt's stable ABI. Only values present in libvirt 8.0, kvmbak's
 * floor, are listed.
 */

/** virDomainXMLFlags, for Domain.xml() / virDomainGetXMLDesc. */
export const DomainXMLFlags = {
  SECURE: 1 << 0,
  INACTIVE: 1 << 1,
  UPDATE_CPU: 1 << 2,
  MIGRATABLE: 1 << 3,
} as const;

/** virDomainSaveRestoreFlags, for save/restore. */
export const DomainSaveRestoreFlags = {
  BYPASS_CACHE: 1 << 0,
  RUNNING: 1 << 1,
  PAUSED: 1 << 2,
} as const;

/** virDomainSaveImageXMLFlags, for Hypervisor.saveImageXml() / virDomainSaveImageGetXMLDesc. */
export const DomainSaveImageXMLFlags = {
  SECURE: 1 << 0,
} as const;

/** virDomainUndefineFlagsValues. */
export const DomainUndefineFlags = {
  MANAGED_SAVE: 1 << 0,
  SNAPSHOTS_METADATA: 1 << 1,
  NVRAM: 1 << 2,
  KEEP_NVRAM: 1 << 3,
  CHECKPOINTS_METADATA: 1 << 4,
} as const;

/** virConnectListAllDomainsFlags. */
export const ConnectListAllDomainsFlags = {
  ACTIVE: 1 << 0,
  INACTIVE: 1 << 1,
  PERSISTENT: 1 << 2,
  TRANSIENT: 1 << 3,
  RUNNING: 1 << 4,
  PAUSED: 1 << 5,
  SHUTOFF: 1 << 6,
  OTHER: 1 << 7,
  MANAGEDSAVE: 1 << 8,
  NO_MANAGEDSAVE: 1 << 9,
  AUTOSTART: 1 << 10,
  NO_AUTOSTART: 1 << 11,
  HAS_SNAPSHOT: 1 << 12,
  NO_SNAPSHOT: 1 << 13,
  HAS_CHECKPOINT: 1 << 14,
  NO_CHECKPOINT: 1 << 15,
} as const;

/** virDomainAgentResponseTimeoutValues (seconds > 0 are also accepted). */
/** virConnectListAllStoragePoolsFlags (the ones kvmbak uses). */
export const ConnectListAllStoragePoolsFlags = {
  ACTIVE: 1 << 1,
} as const;

export const AgentResponseTimeout = {
  BLOCK: -2,
  DEFAULT: -1,
  NOWAIT: 0,
} as const;

/** virDomainGetJobStatsFlags. */
export const DomainJobStatsFlags = {
  COMPLETED: 1 << 0,
  KEEP_COMPLETED: 1 << 1,
} as const;

/** virDomainState value -> name. */
export const DOMAIN_STATES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'] as const;
export type DomainStateName = (typeof DOMAIN_STATES)[number];

/** virStorageVolType value -> name. */
export const STORAGE_VOL_TYPES = ['file', 'block', 'dir', 'network', 'netdir', 'ploop'] as const;
export type StorageVolTypeName = (typeof STORAGE_VOL_TYPES)[number];

/** virStoragePoolState value -> name. */
export const STORAGE_POOL_STATES = ['inactive', 'building', 'running', 'degraded', 'inaccessible'] as const;
export type StoragePoolStateName = (typeof STORAGE_POOL_STATES)[number];

/** virDomainJobType value -> name. */
export const DOMAIN_JOB_TYPES = ['none', 'bounded', 'unbounded', 'completed', 'failed', 'cancelled'] as const;
export type DomainJobTypeName = (typeof DOMAIN_JOB_TYPES)[number];

/** virDomainJobOperation value -> name (the `operation` job statistic). */
export const DOMAIN_JOB_OPERATIONS = [
  'unknown',
  'start',
  'save',
  'restore',
  'migration-in',
  'migration-out',
  'snapshot',
  'snapshot-revert',
  'dump',
  'backup',
  'snapshot-delete',
] as const;

/** The name for enum value `n` in `names`; unknown (newer libvirt) values become `unknown-<n>`. */
export function enumName<T extends string>(names: readonly T[], n: number): T | `unknown-${number}` {
  return names[n] ?? `unknown-${n}`;
}
