/**
 * Watching snapshots while they are archived. Classic: COW usage is polled;
 * above a threshold a snapshot is extended while its VG has room; an
 * invalidated (overflowed) snapshot stops the backup. Thin: what runs out is
 * the thin pool (data or metadata); a pool that fills up stops the backup,
 * since writes to a full pool fail or hang and the snapshot can no longer be
 * trusted.
 */
import { KvmbakError } from '../errors.js';
import type { Lvm, SnapshotUsage } from '../lvm/index.js';

/** A snapshot overflowed: its content is garbage and the backup must fail. */
export class SnapshotInvalidError extends KvmbakError {
  readonly target: string;
  constructor(target: string, message: string) {
    super(message, 'KVMBAK_SNAPSHOT_INVALID');
    this.target = target;
  }
}
Object.defineProperty(SnapshotInvalidError.prototype, 'name', { value: 'SnapshotInvalidError', enumerable: false });

export interface WatchedSnapshot {
  target: string;
  vg: string;
  /** The snapshot LV name. */
  lv: string;
  /** Current COW size in bytes. */
  size: number;
  peakPercent: number;
  extendedTo: number | null;
  /** The snapshot is archived and removed: stop watching it. */
  done: boolean;
  /** A thin snapshot: its pool is watched instead of a COW area. */
  thin?: boolean;
}

/** A thin pool this full (data or metadata, percent) fails the backup. */
export const THIN_POOL_FULL_PERCENT = 100;

export interface WatcherOptions {
  lvm: Lvm;
  snapshots: WatchedSnapshot[];
  intervalMs: number;
  /** Extend above this percent. */
  threshold: number;
  onExtended: (s: WatchedSnapshot, fromBytes: number, percent: number) => void;
  onWarning: (message: string) => void;
  /** Called once when a snapshot is found invalid; the caller aborts the archive. */
  onInvalid: (error: SnapshotInvalidError) => void;
  onUsage?: (s: WatchedSnapshot, percent: number) => void;
}

/** Polls snapshot usage until stopped. */
export class SnapshotWatcher {
  readonly #o: WatcherOptions;
  #timer: NodeJS.Timeout | null = null;
  /** The check in progress (checks run one at a time). */
  #running: Promise<unknown> = Promise.resolve();
  #stopped = false;
  #failed: SnapshotInvalidError | null = null;
  readonly #warnedFull = new Set<string>();

  constructor(options: WatcherOptions) {
    this.#o = options;
  }

  get failure(): SnapshotInvalidError | null {
    return this.#failed;
  }

  start(): void {
    const tick = (): void => {
      this.#timer = null;
      if (this.#stopped) return;
      void this.check()
        .catch(() => undefined)
        .then(() => {
          if (!this.#stopped) this.#timer = setTimeout(tick, this.#o.intervalMs);
        });
    };
    this.#timer = setTimeout(tick, this.#o.intervalMs);
  }

  /**
   * One round of checks over every live snapshot, after any round in
   * progress; returns the first invalid one found. A usage that cannot be
   * read is a warning, unless `strict` (the check that vouches for a finished
   * image): then it throws.
   */
  check(options: { strict?: boolean } = {}): Promise<SnapshotInvalidError | null> {
    const next = this.#running.then(() => this.#checkOnce(options.strict ?? false));
    this.#running = next.catch(() => undefined);
    return next;
  }

  async #checkOnce(strict: boolean): Promise<SnapshotInvalidError | null> {
    for (const s of this.#o.snapshots) {
      if (this.#failed !== null) return this.#failed;
      if (s.done) continue;
      let usage;
      try {
        usage = await this.#o.lvm.snapshotUsage({ vg: s.vg, lv: s.lv });
      } catch (e) {
        if (strict) {
          throw new KvmbakError(
            `cannot tell whether snapshot ${s.vg}/${s.lv} of disk ${s.target} stayed valid (${(e as Error).message}); ` +
              'the backup is discarded: run it again',
            'KVMBAK_SNAPSHOT_UNKNOWN',
            { cause: e },
          );
        }
        this.#o.onWarning(`could not read the usage of snapshot ${s.vg}/${s.lv}: ${(e as Error).message}`);
        continue;
      }
      if (usage.kind === 'thin') {
        const failed = this.#checkPool(s, usage.pool);
        if (failed !== null) return failed;
        continue;
      }
      const percent = usage.percent ?? 0;
      if (percent > s.peakPercent) s.peakPercent = percent;
      this.#o.onUsage?.(s, percent);
      if (usage.invalid) {
        s.peakPercent = 100;
        this.#failed = new SnapshotInvalidError(
          s.target,
          `snapshot ${s.vg}/${s.lv} of disk ${s.target} overflowed (the guest wrote more than its ` +
            `${Math.round(s.size / 1024 ** 2)} MiB copy-on-write area) and is invalid: the backup is discarded; ` +
            `run it again with a larger \`snapshotSize\` or free space in ${s.vg} so kvmbak can extend it`,
        );
        this.#o.onInvalid(this.#failed);
        return this.#failed;
      }
      if (percent >= this.#o.threshold) await this.#extend(s, percent);
    }
    return null;
  }

  /** A thin snapshot's pool: full (data or metadata) is a failure. */
  #checkPool(s: WatchedSnapshot, pool: SnapshotUsage['pool']): SnapshotInvalidError | null {
    if (pool === null) return null;
    const full =
      (pool.dataPercent ?? 0) >= THIN_POOL_FULL_PERCENT ? 'data' : (pool.metadataPercent ?? 0) >= THIN_POOL_FULL_PERCENT ? 'metadata' : null;
    if (full === null) return null;
    this.#failed = new SnapshotInvalidError(
      s.target,
      `thin pool ${s.vg}/${pool.name} of snapshot ${s.vg}/${s.lv} (disk ${s.target}) ran out of ${full} space while it was ` +
        `archived: the backup is discarded; extend the pool (lvextend ${s.vg}/${pool.name}) and run it again`,
    );
    this.#o.onInvalid(this.#failed);
    return this.#failed;
  }

  async #extend(s: WatchedSnapshot, percent: number): Promise<void> {
    const want = Math.ceil(s.size * 0.5);
    let free: number;
    let extent: number;
    try {
      const vg = await this.#o.lvm.vgInfo(s.vg);
      free = vg.free;
      extent = vg.extentSize > 0 ? vg.extentSize : 4 * 1024 ** 2;
    } catch (e) {
      this.#o.onWarning(`could not read free space of ${s.vg}: ${(e as Error).message}`);
      return;
    }
    const add = Math.min(Math.ceil(want / extent) * extent, Math.floor(free / extent) * extent);
    if (add <= 0) {
      if (!this.#warnedFull.has(s.lv)) {
        this.#warnedFull.add(s.lv);
        this.#o.onWarning(`snapshot ${s.vg}/${s.lv} is ${percent.toFixed(1)}% full and ${s.vg} has no free space to extend it`);
      }
      return;
    }
    try {
      const after = await this.#o.lvm.extend({ vg: s.vg, lv: s.lv }, add);
      const from = s.size;
      s.size = after.size;
      s.extendedTo = after.size;
      this.#o.onExtended(s, from, percent);
    } catch (e) {
      this.#o.onWarning(`could not extend snapshot ${s.vg}/${s.lv}: ${(e as Error).message}`);
    }
  }

  /** Stops polling and waits for a check in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}
