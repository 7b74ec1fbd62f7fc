/** Public types of the backup orchestration. */

import { BACKUP_MODES, type BackupMode, type ChunkReadMethod, type StorageFormat } from '../manifest/index.js';

export { BACKUP_MODES, type BackupMode };

export interface BackupOptions {
  /** Name or UUID of the domain (VM). */
  domain: string;
  /** Destination folder; the set goes to DEST/DOMAIN/<timestamp>/ (optional for inspectBackup only). */
  dest: string;
  /** libvirt URI (default: LIBVIRT_DEFAULT_URI, then libvirt's default). */
  uri?: string;
  /**
   * How the disks are frozen. Default: `save` for a running or paused
   * domain, `offline` for a shut-off one.
   */
  mode?: BackupMode;
  /** With mode `quiesce`: fall back to `pause` when the guest agent does not answer. */
  quiesceFallback?: 'pause' | 'none';
  /** Seconds to wait for the guest agent (mode `quiesce`). Default 10. */
  agentTimeoutSeconds?: number;
  /** COW size of each classic snapshot: bytes, `2G`, or `10%` of each LV. */
  snapshotSize?: string | number;
  /**
   * How the disks (and the memory state) are stored: `chunks`, into the destination's
   * deduplicating chunk store (DEST/.chunks; only chunks the store lacks are written), or `image`,
   * a self-contained `disks/TARGET.img.gz` per disk and `memory.state` in the set.
   * Default `chunks`.
   */
  format?: StorageFormat;
  /** gzip level 1–9 (default 3). */
  level?: number;
  /** Compression threads (default: available parallelism). */
  threads?: number;
  /** Chunk size of the image members (default 4 MiB; format image only: the chunk store uses 4 MiB). */
  chunkSize?: number;
  /**
   * Format chunks: read every disk whole (hash every chunk) even where a thin disk's base would
   * let thin_delta name the changed chunks.
   */
  full?: boolean;
  /** Disk targets (vda, vdb…) left out of the backup. */
  exclude?: readonly string[];
  /** Plan and check everything, touch nothing. */
  dryRun?: boolean;
  /** Extend a classic snapshot when its COW usage passes this percent (default 80). */
  extendThreshold?: number;
  /** How often snapshot usage is polled while archiving, ms (default 1500). */
  watchIntervalMs?: number;
  /**
   * Cancels the backup. A signal during the window lets the window finish
   * (the VM is brought back, the snapshots taken are removed), then the
   * backup stops with an AbortError, leaving no snapshot and no set.
   */
  signal?: AbortSignal;
  onProgress?: (event: BackupProgress) => void;
  /** Awaited callbacks at the two points of a run only the orchestration knows. */
  hooks?: {
    /** After planning, preconditions and set creation, right before the VM is saved/paused/frozen (never inside the window). A throw aborts this domain cleanly: nothing held, no set, no snapshot left. */
    beforeHold?: (ctx: BackupHookContext) => Promise<void>;
    /** Right after the VM runs again (before archiving). A throw is reported as a warning and changes nothing. */
    afterResume?: (ctx: BackupHookContext) => Promise<void>;
  };
  /** Cap on how fast each snapshot is read, bytes per second (default: no cap). */
  bwlimit?: number;
}

/** What the hooks of a backup are told. */
export interface BackupHookContext {
  domain: string;
  mode: BackupMode;
  setPath: string;
}

export type BackupPhase =
  'plan' | 'recover' | 'prepare' | 'save' | 'suspend' | 'freeze' | 'snapshot' | 'resume' | 'archive' | 'cleanup' | 'commit' | 'done';

export type BackupProgress =
  | { type: 'phase'; domain: string; phase: BackupPhase; message: string }
  | {
      type: 'archive';
      domain: string;
      target: string;
      bytesDone: number;
      bytesTotal: number | undefined;
      rate: number;
      snapshotPercent: number | undefined;
    }
  /** The memory state being written (mode save), from the domain's job statistics when the driver keeps them. */
  | { type: 'save'; domain: string; bytesDone: number; bytesTotal: number | undefined }
  | { type: 'snapshot-extended'; domain: string; target: string; fromBytes: number; toBytes: number; percent: number }
  | { type: 'warning'; domain: string; message: string };

export interface PlannedDisk {
  target: string;
  /**
   * Block device path: as in the domain XML (/dev/VG/LV or /dev/mapper/VG-LV),
   * or, for a `type='volume'` disk, the path libvirt gives its volume.
   */
  source: string;
  vg: string;
  lv: string;
  lvPath: string;
  lvSize: number;
  lvUuid: string;
  thin: boolean;
  thinPool: string | null;
  /** libvirt storage pool holding the volume, when one covers the VG. */
  pool: string | null;
  capacity: number;
  allocation: number;
  physical: number;
  /** Snapshot LV to create. */
  snapshotName: string;
  /** COW bytes for a classic snapshot; null for a thin snapshot. */
  snapshotSize: number | null;
  /**
   * How the disk will be read and stored: `image` (format image: every block, compressed into the
   * set), `first` (format chunks, no earlier chunked set of this disk in the destination: every block
   * read, every chunk new), `full` (format chunks: every block read and hashed, only chunks the store
   * lacks compressed and written), `thin-delta` (format chunks, a thin disk whose previous run kept
   * its snapshot as a base: only the chunks thin_delta reports changed are read).
   */
  readPath: 'image' | 'first' | ChunkReadMethod;
  /** Why a thin disk is read whole although an earlier chunked set of it exists (one warning line). */
  readNote?: string;
  /** readPath `thin-delta`: the base (the previous run's thin snapshot) and the previous set's chunk list. */
  delta?: { base: { vg: string; lv: string; thinId: number }; previousList: string; previousListSha256: string };
}

export interface SkippedDisk {
  target: string;
  device: string;
  reason: string;
}

export interface BackupPlan {
  domain: string;
  uuid: string;
  uri: string;
  host: string;
  libvirtVersion: string;
  stateBefore: string;
  mode: BackupMode;
  /** How disks and memory are stored (see BackupOptions.format). */
  format: StorageFormat;
  memoryBytes: number;
  /** The destination, or null when planned without one (inspect). */
  dest: string | null;
  disks: PlannedDisk[];
  skipped: SkippedDisk[];
  /** Per VG: free bytes and what the classic snapshots will take. */
  volumeGroups: { vg: string; free: number; needed: number; extentSize: number }[];
  destFree: number | null;
}

export interface BackupDiskResult {
  target: string;
  lvPath: string;
  /** How the disk was stored. */
  format: StorageFormat;
  /** Its file in the set: the image, or (format chunks) the chunk list. */
  file: string;
  rawBytes: number;
  rawSha256?: string; // absent for format chunks: the disk's identity is its chunk list (fileSha256) and the chunk ids
  /** Bytes this run stored for the disk: the image's size, or the chunk files it added to the store. */
  storedBytes: number;
  /** sha256 of `file`. */
  fileSha256: string;
  zeroChunks: number;
  /** Format chunks: the chunks of the disk, how many were new to the store, how many were read, and how. */
  chunks?: { total: number; new: number; read: number; method: ChunkReadMethod };
  snapshotSize: number | null;
  snapshotPeakPercent: number | null;
  snapshotExtendedTo: number | null;
  seconds: number;
}

export interface BackupResult {
  domain: string;
  uuid: string;
  setPath: string;
  mode: BackupMode;
  stateBefore: string;
  stateAfter: string;
  downtimeMs: number | null;
  memoryBytes: number | null;
  /** How disks and memory were stored. */
  format: StorageFormat;
  disks: BackupDiskResult[];
  skipped: SkippedDisk[];
  /** Bytes this run stored: images and memory.state, or (format chunks) the chunk files it added. */
  storedBytes: number;
  timings: { planMs: number; windowMs: number; archiveMs: number; totalMs: number };
  /** Set by a dry run: nothing was touched, `plan` says what would happen. */
  dryRun?: boolean;
  plan?: BackupPlan;
}
