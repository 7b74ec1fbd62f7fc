/**
 * The lvm2 driver: typed wrappers of lvs/vgs/lvcreate/lvextend/lvremove/
 * lvchange run through a CommandRunner (never a shell). Names are validated
 * before anything runs; any non-zero exit becomes an LvmCommandError.
 */
import { ConfigError, KvmbakError, LvmCommandError, isLvmCommandError } from '../errors.js';
import { COMMAND_BASE_ENV, LocalCommandRunner, type CommandRunner, type CommandResult } from '../exec/index.js';
import { parseLvRef, splitDmName, validateLvName, validateLvmTag, validateVgName, vgNameProblem, type LvName, type LvRef } from './names.js';
import {
  lvsArgs,
  parseLvsReport,
  parseThinLvsReport,
  parseVgsReport,
  thinLvsArgs,
  vgsArgs,
  type LogicalVolume,
  type SnapshotKind,
  type ThinIdRow,
  type VolumeGroup,
} from './report.js';
import { parseThinPoolStatus, thinDeltaArgv, thinPoolDevices, type ThinPoolStatus } from './thin.js';

/** The LVM tag every snapshot kvmbak makes carries. */
export const KVMBAK_TAG = 'kvmbak';

/**
 * The tag of a thin snapshot kvmbak keeps after a run as the base of the next run's thin_delta
 * (besides `kvmbak`; without the run's and the owner's tags, so recover leaves it alone).
 */
export const KVMBAK_BASE_TAG = 'kvmbak-base';

/** Stable `code`s of the KvmbakErrors this module throws (besides ConfigError and LvmCommandError). */
export const LvmErrorCode = Object.freeze({
  /** The path is not (or does not lead to) an LVM logical volume. */
  NotAnLv: 'KVMBAK_NOT_AN_LV',
  /** The path does not exist. */
  PathNotFound: 'KVMBAK_PATH_NOT_FOUND',
  /** No such LV in the VG. */
  LvNotFound: 'KVMBAK_LV_NOT_FOUND',
  /** No such VG. */
  VgNotFound: 'KVMBAK_VG_NOT_FOUND',
  /** An LV of that name exists already. */
  LvExists: 'KVMBAK_LV_EXISTS',
  /** A destructive call on an LV that kvmbak did not make. */
  Refused: 'KVMBAK_LVM_REFUSED',
  /** A command succeeded but the result is not what was asked for. */
  Unexpected: 'KVMBAK_LVM_UNEXPECTED',
  /** The LV is not a thin volume (thin ids and thin_delta apply to thin volumes only). */
  NotThin: 'KVMBAK_NOT_THIN',
  /** The thin pool's metadata snapshot is reserved already (by another run, or one killed holding it). */
  MetadataSnapshotHeld: 'KVMBAK_METADATA_SNAPSHOT_HELD',
} as const);
export type LvmErrorCode = (typeof LvmErrorCode)[keyof typeof LvmErrorCode];

export interface LvmOptions {
  /** Time budget of report commands (lvs, vgs, stat). Default 60 s. */
  reportTimeoutMs?: number;
  /** Time budget of commands that change something (lvcreate, lvextend, lvremove, lvchange). Default 300 s. */
  changeTimeoutMs?: number;
}

/** Per-call options: every call may be cancelled and given its own time budget. */
export interface LvmCallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface LvmCreateSnapshotOptions extends LvmCallOptions {
  /** Name of the new snapshot LV (same VG as the origin). */
  name: string;
  /** Copy-on-write size in bytes; required for a classic snapshot, not used for a thin one. */
  size?: number;
  /** Tags besides `kvmbak` (e.g. one naming the backup run). */
  tags?: readonly string[];
  /** 'auto' (default): thin snapshot of a thin origin, classic otherwise. 'classic' forces a COW snapshot. */
  type?: 'auto' | SnapshotKind;
}

export interface SnapshotUsage {
  /** `VG/LV` of the snapshot. */
  fullName: string;
  kind: SnapshotKind;
  /**
   * Classic: percentage of the COW area used. Thin: percentage of the
   * snapshot's virtual size mapped. Null when lvm2 cannot tell (inactive).
   */
  percent: number | null;
  /** The kernel invalidated the snapshot (classic COW overflow): its content is garbage. */
  invalid: boolean;
  /** A classic snapshot at 100%: the next write to the origin invalidates it. */
  full: boolean;
  active: boolean;
  /** Snapshot LV size in bytes (the COW area for classic snapshots). */
  size: number;
  /** Bytes of the COW area in use (classic), else null. */
  usedBytes: number | null;
  /** For thin snapshots: the pool's usage, which is what runs out. */
  pool: { name: string; dataPercent: number | null; metadataPercent: number | null } | null;
}

export interface LvmRemoveOptions extends LvmCallOptions {
  /** Remove even an LV that is not a kvmbak snapshot. */
  force?: boolean;
  /** Return false instead of throwing when the LV does not exist. */
  missingOk?: boolean;
}

export interface LvmListOptions extends LvmCallOptions {
  /** Only LVs carrying this tag. */
  tag?: string;
  /** Only LVs of this VG. */
  vg?: string;
}

/** A thin volume (thin LV or thin snapshot) as thin_delta knows it. */
export interface ThinVolume extends ThinIdRow {
  pool: string;
  thinId: number;
}

export interface LvmCreateVolumeOptions extends LvmCallOptions {
  /** Create a thin volume in this thin pool (same VG) instead of a linear LV. */
  thinPool?: string;
  tags?: readonly string[];
}

const STAT_FORMAT = '%F\n%t:%T\n';

function positiveBytes(value: unknown, option: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(`${option} must be a positive whole number of bytes, got ${String(value)}`, option);
  }
  return value;
}

function uniqueTags(tags: readonly string[] | undefined, withKvmbak: boolean): string[] {
  if (tags !== undefined && !Array.isArray(tags)) throw new ConfigError('tags must be an array of strings', 'tags');
  const all = withKvmbak ? [KVMBAK_TAG, ...(tags ?? [])] : [...(tags ?? [])];
  const out: string[] = [];
  for (const t of all) {
    validateLvmTag(t);
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

function addTagArgs(tags: readonly string[]): string[] {
  return tags.flatMap((t) => ['--addtag', t]);
}

function full(n: LvName): string {
  return `${n.vg}/${n.lv}`;
}

/** lvm2's message for a VG that does not exist (LC_ALL=C). */
const VG_NOT_FOUND_RE = /Volume group "[^"]*" not found/;

/**
 * The lvm2 driver. All methods run commands through the injected
 * CommandRunner (a LocalCommandRunner by default).
 */
export class Lvm {
  readonly runner: CommandRunner;
  readonly #reportTimeoutMs: number;
  readonly #changeTimeoutMs: number;

  constructor(runner?: CommandRunner, options: LvmOptions = {}) {
    this.runner = runner ?? new LocalCommandRunner();
    for (const key of ['reportTimeoutMs', 'changeTimeoutMs'] as const) {
      const v = options[key];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
        throw new ConfigError(`${key} must be a non-negative number of milliseconds, got ${String(v)}`, key);
      }
    }
    this.#reportTimeoutMs = options.reportTimeoutMs ?? 60_000;
    this.#changeTimeoutMs = options.changeTimeoutMs ?? 300_000;
  }

  /** Runs one command; a non-zero exit (or death by signal) becomes an LvmCommandError. */
  async #run(command: string, args: string[], kind: 'report' | 'change', call: LvmCallOptions = {}): Promise<CommandResult> {
    const result = await this.runner.run(command, args, {
      signal: call.signal,
      timeoutMs: call.timeoutMs ?? (kind === 'report' ? this.#reportTimeoutMs : this.#changeTimeoutMs),
      env: { ...COMMAND_BASE_ENV },
    });
    if (result.exitCode !== 0) {
      throw new LvmCommandError({
        command,
        args,
        exitCode: result.exitCode,
        signal: result.signal,
        stdout: result.stdout,
        stderr: result.stderr,
      });
    }
    return result;
  }

  /** `lvs` of the given targets, parsed. */
  async #lvs(targets: string[], call: LvmCallOptions): Promise<LogicalVolume[]> {
    const res = await this.#run('lvs', lvsArgs(targets), 'report', call);
    return parseLvsReport(res.stdout);
  }

  /** Every LV of one VG; a missing VG is a clear error. */
  async #lvsOfVg(vg: string, call: LvmCallOptions): Promise<LogicalVolume[]> {
    try {
      return await this.#lvs([vg], call);
    } catch (e) {
      throw this.#vgNotFound(e, vg);
    }
  }

  #vgNotFound(e: unknown, vg: string): unknown {
    if (isLvmCommandError(e) && VG_NOT_FOUND_RE.test(e.stderr)) {
      return new KvmbakError(
        `Volume group ${vg} does not exist on this host: check the name (vgs lists the volume groups)`,
        LvmErrorCode.VgNotFound,
        { cause: e },
      );
    }
    return e;
  }

  /** The LV named by `ref`, or null when its VG has no such LV. */
  async find(ref: LvRef, call: LvmCallOptions = {}): Promise<LogicalVolume | null> {
    const name = parseLvRef(ref);
    const lvs = await this.#lvsOfVg(name.vg, call);
    return lvs.find((l) => l.vg === name.vg && l.lv === name.lv) ?? null;
  }

  /** The LV named by `ref`; throws KVMBAK_LV_NOT_FOUND when it does not exist. */
  async get(ref: LvRef, call: LvmCallOptions = {}): Promise<LogicalVolume> {
    const lv = await this.find(ref, call);
    if (!lv) {
      const name = parseLvRef(ref);
      throw new KvmbakError(
        `Logical volume ${full(name)} does not exist: check the name (lvs ${name.vg} lists its volumes)`,
        LvmErrorCode.LvNotFound,
      );
    }
    return lv;
  }

  /**
   * Resolves a block-device path to its LV: `/dev/VG/LV`, `/dev/mapper/VG-LV`
   * (dashes in names doubled), or any symlink to the device (e.g.
   * /dev/disk/by-id/dm-name-..., /dev/dm-N), matched by device number.
   */
  async resolve(path: string, call: LvmCallOptions = {}): Promise<LogicalVolume> {
    if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0') || path.length > 4096) {
      throw new ConfigError(`Invalid device path ${JSON.stringify(path)}: give an absolute path such as /dev/VG/LV`, 'path');
    }
    const all = await this.#lvs([], call);

    const byName = this.#nameFromPath(path);
    const direct = all.find((l) => l.path === path || l.dmPath === path || (byName !== null && l.vg === byName.vg && l.lv === byName.lv));
    if (direct) return direct;

    // Anything else: follow symlinks and match the device number.
    const stat = await this.runner.run('stat', ['-L', '--printf', STAT_FORMAT, '--', path], {
      signal: call.signal,
      timeoutMs: call.timeoutMs ?? this.#reportTimeoutMs,
      env: { ...COMMAND_BASE_ENV },
    });
    if (stat.exitCode !== 0) {
      if (/No such file or directory/.test(stat.stderr)) {
        throw new KvmbakError(
          `${path} does not exist: check the disk's source path (an LV must be active to have a device node)`,
          LvmErrorCode.PathNotFound,
        );
      }
      const why = stat.stderr.trim().split('\n')[0] || `exit code ${stat.exitCode}`;
      throw new KvmbakError(`Cannot inspect ${path}: ${why}`, LvmErrorCode.NotAnLv);
    }
    const [type = '', dev = ''] = stat.stdout.split('\n');
    if (type !== 'block special file') {
      throw new KvmbakError(
        `${path} is a ${type || 'file of unknown type'}, not a block device: kvmbak backs up disks that are LVM logical volumes; exclude this disk or move it to LVM`,
        LvmErrorCode.NotAnLv,
      );
    }
    const m = /^([0-9a-f]+):([0-9a-f]+)$/.exec(dev);
    if (!m)
      throw new KvmbakError(`Cannot read the device number of ${path} from stat output ${JSON.stringify(stat.stdout)}`, LvmErrorCode.Unexpected);
    const major = parseInt(m[1], 16);
    const minor = parseInt(m[2], 16);
    const byDevice = all.find((l) => l.kernelMajor === major && l.kernelMinor === minor);
    if (byDevice) return byDevice;
    throw new KvmbakError(
      `${path} (block device ${major}:${minor}) is not an LVM logical volume: kvmbak backs up disks that are LVs; exclude this disk or move it to LVM`,
      LvmErrorCode.NotAnLv,
    );
  }

  /** VG/LV named by a `/dev/VG/LV` or `/dev/mapper/NAME` path, or null. */
  #nameFromPath(path: string): LvName | null {
    const parts = path.split('/');
    if (parts.length === 4 && parts[0] === '' && parts[1] === 'dev') {
      if (parts[2] === 'mapper') {
        const split = splitDmName(parts[3]);
        if (split && split.layer === '' && !vgNameProblem(split.vg)) return { vg: split.vg, lv: split.lv };
        return null;
      }
      if (!vgNameProblem(parts[2]) && parts[3] !== '') return { vg: parts[2], lv: parts[3] };
    }
    return null;
  }

  /** Size, free space and extent size of a VG. */
  async vgInfo(vg: string, call: LvmCallOptions = {}): Promise<VolumeGroup> {
    validateVgName(vg);
    let vgs: VolumeGroup[];
    try {
      const res = await this.#run('vgs', vgsArgs([vg]), 'report', call);
      vgs = parseVgsReport(res.stdout);
    } catch (e) {
      throw this.#vgNotFound(e, vg);
    }
    const info = vgs.find((v) => v.name === vg);
    if (!info) {
      throw new KvmbakError(`Volume group ${vg} does not exist on this host: check the name (vgs lists the volume groups)`, LvmErrorCode.VgNotFound);
    }
    return info;
  }

  /** LVs, optionally only those carrying `tag` and/or in `vg`. */
  async list(options: LvmListOptions = {}): Promise<LogicalVolume[]> {
    const { tag, vg } = options;
    if (tag !== undefined) validateLvmTag(tag, 'tag');
    if (vg !== undefined) validateVgName(vg);
    let lvs: LogicalVolume[];
    if (tag !== undefined) {
      lvs = await this.#lvs([`@${tag}`], options);
    } else if (vg !== undefined) {
      lvs = await this.#lvsOfVg(vg, options);
    } else {
      lvs = await this.#lvs([], options);
    }
    // `@tag` also matches every LV of a VG carrying the tag: keep only LVs tagged themselves.
    return lvs.filter((l) => (tag === undefined || l.tags.includes(tag)) && (vg === undefined || l.vg === vg));
  }

  /**
   * Creates a snapshot of `origin` carrying the tags `kvmbak` + `tags`:
   * classic (`lvcreate -s -L SIZEb`) for a thick origin, thin (`lvcreate -s -K`,
   * activated despite the activation-skip flag) for a thin origin. Returns
   * the snapshot as lvs reports it. On failure nothing it created is left.
   */
  async createSnapshot(origin: LvRef, options: LvmCreateSnapshotOptions): Promise<LogicalVolume> {
    const source = parseLvRef(origin, 'origin');
    if (typeof options !== 'object' || options === null) throw new ConfigError('createSnapshot needs options with a name', 'name');
    const name = validateLvName(options.name, 'name');
    uniqueTags(options.tags, true);
    if (options.type !== undefined && options.type !== 'auto' && options.type !== 'classic' && options.type !== 'thin') {
      throw new ConfigError(`snapshot type must be 'auto', 'classic' or 'thin', got ${JSON.stringify(options.type)}`, 'type');
    }
    if (options.size !== undefined) positiveBytes(options.size, 'size');
    const vgLvs = await this.#lvsOfVg(source.vg, options);
    const originLv = vgLvs.find((l) => l.lv === source.lv);
    if (!originLv) {
      throw new KvmbakError(`Cannot snapshot ${full(source)}: no such logical volume (lvs ${source.vg} lists its volumes)`, LvmErrorCode.LvNotFound);
    }
    if (vgLvs.some((l) => l.lv === name)) {
      throw new KvmbakError(
        `Cannot create snapshot ${source.vg}/${name}: a logical volume of that name exists (remove it, or run kvmbak recover if a previous run left it)`,
        LvmErrorCode.LvExists,
      );
    }
    const snapName = await this.lvcreateSnapshot(originLv, options);
    return this.checkSnapshot(snapName, options);
  }

  /**
   * Only the `lvcreate` of a snapshot of `originLv` (as lvs reported it
   * shortly before): no report before or after, for the shortest possible
   * window while a VM is held still. Follow it with checkSnapshot() once the
   * VM runs again. The name must be new (lvcreate refuses an existing one).
   */
  async lvcreateSnapshot(originLv: LogicalVolume, options: LvmCreateSnapshotOptions): Promise<LvName> {
    if (typeof options !== 'object' || options === null) throw new ConfigError('createSnapshot needs options with a name', 'name');
    const source: LvName = { vg: originLv.vg, lv: originLv.lv };
    const name = validateLvName(options.name, 'name');
    const tags = uniqueTags(options.tags, true);
    const type = options.type ?? 'auto';
    if (type !== 'auto' && type !== 'classic' && type !== 'thin') {
      throw new ConfigError(`snapshot type must be 'auto', 'classic' or 'thin', got ${JSON.stringify(type)}`, 'type');
    }
    if (options.size !== undefined) positiveBytes(options.size, 'size');
    const kind: SnapshotKind = type === 'auto' ? (originLv.thin ? 'thin' : 'classic') : type;
    if (kind === 'thin' && !originLv.thin) {
      throw new ConfigError(`Cannot make a thin snapshot of ${full(source)}: it is not a thin volume; use a classic snapshot with a size`, 'type');
    }
    let args: string[];
    if (kind === 'classic') {
      if (options.size === undefined) {
        throw new ConfigError(
          `A classic snapshot of ${full(source)} needs a copy-on-write size in bytes (size): the space the origin's writes may take while the snapshot exists`,
          'size',
        );
      }
      args = ['-s', '-L', `${options.size}b`, '-n', name, ...addTagArgs(tags), '--', full(source)];
    } else {
      args = ['-s', '-K', '-n', name, ...addTagArgs(tags), '--', full(source)];
    }
    const snapName: LvName = { vg: source.vg, lv: name };
    try {
      await this.#run('lvcreate', args, 'change', options);
    } catch (e) {
      await this.#removeLeftover(snapName);
      throw e;
    }
    return snapName;
  }

  /**
   * Looks up a snapshot lvcreateSnapshot() just made, activates it when
   * lvcreate left it inactive (thin snapshots skip activation), and checks
   * it is an active snapshot tagged `kvmbak`; otherwise removes it and throws.
   */
  async checkSnapshot(snapName: LvName, call: LvmCallOptions = {}): Promise<LogicalVolume> {
    try {
      let snap = await this.get(snapName, call);
      if (!snap.active) {
        // A thin snapshot lvcreate left inactive (activation skip): activate it explicitly.
        await this.#run('lvchange', ['-ay', '-K', '--', full(snapName)], 'change', call);
        snap = await this.get(snapName, call);
      }
      if (snap.snapshot === null || !snap.active || !snap.tags.includes(KVMBAK_TAG)) {
        throw new KvmbakError(
          `lvcreate made ${snap.fullName} but it is not an active, tagged snapshot (lv_attr ${snap.attr}, tags ${snap.tags.join(',') || 'none'}); it was removed`,
          LvmErrorCode.Unexpected,
        );
      }
      return snap;
    } catch (e) {
      await this.#removeLeftover(snapName);
      throw e;
    }
  }

  async #removeLeftover(name: LvName): Promise<void> {
    try {
      const lv = await this.find(name);
      if (lv && lv.snapshot !== null && lv.tags.includes(KVMBAK_TAG)) {
        await this.#run('lvremove', ['-y', '--', full(name)], 'change');
      }
    } catch {
      // The original error matters more; `kvmbak recover` finds tagged leftovers.
    }
  }

  /** How full a snapshot is, and whether the kernel invalidated it. */
  async snapshotUsage(snap: LvRef, call: LvmCallOptions = {}): Promise<SnapshotUsage> {
    const name = parseLvRef(snap, 'snapshot');
    const lvs = await this.#lvsOfVg(name.vg, call);
    const lv = lvs.find((l) => l.lv === name.lv);
    if (!lv) {
      throw new KvmbakError(`Snapshot ${full(name)} does not exist (was it removed?)`, LvmErrorCode.LvNotFound);
    }
    if (lv.snapshot === null) {
      throw new ConfigError(`${full(name)} is not a snapshot (lv_attr ${lv.attr}): usage applies to snapshots only`, 'snapshot');
    }
    if (lv.snapshot === 'classic') {
      const percent = lv.snapPercent ?? lv.dataPercent;
      return {
        fullName: lv.fullName,
        kind: 'classic',
        percent,
        invalid: lv.invalid,
        full: percent !== null && percent >= 100,
        active: lv.active,
        size: lv.size,
        usedBytes: percent === null ? null : Math.round((lv.size * percent) / 100),
        pool: null,
      };
    }
    const pool = lv.pool === null ? undefined : lvs.find((l) => l.lv === lv.pool);
    return {
      fullName: lv.fullName,
      kind: 'thin',
      percent: lv.dataPercent,
      invalid: lv.invalid,
      full: false,
      active: lv.active,
      size: lv.size,
      usedBytes: null,
      pool: pool ? { name: pool.lv, dataPercent: pool.dataPercent, metadataPercent: pool.metadataPercent } : null,
    };
  }

  /** Grows an LV (e.g. a filling COW snapshot) by `bytes`: `lvextend -L +Nb`. Returns the LV after. */
  async extend(lv: LvRef, bytes: number, call: LvmCallOptions = {}): Promise<LogicalVolume> {
    const name = parseLvRef(lv);
    positiveBytes(bytes, 'bytes');
    await this.#run('lvextend', ['-L', `+${bytes}b`, '--', full(name)], 'change', call);
    return this.get(name, call);
  }

  /**
   * Removes an LV with `lvremove -y`. Without `force`, only a snapshot
   * carrying the `kvmbak` tag is removed; anything else is refused before
   * lvremove runs. Returns false when the LV is missing and `missingOk`.
   */
  async remove(lv: LvRef, options: LvmRemoveOptions = {}): Promise<boolean> {
    const name = parseLvRef(lv);
    const found = await this.find(name, options);
    if (!found) {
      if (options.missingOk) return false;
      throw new KvmbakError(`Cannot remove ${full(name)}: no such logical volume`, LvmErrorCode.LvNotFound);
    }
    if (!options.force) {
      const why =
        found.snapshot === null ? 'it is not a snapshot' : !found.tags.includes(KVMBAK_TAG) ? `it does not carry the "${KVMBAK_TAG}" tag` : undefined;
      if (why) {
        throw new KvmbakError(
          `Refusing to remove ${full(name)}: ${why}, so kvmbak did not make it; remove it yourself or pass { force: true }`,
          LvmErrorCode.Refused,
        );
      }
    }
    await this.#run('lvremove', ['-y', '--', full(name)], 'change', options);
    return true;
  }

  /**
   * Renames an LV inside its VG (`lvrename -- VG OLD NEW`); an open LV keeps
   * working under its new name. lvm2 refuses a name that is taken. Returns
   * the LV under its new name.
   */
  async rename(lv: LvRef, newName: string, call: LvmCallOptions = {}): Promise<LogicalVolume> {
    const name = parseLvRef(lv);
    validateLvName(newName, 'newName');
    await this.#run('lvrename', ['--', name.vg, name.lv, newName], 'change', call);
    return this.get({ vg: name.vg, lv: newName }, call);
  }

  /**
   * Adds and removes tags of an LV in one `lvchange --deltag OLD ... --addtag NEW ... -- VG/LV`
   * (one metadata commit: the LV never carries neither or both sets).
   */
  async changeTags(lv: LvRef, change: { add?: readonly string[]; remove?: readonly string[] }, call: LvmCallOptions = {}): Promise<void> {
    const name = parseLvRef(lv);
    const add = uniqueTags(change.add, false);
    const remove = uniqueTags(change.remove, false).filter((t) => !add.includes(t));
    if (add.length === 0 && remove.length === 0) return;
    await this.#run('lvchange', [...remove.flatMap((t) => ['--deltag', t]), ...addTagArgs(add), '--', full(name)], 'change', call);
  }

  /**
   * `lvchange -an -- VG/LV`: the LV keeps its data and metadata but has no device node or dm table
   * here any more (a kept thin_delta base is only read through its pool's metadata).
   */
  async deactivate(lv: LvRef, call: LvmCallOptions = {}): Promise<void> {
    await this.#run('lvchange', ['-an', '--', full(parseLvRef(lv))], 'change', call);
  }

  /** Removes tags from an LV (`lvchange --deltag TAG ...`); tags it does not carry are ignored by lvm2. */
  async deleteTags(lv: LvRef, tags: readonly string[], call: LvmCallOptions = {}): Promise<void> {
    const name = parseLvRef(lv);
    const list = uniqueTags(tags, false);
    if (list.length === 0) return;
    await this.#run('lvchange', [...list.flatMap((t) => ['--deltag', t]), '--', full(name)], 'change', call);
  }

  /**
   * Thin volumes' pools and device ids in their pool's metadata (`lvs -o thin_id`), in the order
   * asked. Throws KVMBAK_LV_NOT_FOUND for a missing LV, KVMBAK_NOT_THIN for one that is not thin.
   */
  async thinVolumes(refs: readonly LvRef[], call: LvmCallOptions = {}): Promise<ThinVolume[]> {
    const names = refs.map((r) => parseLvRef(r));
    if (names.length === 0) return [];
    let rows: ThinIdRow[];
    try {
      rows = parseThinLvsReport((await this.#run('lvs', thinLvsArgs(names.map(full)), 'report', call)).stdout);
    } catch (e) {
      if (isLvmCommandError(e)) {
        const missing = names.find((n) => e.stderr.includes(`"${full(n)}"`) || e.stderr.includes(`${full(n)}"`));
        if (missing) {
          throw new KvmbakError(
            `Logical volume ${full(missing)} does not exist: check the name (lvs ${missing.vg} lists its volumes)`,
            LvmErrorCode.LvNotFound,
            {
              cause: e,
            },
          );
        }
      }
      throw this.#vgNotFound(e, names[0]!.vg);
    }
    return names.map((n) => {
      const row = rows.find((r) => r.vg === n.vg && r.lv === n.lv);
      if (!row)
        throw new KvmbakError(`Logical volume ${full(n)} does not exist: check the name (lvs ${n.vg} lists its volumes)`, LvmErrorCode.LvNotFound);
      if (row.segtype !== 'thin' || row.pool === null || row.thinId === null) {
        throw new KvmbakError(
          `${full(n)} is not a thin volume (segment type ${row.segtype}): thin ids and thin_delta apply to thin LVs and thin snapshots only`,
          LvmErrorCode.NotThin,
        );
      }
      return { ...row, pool: row.pool, thinId: row.thinId };
    });
  }

  /** One thin volume's pool and device id (see thinVolumes). */
  async thinVolume(ref: LvRef, call: LvmCallOptions = {}): Promise<ThinVolume> {
    return (await this.thinVolumes([ref], call))[0]!;
  }

  /**
   * `dmsetup message VG-POOL-tpool 0 reserve_metadata_snap`: a consistent copy of the pool's
   * metadata for thin_delta. The kernel allows one at a time: a second reserve fails with
   * KVMBAK_METADATA_SNAPSHOT_HELD. Pair every reserve with releaseMetadataSnapshot() (a held
   * snapshot pins metadata blocks of the pool until released).
   */
  async reserveMetadataSnapshot(vg: string, pool: string, call: LvmCallOptions = {}): Promise<void> {
    const dev = this.#pool(vg, pool);
    try {
      await this.#run('dmsetup', ['message', dev.tpool, '0', 'reserve_metadata_snap'], 'change', call);
    } catch (e) {
      if (isLvmCommandError(e) && /Device or resource busy/.test(e.stderr)) {
        throw new KvmbakError(
          `The metadata snapshot of thin pool ${vg}/${pool} is already reserved (by another thin_delta run, or by a run killed while it held it): run kvmbak recover, or when nothing else uses it: dmsetup message ${dev.tpool} 0 release_metadata_snap`,
          LvmErrorCode.MetadataSnapshotHeld,
          { cause: e },
        );
      }
      throw e;
    }
  }

  /** `dmsetup message VG-POOL-tpool 0 release_metadata_snap` (fails when none is held: check thinPoolStatus first). */
  async releaseMetadataSnapshot(vg: string, pool: string, call: LvmCallOptions = {}): Promise<void> {
    const dev = this.#pool(vg, pool);
    await this.#run('dmsetup', ['message', dev.tpool, '0', 'release_metadata_snap'], 'change', call);
  }

  /** `dmsetup status VG-POOL-tpool`, parsed: usage, mode, and the held metadata root (null: none reserved). */
  async thinPoolStatus(vg: string, pool: string, call: LvmCallOptions = {}): Promise<ThinPoolStatus> {
    const dev = this.#pool(vg, pool);
    const res = await this.#run('dmsetup', ['status', dev.tpool], 'report', call);
    return parseThinPoolStatus(res.stdout);
  }

  /**
   * `thin_delta -m --thin1 BASE --thin2 NEW /dev/mapper/VG-POOL_tmeta`: the pool's mapping of two
   * thin devices compared, read from the reserved metadata snapshot (reserve it first). Returns
   * thin_delta's stdout (XML); a failure is an LvmCommandError carrying its stderr.
   */
  async thinDelta(vg: string, pool: string, baseThinId: number, newThinId: number, call: LvmCallOptions = {}): Promise<string> {
    const dev = this.#pool(vg, pool);
    for (const [key, v] of [
      ['baseThinId', baseThinId],
      ['newThinId', newThinId],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new ConfigError(`${key} must be a thin device id (a whole number from 0), got ${String(v)}`, key);
    }
    return (await this.#run('thin_delta', thinDeltaArgv(baseThinId, newThinId, dev.tmeta), 'change', call)).stdout;
  }

  #pool(vg: string, pool: string): ReturnType<typeof thinPoolDevices> {
    const name = parseLvRef({ vg, lv: pool }, 'pool');
    return thinPoolDevices(name.vg, name.lv);
  }

  /**
   * Creates a volume to restore into: linear (`lvcreate -L Nb -y -Wy -Zy`,
   * wiping old signatures and zeroing the start) or thin (`-V Nb --thinpool`).
   * Refuses when the name is taken. Returns the new LV.
   */
  async createVolume(vg: string, name: string, bytes: number, options: LvmCreateVolumeOptions = {}): Promise<LogicalVolume> {
    validateVgName(vg);
    validateLvName(name, 'name');
    positiveBytes(bytes, 'bytes');
    const tags = uniqueTags(options.tags, false);
    if (options.thinPool !== undefined) validateLvName(options.thinPool, 'thinPool');

    const existing = await this.#lvsOfVg(vg, options);
    if (existing.some((l) => l.lv === name)) {
      throw new KvmbakError(
        `Cannot create ${vg}/${name}: a logical volume of that name exists; choose another name or remove it first`,
        LvmErrorCode.LvExists,
      );
    }
    if (options.thinPool !== undefined) {
      const pool = existing.find((l) => l.lv === options.thinPool);
      if (!pool || pool.segtype !== 'thin-pool') {
        throw new ConfigError(`${vg}/${options.thinPool} is not a thin pool: name an existing thin pool of ${vg}`, 'thinPool');
      }
    }
    const args =
      options.thinPool !== undefined
        ? ['-V', `${bytes}b`, '--thinpool', options.thinPool, '-n', name, '-y', '-Wy', ...addTagArgs(tags), '--', vg]
        : ['-L', `${bytes}b`, '-n', name, '-y', '-Wy', '-Zy', ...addTagArgs(tags), '--', vg];
    await this.#run('lvcreate', args, 'change', options);
    return this.get({ vg, lv: name }, options);
  }
}
