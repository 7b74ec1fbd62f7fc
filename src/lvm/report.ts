/**
 * lvm2 machine-readable reports: the exact `lvs`/`vgs` arguments kvmbak uses
 * and the parsers for their JSON output.
 *
 * lvm2 2.03.16 (Debian 12) has no `json_std`: the layout is
 * `{"report":[{"lv":[{...}]}]}` and every value is a string. With
 * `--units b --nosuffix` sizes are plain byte counts; percentages are empty
 * strings when they don't apply; with `--binary` yes/no fields are "1", "0"
 * or "-1" (unknown) whatever the host's lvm.conf says; the `--config` below
 * pins the separator of list fields (tags) to a comma.
 *
 * test/e2e/guest/capture-lvm-fixtures.sh repeats these lists: keep them equal
 * (a unit test compares them).
 */
import { KvmbakError } from '../errors.js';

/** Options shared by every report command. */
export const LVM_REPORT_OPTIONS: readonly string[] = Object.freeze([
  '--reportformat',
  'json',
  '--units',
  'b',
  '--nosuffix',
  '--binary',
  '--config',
  'report/list_item_separator=","',
]);

/** The `lvs -o` field list. */
export const LV_FIELDS: readonly string[] = Object.freeze([
  'lv_name',
  'vg_name',
  'lv_uuid',
  'lv_full_name',
  'lv_path',
  'lv_dm_path',
  'lv_size',
  'lv_attr',
  'lv_tags',
  'lv_active',
  'lv_active_locally',
  'lv_device_open',
  'lv_skip_activation',
  'segtype',
  'lv_layout',
  'lv_role',
  'origin',
  'origin_uuid',
  'origin_size',
  'pool_lv',
  'snap_percent',
  'data_percent',
  'metadata_percent',
  'lv_snapshot_invalid',
  'lv_kernel_major',
  'lv_kernel_minor',
]);

/** The `vgs -o` field list. */
export const VG_FIELDS: readonly string[] = Object.freeze([
  'vg_name',
  'vg_uuid',
  'vg_size',
  'vg_free',
  'vg_extent_size',
  'vg_extent_count',
  'vg_free_count',
  'vg_attr',
  'vg_tags',
  'lv_count',
  'snap_count',
  'pv_count',
]);

/**
 * The `lvs -o` field list of the thin-id report: what a thin_delta needs to know of a thin volume
 * (its pool, and its device id in the pool's metadata).
 */
export const THIN_LV_FIELDS: readonly string[] = Object.freeze(['lv_name', 'vg_name', 'lv_full_name', 'segtype', 'pool_lv', 'thin_id', 'lv_active']);

/** Arguments of `lvs` reporting the thin ids of `targets` (VG/LV names). */
export function thinLvsArgs(targets: readonly string[]): string[] {
  return [...LVM_REPORT_OPTIONS, '-o', THIN_LV_FIELDS.join(','), '--', ...targets];
}

/** One LV of the thin-id report. */
export interface ThinIdRow {
  vg: string;
  lv: string;
  fullName: string;
  segtype: string;
  /** The thin pool of a thin volume, else null. */
  pool: string | null;
  /** The volume's device id in its pool's metadata (thin_delta's --thin1/--thin2); null when not a thin volume. */
  thinId: number | null;
  /** lv_active: "active" when the LV has a device here. */
  active: boolean;
}

/** Parses the stdout of `lvs <thinLvsArgs()>`. */
export function parseThinLvsReport(stdout: string, command = 'lvs'): ThinIdRow[] {
  return reportRows(command, stdout, 'lv', THIN_LV_FIELDS).map((row) => ({
    vg: row.vg_name,
    lv: row.lv_name,
    fullName: row.lv_full_name,
    segtype: row.segtype,
    pool: row.pool_lv === '' ? null : row.pool_lv,
    thinId: row.thin_id === '' ? null : count(command, row, 'thin_id'),
    active: row.lv_active === 'active' || row.lv_active === '1',
  }));
}

/** Arguments of `lvs` reporting `targets` (VG names, VG/LV names or @tags; none = every LV). */
export function lvsArgs(targets: readonly string[] = []): string[] {
  const args = [...LVM_REPORT_OPTIONS, '-o', LV_FIELDS.join(',')];
  return targets.length > 0 ? [...args, '--', ...targets] : args;
}

/** Arguments of `vgs` reporting `targets` (VG names; none = every VG). */
export function vgsArgs(targets: readonly string[] = []): string[] {
  const args = [...LVM_REPORT_OPTIONS, '-o', VG_FIELDS.join(',')];
  return targets.length > 0 ? [...args, '--', ...targets] : args;
}

/** Kinds of snapshot lvm2 makes. */
export type SnapshotKind = 'classic' | 'thin';

/** One logical volume as lvs reports it, typed. Sizes are bytes. */
export interface LogicalVolume {
  vg: string;
  lv: string;
  /** `VG/LV`. */
  fullName: string;
  /** `/dev/VG/LV`; '' for internal LVs such as thin pools. */
  path: string;
  /** `/dev/mapper/...` (dashes escaped as `--`). */
  dmPath: string;
  /** Bytes. For a classic snapshot: its copy-on-write area, not the origin's size. */
  size: number;
  uuid: string;
  /** The 10-character lv_attr string, e.g. `owi-aos---`. */
  attr: string;
  /** Segment type: `linear`, `striped`, `thin`, `thin-pool`, ... */
  segtype: string;
  layout: string[];
  roles: string[];
  /** A thin volume (thin LVs and thin snapshots). */
  thin: boolean;
  /** The thin pool of a thin volume, else null. */
  pool: string | null;
  /** The origin LV of a snapshot, else null. */
  origin: string | null;
  /** Size of the origin (for classic snapshots and origins), else null. */
  originSize: number | null;
  /** 'classic' (COW) or 'thin' for a snapshot, null otherwise. */
  snapshot: SnapshotKind | null;
  tags: string[];
  /** The LV has a device-mapper device on this host. */
  active: boolean;
  /** The device is open (in use), or null when unknown. */
  open: boolean | null;
  /** A snapshot the kernel invalidated (lv_attr state `I`/`S`): its content is garbage. */
  invalid: boolean;
  /** The LV carries the activation-skip flag (thin snapshots by default). */
  skipActivation: boolean;
  /** Copy-on-write usage of a snapshot, 0–100, or null (not a snapshot, or inactive). */
  snapPercent: number | null;
  /** Data usage (snapshots, thin volumes, thin pools), 0–100, or null. */
  dataPercent: number | null;
  /** Metadata usage of a thin pool, 0–100, or null. */
  metadataPercent: number | null;
  /** Kernel device number when active, else null. */
  kernelMajor: number | null;
  kernelMinor: number | null;
}

/** One volume group as vgs reports it. Sizes are bytes. */
export interface VolumeGroup {
  name: string;
  uuid: string;
  size: number;
  free: number;
  extentSize: number;
  extentCount: number;
  freeExtents: number;
  attr: string;
  tags: string[];
  lvCount: number;
  snapCount: number;
  pvCount: number;
}

/** lvm2 printed something kvmbak cannot read. */
export class LvmReportError extends KvmbakError {
  readonly command: string;
  readonly stdout: string;
  constructor(command: string, problem: string, stdout: string) {
    super(
      `Could not read the output of ${command}: ${problem}; run \`${command} --reportformat json\` by hand to see what lvm2 prints`,
      'KVMBAK_LVM_REPORT',
    );
    this.command = command;
    this.stdout = stdout;
  }
}
Object.defineProperty(LvmReportError.prototype, 'name', {
  value: 'LvmReportError',
  enumerable: false,
  configurable: true,
  writable: true,
});

type Row = Record<string, string>;

function parseJson(command: string, stdout: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    // Tolerate stray text before the report (lvm2 writes messages to stderr, but be safe).
    const start = stdout.indexOf('{');
    if (start > 0) {
      try {
        return JSON.parse(stdout.slice(start));
      } catch {
        /* fall through */
      }
    }
    throw new LvmReportError(command, 'it is not JSON', stdout);
  }
}

/** The rows of `key` ('lv' or 'vg') from every report section. */
function reportRows(command: string, stdout: string, key: 'lv' | 'vg', fields: readonly string[]): Row[] {
  const doc = parseJson(command, stdout);
  const sections = (doc as { report?: unknown } | null)?.report;
  if (!Array.isArray(sections)) throw new LvmReportError(command, 'no "report" array', stdout);
  const rows: Row[] = [];
  for (const section of sections) {
    const list = (section as Record<string, unknown> | null)?.[key];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw new LvmReportError(command, `"${key}" is not an array`, stdout);
    for (const item of list) {
      if (typeof item !== 'object' || item === null) throw new LvmReportError(command, `a "${key}" entry is not an object`, stdout);
      const row = item as Record<string, unknown>;
      for (const field of fields) {
        if (typeof row[field] !== 'string') {
          throw new LvmReportError(command, `field ${field} is missing or not a string (lvm2 version mismatch?)`, stdout);
        }
      }
      rows.push(row as Row);
    }
  }
  return rows;
}

function bytes(command: string, row: Row, field: string): number {
  const v = row[field];
  const m = /^(\d+)(?:\.0+)?$/.exec(v);
  const n = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(n)) throw new LvmReportError(command, `field ${field} is ${JSON.stringify(v)}, not a byte count`, '');
  return n;
}

function optionalBytes(command: string, row: Row, field: string): number | null {
  return row[field] === '' ? null : bytes(command, row, field);
}

function count(command: string, row: Row, field: string): number {
  return bytes(command, row, field);
}

function percent(command: string, row: Row, field: string): number | null {
  const v = row[field];
  if (v === '') return null;
  if (!/^\d+(?:\.\d+)?$/.test(v)) throw new LvmReportError(command, `field ${field} is ${JSON.stringify(v)}, not a percentage`, '');
  return Number(v);
}

/** A `--binary` field: "1" true, "0" false, "-1" or "" unknown (null). */
function binary(row: Row, field: string): boolean | null {
  const v = row[field];
  if (v === '1') return true;
  if (v === '0') return false;
  return null;
}

function deviceNumber(command: string, row: Row, field: string): number | null {
  const v = row[field];
  if (v === '' || v === '-1') return null;
  if (!/^\d+$/.test(v)) throw new LvmReportError(command, `field ${field} is ${JSON.stringify(v)}, not a device number`, '');
  return Number(v);
}

function list(v: string): string[] {
  return v === '' ? [] : v.split(',').filter((s) => s.length > 0);
}

/** lv_attr 5th character values meaning "a device-mapper device exists". */
const ACTIVE_STATES = new Set(['a', 's', 'I', 'S', 'm', 'M', 'd', 'i', 'c', 'C']);

function toLogicalVolume(command: string, row: Row): LogicalVolume {
  const attr = row.lv_attr;
  if (attr.length < 6) throw new LvmReportError(command, `lv_attr ${JSON.stringify(attr)} is too short`, '');
  const roles = list(row.lv_role);
  const segtype = row.segtype;
  const thin = segtype === 'thin';
  const isSnapshot = roles.includes('snapshot') || attr[0] === 's' || attr[0] === 'S';
  const state = attr[4];
  const activeLocally = binary(row, 'lv_active_locally');
  const snapshotInvalid = binary(row, 'lv_snapshot_invalid');
  return {
    vg: row.vg_name,
    lv: row.lv_name,
    fullName: row.lv_full_name,
    path: row.lv_path,
    dmPath: row.lv_dm_path,
    size: bytes(command, row, 'lv_size'),
    uuid: row.lv_uuid,
    attr,
    segtype,
    layout: list(row.lv_layout),
    roles,
    thin,
    pool: row.pool_lv === '' ? null : row.pool_lv,
    origin: row.origin === '' ? null : row.origin,
    originSize: optionalBytes(command, row, 'origin_size'),
    snapshot: isSnapshot ? (thin ? 'thin' : 'classic') : null,
    tags: list(row.lv_tags),
    active: activeLocally === true || ACTIVE_STATES.has(state),
    open: binary(row, 'lv_device_open'),
    invalid: isSnapshot && (state === 'I' || state === 'S' || snapshotInvalid === true),
    skipActivation: binary(row, 'lv_skip_activation') === true || attr[9] === 'k',
    snapPercent: percent(command, row, 'snap_percent'),
    dataPercent: percent(command, row, 'data_percent'),
    metadataPercent: percent(command, row, 'metadata_percent'),
    kernelMajor: deviceNumber(command, row, 'lv_kernel_major'),
    kernelMinor: deviceNumber(command, row, 'lv_kernel_minor'),
  };
}

/** Parses the stdout of `lvs <lvsArgs()>`. */
export function parseLvsReport(stdout: string, command = 'lvs'): LogicalVolume[] {
  return reportRows(command, stdout, 'lv', LV_FIELDS).map((row) => toLogicalVolume(command, row));
}

/** Parses the stdout of `vgs <vgsArgs()>`. */
export function parseVgsReport(stdout: string, command = 'vgs'): VolumeGroup[] {
  return reportRows(command, stdout, 'vg', VG_FIELDS).map((row) => ({
    name: row.vg_name,
    uuid: row.vg_uuid,
    size: bytes(command, row, 'vg_size'),
    free: bytes(command, row, 'vg_free'),
    extentSize: bytes(command, row, 'vg_extent_size'),
    extentCount: count(command, row, 'vg_extent_count'),
    freeExtents: count(command, row, 'vg_free_count'),
    attr: row.vg_attr,
    tags: list(row.vg_tags),
    lvCount: count(command, row, 'lv_count'),
    snapCount: count(command, row, 'snap_count'),
    pvCount: count(command, row, 'pv_count'),
  }));
}
