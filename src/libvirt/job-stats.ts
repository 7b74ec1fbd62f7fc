/**
 * Domain job statistics (virDomainGetJobStats) as a typed, camelCased object.
 */
import type { NativeJobStats } from '../native.js';
import { DOMAIN_JOB_OPERATIONS, DOMAIN_JOB_TYPES, type DomainJobTypeName, enumName } from './flags.js';

export interface DomainJobStats {
  /** The job's state: 'none' when no job runs. */
  type: DomainJobTypeName | `unknown-${number}`;
  /** What the job does ('save', 'restore', 'migration-out', ...). */
  operation?: string;
  /** Milliseconds since the job started. */
  timeElapsed?: number;
  timeElapsedNet?: number;
  timeRemaining?: number;
  downtime?: number;
  downtimeNet?: number;
  setupTime?: number;
  /** Bytes: all data, processed, remaining. */
  dataTotal?: number;
  dataProcessed?: number;
  dataRemaining?: number;
  memoryTotal?: number;
  memoryProcessed?: number;
  memoryRemaining?: number;
  memoryConstant?: number;
  memoryNormal?: number;
  memoryNormalBytes?: number;
  memoryBps?: number;
  memoryDirtyRate?: number;
  memoryPageSize?: number;
  memoryIteration?: number;
  memoryPostcopyRequests?: number;
  diskTotal?: number;
  diskProcessed?: number;
  diskRemaining?: number;
  diskBps?: number;
  diskTempUsed?: number;
  diskTempTotal?: number;
  compressionCache?: number;
  compressionBytes?: number;
  compressionPages?: number;
  compressionCacheMisses?: number;
  compressionOverflow?: number;
  autoConvergeThrottle?: number;
  success?: boolean;
  errmsg?: string;
  /** Every parameter libvirt returned, camelCased (includes ones newer than this list). */
  [param: string]: number | string | boolean | undefined;
}

/** 'time_elapsed_net' -> 'timeElapsedNet'. */
export function camelCaseParam(name: string): string {
  return name.replace(/[_.-]+([a-zA-Z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Converts the addon's {type, params} into DomainJobStats. */
export function toDomainJobStats(native: NativeJobStats): DomainJobStats {
  const out: DomainJobStats = { type: enumName(DOMAIN_JOB_TYPES, native.type) };
  for (const [name, value] of Object.entries(native.params)) {
    if (name === 'operation' && typeof value === 'number') {
      out.operation = enumName(DOMAIN_JOB_OPERATIONS, value);
    } else if (name !== 'type') {
      out[camelCaseParam(name)] = value;
    }
  }
  return out;
}
