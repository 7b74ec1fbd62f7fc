/**
 * The kvmbak/1 and kvmbak/2 manifests: what a backup set holds and how it was made.
 *
 * kvmbak/2 adds chunked storage: a disk (or the memory state) may be kept in the
 * destination's chunk store (DEST/.chunks) as an ordered chunk list in the set
 * instead of a self-contained `.img.gz`. A set that uses no chunks is written as
 * kvmbak/1, so older kvmbak versions still read image-format sets.
 *
 * A set is complete exactly when its manifest.json exists and validates.
 * All sizes are bytes (plain numbers: every size kvmbak handles fits in
 * 2^53), all checksums are lowercase hex sha256, all times ISO 8601 UTC, all
 * `file` fields are paths relative to the set folder.
 */

/** The newest format this version of kvmbak writes (sets that use chunks). */
export const MANIFEST_FORMAT = 'kvmbak/2' as const;
/** The format of a set whose disks and memory are all plain files (what kvmbak 0.x wrote too). */
export const MANIFEST_FORMAT_V1 = 'kvmbak/1' as const;
/** Every format this version reads. */
export const MANIFEST_FORMATS = [MANIFEST_FORMAT_V1, MANIFEST_FORMAT] as const;
export type ManifestFormat = (typeof MANIFEST_FORMATS)[number];
/** The chunk store's folder name inside the destination (DEST/.chunks). */
export const CHUNK_STORE_DIR = '.chunks' as const;
/** The chunk list of the memory state inside a set (kvmbak/2, mode save). */
export const MEMORY_CHUNKS_FILE = 'memory.chunks' as const;
/** How a disk is stored: a chunk list into DEST/.chunks, or a self-contained image file. */
export const STORAGE_FORMATS = ['chunks', 'image'] as const;
export type StorageFormat = (typeof STORAGE_FORMATS)[number];
/** The manifest's file name inside a set. */
export const MANIFEST_FILE = 'manifest.json' as const;
/** The domain XML's file name inside a set. */
export const DOMAIN_XML_FILE = 'domain.xml' as const;
/** The libvirt save image's file name inside a set (mode save only). */
export const MEMORY_FILE = 'memory.state' as const;

/** How the VM was held still while its disks were snapshotted. */
export const BACKUP_MODES = ['save', 'pause', 'quiesce', 'offline'] as const;
export type BackupMode = (typeof BACKUP_MODES)[number];

/** libvirt's domain states (virDomainState), by name. */
export const MANIFEST_DOMAIN_STATES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'] as const;
export type ManifestDomainState = (typeof MANIFEST_DOMAIN_STATES)[number];

export interface ManifestDomain {
  name: string;
  uuid: string;
  /** The state the domain was in before kvmbak touched it. */
  stateBefore: ManifestDomainState;
}

/** Milliseconds spent in each phase; more keys may be added (all numbers). */
export interface ManifestTimings {
  /** Checking preconditions and planning. */
  planMs: number;
  /** From the first stop/pause/freeze until the VM ran again. */
  windowMs: number;
  /** Archiving every disk. */
  archiveMs: number;
  /** The whole run. */
  totalMs: number;
  [phase: string]: number;
}

/** The libvirt save image (virDomainSave) as a file in the set; `virsh restore` takes it as is. */
export interface ManifestMemoryFile {
  file: typeof MEMORY_FILE;
  bytes: number;
  sha256: string;
}

/**
 * The libvirt save image kept in the chunk store (kvmbak/2): rebuild `memory.state` from
 * `chunks.file` (zcat of the chunk files in order) before `virsh restore`.
 */
export interface ManifestMemoryChunked {
  /** Raw size of the save image (equals chunks.rawBytes). */
  bytes: number;
  /** sha256 of the raw save image (equals chunks.rawSha256). */
  sha256: string;
  /** The memory state keeps its whole sha256: `virsh restore` takes the rebuilt file as one piece. */
  chunks: ManifestChunks & { file: typeof MEMORY_CHUNKS_FILE; rawSha256: string };
}

export type ManifestMemory = ManifestMemoryFile | ManifestMemoryChunked;

/** True when the memory state is in the chunk store (kvmbak/2). */
export function isChunkedMemory(m: ManifestMemory): m is ManifestMemoryChunked {
  return (m as Partial<ManifestMemoryChunked>).chunks !== undefined;
}

/** How a chunked source was read. */
export const CHUNK_READ_METHODS = ['full', 'thin-delta'] as const;
export type ChunkReadMethod = (typeof CHUNK_READ_METHODS)[number];

/**
 * A disk or the memory state as a chunk list (kvmbak/2). The list file (in the set, listed
 * in SHA256SUMS) names, in order, the chunk files in DEST/.chunks that rebuild the raw data;
 * each chunk file is one gzip member named by the sha256 of its raw chunk, so the files
 * concatenated in list order are a gzip of the whole source.
 */
export interface ManifestChunks {
  /** The chunk list in the set, e.g. 'disks/vda.chunks' or 'memory.chunks'. */
  file: string;
  /** Size of the list file. */
  listBytes: number;
  /** sha256 of the list file (what SHA256SUMS lists). */
  listSha256: string;
  /** Raw bytes of the source. */
  rawBytes: number;
  /**
   * sha256 of the raw bytes (what `xargs cat | zcat | sha256sum` prints): always for the memory
   * state; absent for a disk written by kvmbak since the chunk list became a disk's identity
   * (hashing the whole disk is one serial pass that caps a re-backup, and a thin-delta run never
   * reads the whole disk). Such a disk is proven by its list (listSha256, in SHA256SUMS) and each
   * chunk's id (the sha256 of its raw data, checked on every read). Older sets carry it, and it is
   * still checked when present.
   */
  rawSha256?: string;
  /** Raw bytes per chunk (the last chunk may be shorter). */
  chunkSize: number;
  /** Chunks in the list (ceil(rawBytes / chunkSize)). */
  chunks: number;
  /** How many of them are all zeroes. */
  zeroChunks: number;
  /** Chunks this run wrote to the store (the others were there already). */
  newChunks: number;
  /** Bytes of chunk files this run wrote to the store. */
  addedBytes: number;
  /** 'full': every chunk read and hashed; 'thin-delta': only the chunks the thin pool reported changed. */
  read: ChunkReadMethod;
  /** Chunks read from the source. */
  chunksRead: number;
  /**
   * A thin disk: the thin snapshot this run read, kept (tagged `kvmbak-base`) as the base of the
   * next run's thin_delta. `thinId` is its device id in the pool (a base of another id is not it).
   */
  base?: ManifestThinBase;
}

/** A thin snapshot kept as the base of the next run (in the disk's VG and thin pool). */
export interface ManifestThinBase {
  lv: string;
  thinId: number;
}

/** The inactive, secure domain XML: what `virsh define` needs. */
export interface ManifestDomainXml {
  file: typeof DOMAIN_XML_FILE;
  sha256: string;
}

/**
 * One disk image: the raw device as multi-member gzip, one member per
 * `chunkSize` bytes of raw data (the last one may be shorter).
 */
export interface ManifestImage {
  /** e.g. 'disks/vda.img.gz'. */
  file: string;
  /** Raw bytes read from the snapshot (the whole device). */
  rawBytes: number;
  /** sha256 of the raw bytes (what `zcat file | sha256sum` prints). */
  rawSha256: string;
  /** Size of the compressed file. */
  storedBytes: number;
  /** sha256 of the compressed file (what SHA256SUMS lists). */
  fileSha256: string;
  /** Raw bytes per gzip member. */
  chunkSize: number;
  /** Compressed offset of every member: members[i] is where chunk i starts. */
  members: number[];
  /** How many chunks were all zeroes (stored through the fast path). */
  zeroChunks: number;
}

export interface ManifestSnapshot {
  /** The LV name of the snapshot (it no longer exists after the backup). */
  name: string;
  /** COW area size in bytes for a classic snapshot; null for a thin one. */
  size: number | null;
  /** Highest COW usage seen while archiving, 0-100; null when not measured (thin). */
  peakPercent: number | null;
  /** Set when the snapshot had to be extended: its final COW size in bytes. */
  extendedTo?: number;
}

export interface ManifestDisk {
  /** Target device in the guest, e.g. 'vda'. */
  target: string;
  /** The disk's source path, e.g. '/dev/vg0/web01-root'. */
  source: string;
  vg: string;
  lv: string;
  /** The libvirt storage pool holding the volume, when one covers the VG. */
  pool: string | null;
  /** virDomainGetBlockInfo. */
  capacity: number;
  allocation: number;
  physical: number;
  /** lvs lv_size of the origin. */
  lvSize: number;
  lvUuid: string;
  thin: boolean;
  /** The thin pool LV name (thin volumes only). */
  thinPool: string | null;
  /** The self-contained image (format image; every kvmbak/1 disk). Exactly one of image and chunks is set. */
  image?: ManifestImage;
  /** The chunk list (format chunks, kvmbak/2). */
  chunks?: ManifestChunks;
  snapshot: ManifestSnapshot;
}

/** A disk of the domain that is not in the set, and why. */
export interface ManifestSkipped {
  target: string;
  /** libvirt's device kind: 'disk', 'cdrom', 'floppy', 'lun'. */
  device: string;
  reason: string;
}

export interface Manifest {
  /** kvmbak/1 when nothing is chunked, kvmbak/2 otherwise. */
  format: ManifestFormat;
  toolVersion: string;
  /** When the set was committed, ISO 8601 UTC. */
  createdAt: string;
  /** os.hostname() of the machine that ran the backup. */
  host: string;
  libvirtVersion: string;
  /** The libvirt connection URI used. */
  uri: string;
  domain: ManifestDomain;
  mode: BackupMode;
  /** Milliseconds from the first stop to the VM running again; null when the VM was never stopped. */
  downtimeMs: number | null;
  timings: ManifestTimings;
  /** Present in mode save, null otherwise. */
  memory: ManifestMemory | null;
  domainXml: ManifestDomainXml;
  disks: ManifestDisk[];
  skipped: ManifestSkipped[];
}

/** kvmbak/2 when any disk or the memory state is chunked, else kvmbak/1 (readable by older kvmbak). */
export function manifestFormatFor(m: Pick<Manifest, 'disks' | 'memory'>): ManifestFormat {
  const chunked = m.disks.some((d) => d.chunks !== undefined) || (m.memory !== null && isChunkedMemory(m.memory));
  return chunked ? MANIFEST_FORMAT : MANIFEST_FORMAT_V1;
}

/**
 * The raw data a disk entry stands for, whichever way it is stored. `rawSha256` is undefined for a
 * chunked disk identified by its chunk list alone (see ManifestChunks.rawSha256).
 */
export function diskRaw(d: ManifestDisk): { rawBytes: number; rawSha256: string | undefined; chunkSize: number } {
  const s = d.chunks ?? d.image!;
  return { rawBytes: s.rawBytes, rawSha256: s.rawSha256, chunkSize: s.chunkSize };
}

/** The file in the set that stands for the memory state: memory.state, or its chunk list memory.chunks. */
export function memorySetFile(m: ManifestMemory): string {
  return isChunkedMemory(m) ? m.chunks.file : m.file;
}
