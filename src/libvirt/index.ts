/** The typed libvirt layer of kvmbak. */
export {
  openHypervisor,
  Hypervisor,
  libvirtCounters,
  formatLibvirtVersion,
  type DomainSummary,
  type StorageVolumeInfo,
  type StoragePoolInfo,
  type LibvirtCounters,
} from './hypervisor.js';
export {
  Domain,
  type DomainInfo,
  type DomainStateInfo,
  type DomainXmlOptions,
  type BlockInfo,
  type StartMode,
  type SaveRestoreOptions,
  type SaveImageXmlOptions,
  type UndefineOptions,
  type AgentTimeout,
} from './domain.js';
export { parseDomainDisks, DISK_DEVICES, DISK_TYPES, type DomainDisk, type DiskDevice, type DiskType } from './disks.js';
export { type DomainJobStats } from './job-stats.js';
export {
  DomainXMLFlags,
  DomainSaveRestoreFlags,
  DomainSaveImageXMLFlags,
  DomainUndefineFlags,
  ConnectListAllDomainsFlags,
  AgentResponseTimeout,
  DomainJobStatsFlags,
  DOMAIN_STATES,
  STORAGE_VOL_TYPES,
  STORAGE_POOL_STATES,
  DOMAIN_JOB_TYPES,
  type DomainStateName,
  type StorageVolTypeName,
  type StoragePoolStateName,
  type DomainJobTypeName,
} from './flags.js';
export { VIR_ERROR_NUMBER_NAMES, VIR_ERROR_DOMAIN_NAMES } from './error-codes.js';
export { virErrorName, virErrorDomainName } from './call.js';
