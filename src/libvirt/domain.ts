/**
 * Domain: one VM, as returned by Hypervisor.lookupDomain()/defineDomain().
 * Every method is one libvirt call (run off the JS thread by the addon);
 * free() releases the libvirt handle.
 */
import { ClosedHandleError, ConfigError, throwIfAborted } from '../errors.js';
import type { NativeDomain } from '../native.js';
import { callSite, nativeCall, nativeCallSync } from './call.js';
import { type DomainDisk, parseDomainDisks } from './disks.js';
import { AgentResponseTimeout, DOMAIN_STATES, DomainSaveRestoreFlags, type DomainStateName, DomainUndefineFlags, DomainXMLFlags } from './flags.js';
import { type DomainJobStats, toDomainJobStats } from './job-stats.js';
import { saveRestoreLimiter } from './limiter.js';

export interface DomainInfo {
  state: DomainStateName;
  /**
   * The hypervisor's id (virDomainGetID) as libvirt last reported it for this
   * handle; -1 when the domain was not running.
   */
  id: number;
  maxMemKiB: number;
  memKiB: number;
  vcpus: number;
  /** CPU time used, in nanoseconds. */
  cpuTimeNs: bigint;
}

export interface DomainStateInfo {
  state: DomainStateName;
  /** The state's reason code (virDomainRunningReason, virDomainPausedReason, ...). */
  reason: number;
}

export interface DomainXmlOptions {
  /** The persistent configuration instead of the live one (VIR_DOMAIN_XML_INACTIVE). */
  inactive?: boolean;
  /** Include security-sensitive data such as passwords (VIR_DOMAIN_XML_SECURE). */
  secure?: boolean;
  /** XML suitable for migration/define elsewhere (VIR_DOMAIN_XML_MIGRATABLE). */
  migratable?: boolean;
}

/** virDomainGetBlockInfo, in bytes. */
export interface BlockInfo {
  capacity: number;
  allocation: number;
  physical: number;
}

export type StartMode = 'running' | 'paused';

export interface SaveRestoreOptions {
  /** State after a restore of this image: forces running or paused (default: as it was saved). */
  startMode?: StartMode;
  /** Avoid the host page cache (VIR_DOMAIN_SAVE_BYPASS_CACHE). */
  bypassCache?: boolean;
  /** Replacement domain XML stored in / used from the image (must be ABI-compatible). */
  xml?: string;
  /**
   * Cancels the call while it waits for its turn (one save/restore runs at a
   * time per process). A save or restore that already started runs to its end.
   */
  signal?: AbortSignal;
}

export interface SaveImageXmlOptions {
  /** Include security-sensitive data such as passwords (VIR_DOMAIN_SAVE_IMAGE_XML_SECURE). */
  secure?: boolean;
}

export interface UndefineOptions {
  /** Also remove a managed-save image (VIR_DOMAIN_UNDEFINE_MANAGED_SAVE). */
  managedSave?: boolean;
  /** Also remove snapshot metadata (VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA). */
  snapshotsMetadata?: boolean;
  /** Also remove the NVRAM file (VIR_DOMAIN_UNDEFINE_NVRAM). */
  nvram?: boolean;
  /** Keep the NVRAM file (VIR_DOMAIN_UNDEFINE_KEEP_NVRAM). */
  keepNvram?: boolean;
  /** Also remove checkpoint metadata (VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA). */
  checkpointsMetadata?: boolean;
}

/** Seconds (> 0), or 'block' (wait forever), 'default' (libvirt's), 'nowait'. */
export type AgentTimeout = number | 'block' | 'default' | 'nowait';

export function stateName(n: number): DomainStateName {
  return DOMAIN_STATES[n] ?? 'nostate';
}

/** Flags for virDomainSaveFlags/virDomainRestoreFlags from readable options. */
export function saveRestoreFlags(options: SaveRestoreOptions): number {
  let flags = 0;
  if (options.startMode === 'running') flags |= DomainSaveRestoreFlags.RUNNING;
  else if (options.startMode === 'paused') flags |= DomainSaveRestoreFlags.PAUSED;
  else if (options.startMode !== undefined) {
    throw new ConfigError(`startMode must be 'running' or 'paused', not ${JSON.stringify(options.startMode)}`, 'startMode');
  }
  if (options.bypassCache === true) flags |= DomainSaveRestoreFlags.BYPASS_CACHE;
  return flags;
}

export function checkPath(path: unknown, what: string): string {
  if (typeof path !== 'string' || path === '') throw new ConfigError(`${what} must be a non-empty path`, what);
  return path;
}

function optionalXml(xml: unknown): string | null {
  if (xml === undefined) return null;
  if (typeof xml !== 'string' || xml === '') throw new ConfigError('xml must be a non-empty string', 'xml');
  return xml;
}

function mountpointList(mountpoints: readonly string[] | undefined): string[] | null {
  if (mountpoints === undefined) return null;
  if (!Array.isArray(mountpoints) || mountpoints.some((m) => typeof m !== 'string' || m === '')) {
    throw new ConfigError('mountpoints must be an array of non-empty paths', 'mountpoints');
  }
  return mountpoints.length === 0 ? null : [...mountpoints];
}

let create: (native: NativeDomain) => Domain;

export class Domain {
  static {
    create = (native) => new Domain(native);
  }

  /** The domain's name (as it was when this handle was obtained). */
  readonly name: string;
  /** The domain's UUID, e.g. '6695eb01-f6a4-8304-79aa-97f2502e193f'. */
  readonly uuid: string;
  #native: NativeDomain | null;

  private constructor(native: NativeDomain) {
    this.#native = native;
    this.name = nativeCallSync(() => native.getName());
    this.uuid = nativeCallSync(() => native.getUUIDString());
  }

  /** True after free(). */
  get freed(): boolean {
    return this.#native === null;
  }

  #handle(): NativeDomain {
    if (this.#native === null) {
      throw new ClosedHandleError(`Domain '${this.name}' was already freed; look it up again with Hypervisor.lookupDomain()`);
    }
    return this.#native;
  }

  /** virDomainGetInfo. */
  async info(): Promise<DomainInfo> {
    const d = this.#handle();
    const i = await nativeCall(() => d.getInfo());
    return {
      state: stateName(i.state),
      id: nativeCallSync(() => d.getID()),
      maxMemKiB: i.maxMem,
      memKiB: i.memory,
      vcpus: i.nrVirtCpu,
      cpuTimeNs: i.cpuTime,
    };
  }

  /** virDomainGetState. */
  async state(): Promise<DomainStateInfo> {
    const d = this.#handle();
    const s = await nativeCall(() => d.getState(0));
    return { state: stateName(s.state), reason: s.reason };
  }

  /** virDomainGetXMLDesc. */
  async xml(options: DomainXmlOptions = {}): Promise<string> {
    const d = this.#handle();
    let flags = 0;
    if (options.inactive === true) flags |= DomainXMLFlags.INACTIVE;
    if (options.secure === true) flags |= DomainXMLFlags.SECURE;
    if (options.migratable === true) flags |= DomainXMLFlags.MIGRATABLE;
    return nativeCall(() => d.getXMLDesc(flags));
  }

  /** The disks of the live definition (parsed from xml()). */
  async disks(options: DomainXmlOptions = {}): Promise<DomainDisk[]> {
    return parseDomainDisks(await this.xml(options));
  }

  /** virDomainGetBlockInfo of a disk by its target ('vda') or source path. */
  async blockInfo(target: string): Promise<BlockInfo> {
    const d = this.#handle();
    if (typeof target !== 'string' || target === '') {
      throw new ConfigError('target must be a disk target such as vda', 'target');
    }
    return nativeCall(() => d.getBlockInfo(target, 0));
  }

  /**
   * virDomainSaveFlags: writes the domain's memory state to `path` and stops
   * it. One save/restore runs at a time per process (see limiter.ts).
   */
  async save(path: string, options: SaveRestoreOptions = {}): Promise<void> {
    const site = callSite();
    this.#handle();
    const file = checkPath(path, 'path');
    const flags = saveRestoreFlags(options);
    const xml = optionalXml(options.xml);
    throwIfAborted(options.signal);
    // Re-check the handle once our turn comes: free() may have run meanwhile.
    await saveRestoreLimiter.run(() => nativeCall(() => this.#handle().save(file, xml, flags), site), options.signal);
  }

  /** virDomainSuspend. */
  async suspend(): Promise<void> {
    const d = this.#handle();
    await nativeCall(() => d.suspend());
  }

  /** virDomainResume. */
  async resume(): Promise<void> {
    const d = this.#handle();
    await nativeCall(() => d.resume());
  }

  /** virDomainCreate: starts a defined, shut-off domain. */
  async start(): Promise<void> {
    const d = this.#handle();
    await nativeCall(() => d.create());
  }

  /** virDomainShutdown: asks the guest to shut down. */
  async shutdown(): Promise<void> {
    const d = this.#handle();
    await nativeCall(() => d.shutdown());
  }

  /** virDomainDestroy: stops the domain at once. */
  async destroy(): Promise<void> {
    const d = this.#handle();
    await nativeCall(() => d.destroy());
  }

  /** virDomainUndefineFlags: removes the persistent definition. */
  async undefine(options: UndefineOptions = {}): Promise<void> {
    const d = this.#handle();
    let flags = 0;
    if (options.managedSave === true) flags |= DomainUndefineFlags.MANAGED_SAVE;
    if (options.snapshotsMetadata === true) flags |= DomainUndefineFlags.SNAPSHOTS_METADATA;
    if (options.nvram === true) flags |= DomainUndefineFlags.NVRAM;
    if (options.keepNvram === true) flags |= DomainUndefineFlags.KEEP_NVRAM;
    if (options.checkpointsMetadata === true) flags |= DomainUndefineFlags.CHECKPOINTS_METADATA;
    await nativeCall(() => d.undefineFlags(flags));
  }

  /** virDomainFSFreeze through the guest agent; all filesystems when none given. Returns how many froze. */
  async fsFreeze(mountpoints?: readonly string[]): Promise<number> {
    const d = this.#handle();
    const list = mountpointList(mountpoints);
    return nativeCall(() => d.fsFreeze(list, 0));
  }

  /** virDomainFSThaw; all filesystems when none given. Returns how many thawed. */
  async fsThaw(mountpoints?: readonly string[]): Promise<number> {
    const d = this.#handle();
    const list = mountpointList(mountpoints);
    return nativeCall(() => d.fsThaw(list, 0));
  }

  /** virDomainAgentSetResponseTimeout: how long guest-agent calls wait. */
  async setAgentTimeout(timeout: AgentTimeout): Promise<void> {
    const d = this.#handle();
    let value: number;
    if (timeout === 'block') value = AgentResponseTimeout.BLOCK;
    else if (timeout === 'default') value = AgentResponseTimeout.DEFAULT;
    else if (timeout === 'nowait') value = AgentResponseTimeout.NOWAIT;
    else if (typeof timeout === 'number' && Number.isInteger(timeout) && timeout > 0 && timeout <= 2 ** 31 - 1) {
      value = timeout;
    } else {
      throw new ConfigError(
        `agent timeout must be a whole number of seconds > 0, 'block', 'default' or 'nowait', ` + `not ${JSON.stringify(timeout)}`,
        'timeout',
      );
    }
    await nativeCall(() => d.agentSetResponseTimeout(value, 0));
  }

  /**
   * virDomainGetJobStats of the current job (poll it while a save runs).
   * Drivers without job statistics (the test driver) reject with a
   * LibvirtError whose code is VIR_ERR_NO_SUPPORT: treat it as "no progress
   * available" (isLibvirtError(e, 'NO_SUPPORT')).
   */
  async jobStats(): Promise<DomainJobStats> {
    const d = this.#handle();
    return toDomainJobStats(await nativeCall(() => d.getJobStats(0)));
  }

  /** virDomainFree. Idempotent; later calls on this object throw ClosedHandleError. */
  free(): void {
    const d = this.#native;
    if (d === null) return;
    this.#native = null;
    nativeCallSync(() => d.free());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.free();
  }
}

/** Wraps an addon Domain (internal: not exported from the package). */
export function wrapDomain(native: NativeDomain): Domain {
  try {
    return create(native);
  } catch (e) {
    native.free();
    throw e;
  }
}
