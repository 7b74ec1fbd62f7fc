/**
 * Loads the kvmbak native addon (build/Release/kvmbak.node, then
 * build/Debug/kvmbak.node) at run time and declares its raw shape.
 *
 * The addon is loaded with createRequire and a computed path, never through
 * an import, so a bundler cannot swallow the failure (tsup's native-module
 * plugin would otherwise turn a failed dlopen into a silent empty module). The
 * NativeBinding interface is internal: positional arguments, plain objects,
 * flags as numbers. The public, typed API is src/libvirt/.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { NativeLoadError } from './errors.js';
import { packageRoot } from './paths.js';

/** virDomainGetInfo. */
export interface NativeDomainInfo {
  state: number;
  maxMem: number;
  memory: number;
  nrVirtCpu: number;
  cpuTime: bigint;
}

/** virDomainGetBlockInfo, in bytes. */
export interface NativeBlockInfo {
  capacity: number;
  allocation: number;
  physical: number;
}

/** virDomainGetJobStats: the job type and the typed parameters by name. */
export interface NativeJobStats {
  type: number;
  params: Record<string, number | string | boolean>;
}

/** virStorageVolGetInfo. */
export interface NativeVolInfo {
  type: number;
  capacity: number;
  allocation: number;
}

/** virStoragePoolGetInfo. */
export interface NativePoolInfo {
  state: number;
  capacity: number;
  allocation: number;
  available: number;
}

export interface NativeConnection {
  close(): number;
  isClosed(): boolean;
  getHostname(): Promise<string>;
  getLibVersion(): Promise<number>;
  getVersion(): Promise<number>;
  getURI(): Promise<string>;
  listAllDomains(flags: number): Promise<NativeDomain[]>;
  lookupDomainByName(name: string): Promise<NativeDomain>;
  lookupDomainByUUIDString(uuid: string): Promise<NativeDomain>;
  defineXML(xml: string): Promise<NativeDomain>;
  restore(path: string, xml: string | null, flags: number): Promise<void>;
  saveImageGetXMLDesc(path: string, flags: number): Promise<string>;
  lookupStorageVolByPath(path: string): Promise<NativeStorageVol>;
  lookupStoragePoolByName(name: string): Promise<NativeStoragePool>;
  listAllStoragePools(flags: number): Promise<NativeStoragePool[]>;
}

export interface NativeDomain {
  getName(): string;
  getUUIDString(): string;
  getID(): number;
  getInfo(): Promise<NativeDomainInfo>;
  getState(flags: number): Promise<{ state: number; reason: number }>;
  getXMLDesc(flags: number): Promise<string>;
  getBlockInfo(disk: string, flags: number): Promise<NativeBlockInfo>;
  save(path: string, xml: string | null, flags: number): Promise<void>;
  suspend(): Promise<void>;
  resume(): Promise<void>;
  create(): Promise<void>;
  shutdown(): Promise<void>;
  destroy(): Promise<void>;
  undefineFlags(flags: number): Promise<void>;
  fsFreeze(mountpoints: string[] | null, flags: number): Promise<number>;
  fsThaw(mountpoints: string[] | null, flags: number): Promise<number>;
  agentSetResponseTimeout(timeout: number, flags: number): Promise<void>;
  getJobStats(flags: number): Promise<NativeJobStats>;
  free(): void;
  isFreed(): boolean;
}

export interface NativeStoragePool {
  getName(): string;
  getInfo(): Promise<NativePoolInfo>;
  lookupVolumeByName(name: string): Promise<NativeStorageVol>;
  getXMLDesc(flags: number): Promise<string>;
  refresh(): Promise<void>;
  free(): void;
  isFreed(): boolean;
}

export interface NativeStorageVol {
  getName(): string;
  getKey(): string;
  getPath(): Promise<string>;
  getInfo(): Promise<NativeVolInfo>;
  lookupPoolByVolume(): Promise<NativeStoragePool>;
  free(): void;
  isFreed(): boolean;
}

/** libvirt handles owned by live wrappers in this process, and calls in flight. */
export interface NativeCounters {
  connections: number;
  domains: number;
  storagePools: number;
  storageVols: number;
  workers: number;
}

/** Result of gzipDecompress. */
export interface NativeGunzipResult {
  /** 'bad-data': not gzip, corrupt, truncated or a failed CRC-32/ISIZE check; 'no-space': the member holds more than output.length bytes. */
  result: 'ok' | 'bad-data' | 'no-space';
  /** Size of the member read (0 unless ok): less than input.length when data follows it. */
  inBytes: number;
  /** Bytes written to output (0 unless ok). */
  outBytes: number;
}

/**
 * The gzip-member codec (native/codec.cc, libdeflate). Synchronous
 * whole-buffer calls: for worker threads only (src/archive/worker.ts), never
 * the main thread.
 */
export interface NativeCodec {
  /** One gzip member of `input` at libdeflate `level` (0 = stored .. 12) into `output`; its size, or 0 when output is too small. */
  gzipCompress(input: Uint8Array, level: number, output: Uint8Array): number;
  /** An output size that always suffices for gzipCompress of `length` bytes. */
  gzipCompressBound(length: number): number;
  /** Decompresses the gzip member at the start of `input` into `output`, checking CRC-32 and ISIZE. */
  gzipDecompress(input: Uint8Array, output: Uint8Array): NativeGunzipResult;
  /** The codec library compiled in. */
  codecInfo(): { library: string; version: string };
}

export interface NativeBinding extends NativeCodec {
  Connection: { open(uri: string | null): Promise<NativeConnection> };
  counters(): NativeCounters;
  /** virGetVersion: the libvirt library loaded at run time (major*1e6 + minor*1e3 + micro). */
  libraryVersion(): number;
  /** LIBVIR_VERSION_NUMBER of the headers the addon was built against. */
  headerVersion: number;
}

let binding: NativeBinding | undefined;

/** The addon paths tried, in order. */
export function nativeCandidates(root: string = packageRoot()): string[] {
  return [join(root, 'build', 'Release', 'kvmbak.node'), join(root, 'build', 'Debug', 'kvmbak.node')];
}

// require() of a path that does not exist fails before dlopen is tried.
function isNotFound(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === 'MODULE_NOT_FOUND';
}

/**
 * Loads the addon once and returns it. Throws NativeLoadError listing every
 * path tried, the loader's message and the fix.
 */
export function loadNative(): NativeBinding {
  binding ??= loadNativeFrom(nativeCandidates());
  return binding;
}

/** Loads the first of `tried` that works (uncached; loadNative() is the normal entry). */
export function loadNativeFrom(tried: string[]): NativeBinding {
  const require = createRequire(import.meta.url);
  const failures: { path: string; error: unknown }[] = [];
  for (const path of tried) {
    try {
      return require(path) as NativeBinding;
    } catch (error) {
      failures.push({ path, error });
    }
  }
  // Prefer the message of an addon that exists but cannot load (a missing
  // libvirt.so.0, a wrong architecture) over "not found".
  const real = failures.find((f) => !isNotFound(f.error));
  const detail = real ? `${real.path}: ${(real.error as Error).message ?? String(real.error)}` : 'the addon was never built';
  const fix = real
    ? /libvirt/.test(String((real.error as Error).message))
      ? 'install the libvirt runtime library (apt-get install libvirt0), then npm rebuild kvmbak'
      : 'rebuild it for this machine: npm rebuild kvmbak (needs apt-get install -y libvirt-dev pkg-config)'
    : 'build it: npm rebuild kvmbak (needs apt-get install -y libvirt-dev pkg-config; ' + 'runtime: apt-get install libvirt0)';
  throw new NativeLoadError(`kvmbak: cannot load the native libvirt addon (${detail}); tried ${tried.join(', ')}. Fix: ${fix}`, tried, {
    cause: real?.error ?? failures[0]?.error,
  });
}
