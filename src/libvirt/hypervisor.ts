/**
 * openHypervisor() and Hypervisor: a libvirt connection with a typed API.
 */
import { normalize } from 'node:path';
import { ClosedHandleError, ConfigError, isLibvirtError, throwIfAborted } from '../errors.js';
import { type NativeConnection, type NativeCounters, loadNative } from '../native.js';
import { firstChild, parseXml } from '../util/xml.js';
import { callSite, nativeCall, nativeCallSync } from './call.js';
import {
  type Domain,
  type DomainStateInfo,
  type SaveImageXmlOptions,
  type SaveRestoreOptions,
  checkPath,
  saveRestoreFlags,
  stateName,
  wrapDomain,
} from './domain.js';
import {
  ConnectListAllStoragePoolsFlags,
  DomainSaveImageXMLFlags,
  STORAGE_POOL_STATES,
  STORAGE_VOL_TYPES,
  type StoragePoolStateName,
  type StorageVolTypeName,
  enumName,
} from './flags.js';
import { type LimiterCounters, saveRestoreLimiter } from './limiter.js';

export interface DomainSummary {
  name: string;
  uuid: string;
  state: DomainStateInfo['state'];
}

export interface StorageVolumeInfo {
  name: string;
  /** The volume's key (for a logical pool: the LV's UUID). */
  key: string;
  path: string;
  /** Name of the storage pool holding the volume. */
  pool: string;
  type: StorageVolTypeName | `unknown-${number}`;
  /** Bytes. */
  capacity: number;
  /** Bytes. */
  allocation: number;
}

export interface StoragePoolInfo {
  name: string;
  state: StoragePoolStateName | `unknown-${number}`;
  /** Bytes. */
  capacity: number;
  allocation: number;
  available: number;
}

/** `major.minor.micro` from libvirt's major*1000000 + minor*1000 + micro encoding. */
export function formatLibvirtVersion(n: number): string {
  return `${Math.floor(n / 1_000_000)}.${Math.floor((n % 1_000_000) / 1000)}.${n % 1000}`;
}

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** True for a UUID string (with or without dashes), as libvirt parses it. */
export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

function nonEmpty(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw new ConfigError(`${what} must be a non-empty string`, what);
  return value;
}

let create: (native: NativeConnection, uri: string) => Hypervisor;

export class Hypervisor {
  static {
    create = (native, uri) => new Hypervisor(native, uri);
  }

  /** The URI libvirt reports for this connection (virConnectGetURI). */
  readonly uri: string;
  #native: NativeConnection | null;

  private constructor(native: NativeConnection, uri: string) {
    this.#native = native;
    this.uri = uri;
  }

  /** True after close(). */
  get closed(): boolean {
    return this.#native === null;
  }

  #handle(): NativeConnection {
    if (this.#native === null) {
      throw new ClosedHandleError(`the connection to ${this.uri} was already closed; open a new one with openHypervisor()`);
    }
    return this.#native;
  }

  /** virConnectGetHostname. */
  async hostname(): Promise<string> {
    const c = this.#handle();
    return nativeCall(() => c.getHostname());
  }

  /** virConnectGetLibVersion as 'major.minor.micro' (the libvirt serving this connection). */
  async libVersion(): Promise<string> {
    const c = this.#handle();
    return formatLibvirtVersion(await nativeCall(() => c.getLibVersion()));
  }

  /** virConnectGetVersion as 'major.minor.micro' (the hypervisor: QEMU, or the test driver). */
  async hypervisorVersion(): Promise<string> {
    const c = this.#handle();
    return formatLibvirtVersion(await nativeCall(() => c.getVersion()));
  }

  /** All domains, running or not, sorted by name (virConnectListAllDomains). */
  async listDomains(): Promise<DomainSummary[]> {
    const c = this.#handle();
    const natives = await nativeCall(() => c.listAllDomains(0));
    const out: DomainSummary[] = [];
    try {
      for (const d of natives) {
        try {
          const s = await nativeCall(() => d.getState(0));
          out.push({
            name: nativeCallSync(() => d.getName()),
            uuid: nativeCallSync(() => d.getUUIDString()),
            state: stateName(s.state),
          });
        } catch (e) {
          // Undefined or gone between the listing and the state query: not listed.
          if (!isLibvirtError(e, 'NO_DOMAIN')) throw e;
        }
      }
    } finally {
      for (const d of natives) d.free();
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * A domain by name or UUID: a UUID-shaped string is looked up with
   * virDomainLookupByUUIDString, anything else with virDomainLookupByName.
   * Free the result (domain.free() or `await using`).
   */
  async lookupDomain(nameOrUuid: string): Promise<Domain> {
    const c = this.#handle();
    const key = nonEmpty(nameOrUuid, 'nameOrUuid');
    const native = await nativeCall(() => (isUuid(key) ? c.lookupDomainByUUIDString(key) : c.lookupDomainByName(key)));
    return wrapDomain(native);
  }

  /** virDomainDefineXML: defines (or updates) a persistent domain. */
  async defineDomain(xml: string): Promise<Domain> {
    const c = this.#handle();
    const text = nonEmpty(xml, 'xml');
    return wrapDomain(await nativeCall(() => c.defineXML(text)));
  }

  /**
   * virDomainRestoreFlags: starts a domain from a file written by
   * Domain.save(). One save/restore runs at a time per process.
   */
  async restoreDomain(path: string, options: SaveRestoreOptions = {}): Promise<void> {
    const site = callSite();
    this.#handle();
    const file = checkPath(path, 'path');
    const flags = saveRestoreFlags(options);
    const xml = options.xml === undefined ? null : nonEmpty(options.xml, 'xml');
    throwIfAborted(options.signal);
    await saveRestoreLimiter.run(() => nativeCall(() => this.#handle().restore(file, xml, flags), site), options.signal);
  }

  /**
   * virDomainSaveImageGetXMLDesc: the domain XML stored in a file written by
   * Domain.save() (or `virsh save`), e.g. to rewrite it and pass it to
   * restoreDomain({ xml }). Reads only the image header, so it does not wait
   * for the save/restore limiter.
   */
  async saveImageXml(path: string, options: SaveImageXmlOptions = {}): Promise<string> {
    const c = this.#handle();
    const file = checkPath(path, 'path');
    const flags = options.secure === true ? DomainSaveImageXMLFlags.SECURE : 0;
    return nativeCall(() => c.saveImageGetXMLDesc(file, flags));
  }

  /**
   * The storage volume at `path` (virStorageVolLookupByPath) and its pool
   * (virStoragePoolLookupByVolume). Rejects with VIR_ERR_NO_STORAGE_VOL when
   * no libvirt pool covers the path (common on hosts without pools).
   */
  async lookupVolumeByPath(path: string): Promise<StorageVolumeInfo> {
    const c = this.#handle();
    const p = checkPath(path, 'path');
    const vol = await nativeCall(() => c.lookupStorageVolByPath(p));
    try {
      const volPath = await nativeCall(() => vol.getPath());
      const info = await nativeCall(() => vol.getInfo());
      const pool = await nativeCall(() => vol.lookupPoolByVolume());
      let poolName: string;
      try {
        poolName = nativeCallSync(() => pool.getName());
      } finally {
        pool.free();
      }
      return {
        name: nativeCallSync(() => vol.getName()),
        key: nativeCallSync(() => vol.getKey()),
        path: volPath,
        pool: poolName,
        type: enumName(STORAGE_VOL_TYPES, info.type),
        capacity: info.capacity,
        allocation: info.allocation,
      };
    } finally {
      vol.free();
    }
  }

  /**
   * The volume `name` of storage pool `pool` (virStoragePoolLookupByName +
   * virStorageVolLookupByName), as `<disk type='volume'><source pool volume/>`
   * names it. Rejects with VIR_ERR_NO_STORAGE_POOL when the pool does not
   * exist, VIR_ERR_NO_STORAGE_VOL when it holds no such volume.
   */
  async lookupVolume(pool: string, name: string): Promise<StorageVolumeInfo> {
    const c = this.#handle();
    const p = nonEmpty(pool, 'pool');
    const n = nonEmpty(name, 'name');
    const nativePool = await nativeCall(() => c.lookupStoragePoolByName(p));
    try {
      const vol = await nativeCall(() => nativePool.lookupVolumeByName(n));
      try {
        const volPath = await nativeCall(() => vol.getPath());
        const info = await nativeCall(() => vol.getInfo());
        return {
          name: nativeCallSync(() => vol.getName()),
          key: nativeCallSync(() => vol.getKey()),
          path: volPath,
          pool: nativeCallSync(() => nativePool.getName()),
          type: enumName(STORAGE_VOL_TYPES, info.type),
          capacity: info.capacity,
          allocation: info.allocation,
        };
      } finally {
        vol.free();
      }
    } finally {
      nativePool.free();
    }
  }

  /** A storage pool by name (virStoragePoolLookupByName + virStoragePoolGetInfo). */
  async lookupStoragePool(name: string): Promise<StoragePoolInfo> {
    const c = this.#handle();
    const n = nonEmpty(name, 'name');
    const pool = await nativeCall(() => c.lookupStoragePoolByName(n));
    try {
      const info = await nativeCall(() => pool.getInfo());
      return {
        name: nativeCallSync(() => pool.getName()),
        state: enumName(STORAGE_POOL_STATES, info.state),
        capacity: info.capacity,
        allocation: info.allocation,
        available: info.available,
      };
    } finally {
      pool.free();
    }
  }

  /**
   * Rescans the volumes of the active storage pools whose target is
   * `targetPath` (a logical pool's target is /dev/VG): virStoragePoolRefresh.
   * libvirt caches a pool's volumes; after LVs are created, renamed or
   * removed behind its back, lookups answer from the old list until a
   * refresh. Resolves to the names of the pools refreshed (none on hosts
   * without pools).
   */
  async refreshStoragePoolsAt(targetPath: string): Promise<string[]> {
    const c = this.#handle();
    const dir = (p: string) => normalize(p).replace(/\/+$/, '');
    const want = dir(checkPath(targetPath, 'targetPath'));
    const pools = await nativeCall(() => c.listAllStoragePools(ConnectListAllStoragePoolsFlags.ACTIVE));
    const refreshed: string[] = [];
    try {
      for (const pool of pools) {
        const doc = parseXml(await nativeCall(() => pool.getXMLDesc(0)));
        const target = doc.documentElement ? firstChild(doc.documentElement, 'target') : undefined;
        const path = target ? firstChild(target, 'path')?.textContent?.trim() : undefined;
        if (path === undefined || dir(path) !== want) continue;
        await nativeCall(() => pool.refresh());
        refreshed.push(nativeCallSync(() => pool.getName()));
      }
    } finally {
      for (const pool of pools) pool.free();
    }
    return refreshed;
  }

  /**
   * virConnectClose. Returns libvirt's answer: 0 when this was the last
   * reference (everything obtained from this connection was freed), 1 while
   * Domains or calls in flight still hold the connection (libvirt closes it
   * when the last of them is released). Idempotent: 0 on later calls.
   */
  close(): number {
    const c = this.#native;
    if (c === null) return 0;
    this.#native = null;
    return nativeCallSync(() => c.close());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

/**
 * Opens a libvirt connection. `uri` defaults to LIBVIRT_DEFAULT_URI, then to
 * libvirt's own default (NULL: qemu:///system for root).
 * Close it (hypervisor.close() or `await using`).
 */
export async function openHypervisor(uri?: string): Promise<Hypervisor> {
  const site = callSite();
  if (uri !== undefined && (typeof uri !== 'string' || uri === '')) {
    throw new ConfigError('uri must be a non-empty libvirt URI such as qemu:///system', 'uri');
  }
  const target = uri ?? (process.env.LIBVIRT_DEFAULT_URI || null);
  const binding = loadNative();
  const native = await nativeCall(() => binding.Connection.open(target), site);
  try {
    return create(native, await nativeCall(() => native.getURI(), site));
  } catch (e) {
    native.close();
    throw e;
  }
}

export interface LibvirtCounters extends NativeCounters {
  /** The save/restore limiter: running and waiting calls. */
  saveRestore: LimiterCounters;
}

/** libvirt handles held by live objects and calls in flight, for debugging and leak tests. */
export function libvirtCounters(): LibvirtCounters {
  return { ...loadNative().counters(), saveRestore: saveRestoreLimiter.counters() };
}
