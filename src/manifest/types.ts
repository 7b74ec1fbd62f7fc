/**
 * The kvmbak/1 manifest: what a backup set holds and how it was made.
 *
 * A set is complete exactly when its manifest.json exists and validates.
 * All sizes are bytes (plain numbers: every size kvmbak handles fits in
 * 2^53), all checksums are lowercase hex sha256, all times ISO 8601 UTC, all
 * `file` fields are paths relative to the set folder.
 */

/** The format this version of kvmbak writes and reads. */
export const MANIFEST_FORMAT = 'kvmbak/1' as const;
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

/** The libvirt save image (virDomainSave); `virsh restore` takes it as is. */
export interface ManifestMemory {
  file: typeof MEMORY_FILE;
  bytes: number;
  sha256: string;
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
  image: ManifestImage;
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
  format: typeof MANIFEST_FORMAT;
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
