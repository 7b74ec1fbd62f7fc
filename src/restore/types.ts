/** Public types of restore(). */
import type { DomainStateName, Hypervisor } from '../libvirt/index.js';
import type { Lvm } from '../lvm/index.js';
import type { BackupMode } from '../manifest/index.js';

export interface RestoreOptions {
  /** The backup set folder (DEST/DOMAIN/YYYYMMDDTHHMMSSZ). */
  set: string;
  /** libvirt URI (default: LIBVIRT_DEFAULT_URI, then libvirt's default). */
  uri?: string;
  /**
   * Restore as a copy under this name: new UUID, new MAC addresses, a fresh
   * NVRAM, disks that were not backed up left out. A copy boots from its
   * disks: it cannot resume the original's memory state (libvirt ties a save
   * image to the UUID and MAC addresses), which a warning says.
   */
  name?: string;
  /** Put every disk into this VG (LV names as recorded), unless `map` says otherwise. */
  vg?: string;
  /** Per disk target: the LV to restore into, `/dev/VG/LV` or `VG/LV` (see parseDiskMap for `vda=...` strings). */
  map?: Readonly<Record<string, string>>;
  /** Create missing LVs of thin disks as thin volumes in this thin pool (of the target VG). */
  thinPool?: string;
  /**
   * Replace existing LVs and an existing domain of the same name or UUID.
   * An existing LV is replaced by a new one written beside it (same VG, same
   * thin pool) and swapped in by name only once its data is checked; the
   * domain is stopped (destroyed) only then, just before the swap.
   */
  force?: boolean;
  /**
   * With `force`: write straight over the existing LVs instead of beside
   * them (for a VG without room for a second copy). The domain is stopped
   * before writing, and a failure part-way loses the old data of the LVs
   * written so far.
   */
  inPlace?: boolean;
  /** Do not resume from memory.state: start the domain from its disks (a cold boot) unless `noStart`. */
  noMemory?: boolean;
  /** Leave the domain shut off (without memory) or paused (resumed from memory: `virsh resume` runs it). */
  noStart?: boolean;
  /** Plan and check everything, touch nothing. */
  dryRun?: boolean;
  /** Decompression threads per image (default: available parallelism). */
  threads?: number;
  signal?: AbortSignal;
  onProgress?: (event: RestoreProgress) => void;
}

/** Internal knobs (tests inject these). */
export interface RestoreContext {
  /** Reuse an open connection instead of opening `uri`. */
  hypervisor?: Hypervisor;
  lvm?: Lvm;
  /** New MAC addresses for a copy (default: random 52:54:00:xx:xx:xx). */
  newMac?: () => string;
  /** New UUID for a copy (default: crypto.randomUUID). */
  newUuid?: () => string;
  /** Suffix of the temporary LV names of a swap (default: 6 random hex digits). */
  lvSuffix?: () => string;
}

export type RestorePhase = 'plan' | 'check' | 'stop' | 'create' | 'write' | 'swap' | 'define' | 'resume' | 'start' | 'cleanup' | 'done';

export type RestoreProgress =
  | { type: 'phase'; domain: string; phase: RestorePhase; message: string }
  | {
      type: 'write';
      domain: string;
      target: string;
      /** The LV being written, VG/LV. */
      lv: string;
      /** 'unpack', or 'sync' once all data is written. */
      phase: 'unpack' | 'sync' | 'hash' | 'pack';
      bytesDone: number;
      bytesTotal: number | undefined;
      rate: number;
    }
  | { type: 'check'; domain: string; file: string; bytesDone: number; bytesTotal: number }
  | { type: 'warning'; domain: string; message: string };

/** What happens to one disk. */
export interface RestoreDiskPlan {
  target: string;
  /** How the disk is stored: a self-contained image, or a chunk list into the destination's chunk store (kvmbak/2). */
  format: 'image' | 'chunks';
  /** The image, or the chunk list, in the set (absolute path). */
  image: string;
  /**
   * Raw bytes the image holds and their sha256 (checked while writing). No sha256 for a chunked disk
   * identified by its chunk list (each chunk checked against its id, the list against the manifest).
   */
  rawBytes: number;
  rawSha256: string | undefined;
  /** Where the disk was at backup time. */
  original: { vg: string; lv: string; source: string; thin: boolean; thinPool: string | null; lvSize: number };
  /** The target LV. */
  vg: string;
  lv: string;
  /** Its device path: lvs' lv_path for an existing LV, /dev/VG/LV for one to create. */
  path: string;
  /**
   * create: a new LV of `size` bytes. swap: the LV exists (needs force): a
   * new one (`temp`) is written beside it and takes its name once checked;
   * the old one is removed. overwrite: the existing LV is written in place
   * (force + inPlace).
   */
  action: 'create' | 'swap' | 'overwrite';
  /** Bytes of the LV: the size to create, or the existing LV's size (overwrite). */
  size: number;
  /** How a new LV is made (create, swap); null for one written in place. */
  create: { kind: 'linear' } | { kind: 'thin'; pool: string } | null;
  /**
   * All-zero chunks are not written: the target is a thin LV this restore creates, which reads as
   * zeros and stays unallocated where nothing is written. False for a linear LV (its extents hold
   * whatever was there) and for an existing LV written in place: those get every byte.
   */
  skipZeros: boolean;
  /** swap: the temporary names of the new LV (tagged kvmbak-restore while it has it) and of the old one until removed. */
  temp: { newLv: string; oldLv: string } | null;
  /** The target is another LV than the original one: the disk's source changes in the domain XML. */
  moved: boolean;
  /**
   * The disk was `<disk type='volume'>` (a libvirt pool's volume): it becomes a
   * block disk on the LV's path, which needs no pool (and no pool refresh to
   * see a newly created LV).
   */
  toBlock: boolean;
}

/** An existing domain the restore replaces (`force`). */
export interface RestoreReplacement {
  name: string;
  uuid: string;
  state: DomainStateName;
  /** It runs and is destroyed (stopped at once) before the disks are written. */
  destroy: boolean;
  /** Why it conflicts: same name, same UUID, or both. */
  conflict: 'name' | 'uuid' | 'name+uuid';
}

export interface RestorePlan {
  /** The set folder (absolute). */
  set: string;
  /** From the manifest. */
  source: { domain: string; uuid: string; createdAt: string; mode: BackupMode; host: string };
  /** The domain as it will be defined. */
  domain: { name: string; uuid: string; copy: boolean };
  disks: RestoreDiskPlan[];
  replace: RestoreReplacement[];
  /** How the domain comes back: resumed from memory.state, started (cold boot), or left shut off. */
  run: 'resume' | 'resume-paused' | 'start' | 'none';
  /** The memory state is resumed with a rewritten XML (disks moved or turned into block disks). */
  memoryXml: boolean;
  /** Disks of the backed-up domain that are not in the set and are left out of a copy's XML. */
  droppedDisks: string[];
  /** Things worth knowing that do not stop the restore. */
  warnings: string[];
  /** The steps, one human-readable line each, in order. */
  steps: string[];
}

export interface RestoreDiskResult {
  target: string;
  /** VG/LV written. */
  lv: string;
  path: string;
  created: boolean;
  rawBytes: number;
  /**
   * sha256 of the data written: equal to the manifest's (checked). null for a chunked disk whose
   * set records no whole-disk sha256: its identity is its chunk list (`listSha256`), and every chunk
   * written was checked against its id (the sha256 of its data).
   */
  sha256: string | null;
  /** Format chunks: the sha256 of the chunk list the disk was rebuilt from, checked against the manifest. */
  listSha256?: string;
  /** A new LV was written beside the existing one and swapped in; the old one removed (see RestoreResult.leftoverLvs). */
  swapped: boolean;
  /** Raw bytes written to the LV; the rest were all-zero chunks left unwritten (skipZeros). */
  bytesWritten: number;
  /** All-zero chunks were left unwritten (a new thin LV, see RestoreDiskPlan.skipZeros). */
  skipZeros: boolean;
  /** parallel/stream: from an image (with or without its member index); chunks: from the chunk store. */
  mode: 'parallel' | 'stream' | 'chunks';
  seconds: number;
}

export interface RestoreResult {
  set: string;
  /** The domain as defined. */
  domain: string;
  uuid: string;
  dryRun: boolean;
  plan: RestorePlan;
  disks: RestoreDiskResult[];
  /** Domains replaced (destroyed if running, then undefined). */
  replaced: RestoreReplacement[];
  /** Swapped-out old LVs (VG/LV, temporary names) that could not be removed: lvremove them. */
  leftoverLvs: string[];
  memoryRestored: boolean;
  started: boolean;
  /** The domain's state at the end; null in a dry run. */
  stateAfter: DomainStateName | null;
  seconds: number;
}
