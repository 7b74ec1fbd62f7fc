/**
 * A small simulated lvm2 "world" behind a process boundary: the answers of
 * `lvs`, `vgs`, `lvcreate -s`, `lvextend` and `lvremove` for a few VGs and
 * LVs whose `lv_path` is a regular file in a temp folder (a classic snapshot's
 * file is a copy of its origin's file made at lvcreate time, so an archive of
 * the snapshot reads the origin as it was then).
 *
 * Every answer is built from output captured from lvm2 2.03.16 in the lab
 * (test/fixtures/lvm/*.json): report rows are captured rows with names, sizes
 * and usage replaced, laid out exactly as lvm2 prints its JSON report; the
 * messages of lvcreate/lvextend/lvremove and their failures follow the
 * captured runs. Only the fields the caller asks for with `-o` are printed.
 *
 * Self-contained on purpose (node: imports only): the CLI tests load a
 * transpiled copy of this file from the fake executables in test/fixtures/bin,
 * which share one JSON state file (see loadState/saveState).
 */
import { copyFileSync, existsSync, readFileSync, statSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type Row = Record<string, string>;

export interface RunRecord {
  argv: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Captured rows and runs every answer is made from. */
export interface Templates {
  /** An origin LV with a snapshot (`owi-a-s---`), lvs-classic.json. */
  origin: Row;
  /** A plain LV in use (`-wi-ao----`), lvs-all.json. */
  plain: Row;
  /** A valid classic snapshot (`swi-a-s---`), lvs-classic.json. */
  snapshot: Row;
  /** An invalidated classic snapshot (`swi-I-s---`), lvs-invalid.json. */
  invalid: Row;
  /** A VG row, vgs.json. */
  vg: Row;
  /** The exact report options lvm2 was run with for the captures. */
  reportOptions: string[];
  lvcreate: RunRecord;
  lvcreateNoSpace: RunRecord;
  lvextend: RunRecord;
  lvremove: RunRecord;
  lvsMissingLv: RunRecord;
  lvsMissingVg: RunRecord;
  vgsMissingVg: RunRecord;
  /** `stat -L --printf FORMAT -- PATH` of a missing path and of a regular file. */
  statMissing: RunRecord;
  statFile: RunRecord;
}

export interface WorldVg {
  name: string;
  uuid: string;
  size: number;
  extentSize: number;
}

export interface WorldLv {
  vg: string;
  lv: string;
  uuid: string;
  /** Bytes; for a snapshot its copy-on-write area. */
  size: number;
  /** lv_path: a regular file holding the LV's bytes. */
  file: string;
  /** The origin's LV name, for a snapshot. */
  origin: string | null;
  tags: string[];
  /** COW bytes used (snapshots). */
  used: number;
  invalid: boolean;
  minor: number;
}

/** Makes calls fail: after `skip` matching calls, the next `count` fail. */
export interface WorldFailure {
  command: string;
  /** Only calls whose argv contains this argument. */
  arg?: string;
  skip: number;
  count: number;
  exitCode: number;
  stderr: string;
}

export interface WorldState {
  dir: string;
  vgs: WorldVg[];
  lvs: WorldLv[];
  templates: Templates;
  failures: WorldFailure[];
  /** Every call, program first. */
  calls: string[][];
  nextMinor: number;
}

export interface WorldResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Reads the templates from the lvm fixture folder (lab capture preferred over the hand-made stand-in). */
export function loadTemplates(fixturesDir: string): Templates {
  const read = (name: string): string => {
    for (const file of [`${name}.json`, `${name}.handmade.json`]) {
      try {
        return readFileSync(join(fixturesDir, file), 'utf8');
      } catch {
        // try the next
      }
    }
    throw new Error(`lvm fixture ${name} is missing in ${fixturesDir}`);
  };
  const rows = (name: string, key: 'lv' | 'vg'): Row[] =>
    (JSON.parse(read(name)) as { report: Record<string, Row[]>[] }).report.flatMap((s) => s[key] ?? []);
  const run = (name: string): RunRecord => JSON.parse(read(`${name}.run`)) as RunRecord;
  const classic = rows('lvs-classic', 'lv');
  const origin = classic.find((r) => r.lv_role.includes('origin'));
  const snapshot = classic.find((r) => r.lv_role.includes('snapshot'));
  const invalid = rows('lvs-invalid', 'lv').find((r) => r.lv_attr[4] === 'I');
  const plain = rows('lvs-all', 'lv').find((r) => r.lv_attr.startsWith('-wi-ao'));
  const vg = rows('vgs', 'vg')[0];
  const lvsMissingLv = run('lvs-missing-lv');
  if (!origin || !snapshot || !invalid || !plain || !vg) throw new Error(`lvm fixtures in ${fixturesDir} lack a needed row`);
  return {
    origin,
    plain,
    snapshot,
    invalid,
    vg,
    reportOptions: lvsMissingLv.argv.slice(1, lvsMissingLv.argv.indexOf('-o')),
    lvcreate: run('lvcreate-snapshot-classic'),
    lvcreateNoSpace: run('lvcreate-nospace'),
    lvextend: run('lvextend-snapshot'),
    lvremove: run('lvremove-snapshot'),
    lvsMissingLv,
    lvsMissingVg: run('nodm-lvs-missing-vg'),
    vgsMissingVg: run('vgs-missing-vg'),
    statMissing: run('stat-missing'),
    statFile: run('nodm-stat-file'),
  };
}

export interface WorldSpec {
  vgs: { name: string; size: number; extentSize?: number }[];
  /** LVs and their content (the file is written with it), or only a size (a sparse file). */
  lvs: { vg: string; lv: string; content?: Uint8Array; size?: number; tags?: string[] }[];
}

/** A new world in `dir` (LV files are created there). */
export function createWorld(dir: string, templates: Templates, spec: WorldSpec): WorldState {
  const state: WorldState = { dir, vgs: [], lvs: [], templates, failures: [], calls: [], nextMinor: 20 };
  for (const v of spec.vgs) {
    state.vgs.push({ name: v.name, uuid: fakeUuid(`vg-${v.name}`), size: v.size, extentSize: v.extentSize ?? 1024 * 1024 });
  }
  for (const l of spec.lvs) {
    const vg = findVg(state, l.vg);
    if (!vg) throw new Error(`no VG ${l.vg} in the world spec`);
    const size = l.content?.byteLength ?? l.size ?? 0;
    if (size === 0 || size % vg.extentSize !== 0) throw new Error(`${l.vg}/${l.lv}: size must be whole extents`);
    const file = lvFile(state, l.vg, l.lv);
    writeFileSync(file, l.content ?? '');
    if (l.content === undefined) truncateSync(file, size);
    state.lvs.push({
      vg: l.vg,
      lv: l.lv,
      uuid: fakeUuid(`${l.vg}/${l.lv}`),
      size,
      file,
      origin: null,
      tags: l.tags ?? [],
      used: 0,
      invalid: false,
      minor: state.nextMinor++,
    });
  }
  return state;
}

/** Loads a world saved with saveState. */
export function loadState(path: string): WorldState {
  return JSON.parse(readFileSync(path, 'utf8')) as WorldState;
}

/** Saves a world atomically (the fake executables run one after another, but be safe). */
export function saveState(path: string, state: WorldState): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state));
  renameSync(tmp, path);
}

function fakeUuid(seed: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let h = 2166136261;
  let out = '';
  for (let i = 0; i < 32; i++) {
    h = Math.imul(h ^ seed.charCodeAt(i % seed.length) ^ i, 16777619) >>> 0;
    out += alphabet[h % alphabet.length];
  }
  const parts = [6, 4, 4, 4, 4, 4, 6];
  let pos = 0;
  return parts.map((n) => out.slice(pos, (pos += n))).join('-');
}

function lvFile(state: WorldState, vg: string, lv: string): string {
  return join(state.dir, `${vg}--${lv}.lv`);
}

function findVg(state: WorldState, name: string): WorldVg | undefined {
  return state.vgs.find((v) => v.name === name);
}

function findLv(state: WorldState, vg: string, lv: string): WorldLv | undefined {
  return state.lvs.find((l) => l.vg === vg && l.lv === lv);
}

/** The snapshot named `name` (any VG). */
export function snapshotNamed(state: WorldState, name: string): WorldLv {
  const s = state.lvs.find((l) => l.lv === name && l.origin !== null);
  if (!s) throw new Error(`no snapshot ${name} in the fake lvm world`);
  return s;
}

/** Every snapshot that exists now. */
export function snapshots(state: WorldState): WorldLv[] {
  return state.lvs.filter((l) => l.origin !== null);
}

/** Sets a snapshot's COW usage in percent. */
export function setUsage(state: WorldState, name: string, percent: number): void {
  const s = snapshotNamed(state, name);
  s.used = Math.round((s.size * percent) / 100);
}

/** What the kernel does when a snapshot overflows: invalid, 100% used. */
export function invalidate(state: WorldState, name: string): void {
  const s = snapshotNamed(state, name);
  s.invalid = true;
  s.used = s.size;
}

const dmEscape = (s: string): string => s.replace(/-/g, '--');

function percentText(lv: WorldLv): string {
  return lv.invalid ? '100.00' : ((lv.used / lv.size) * 100).toFixed(2);
}

function lvRow(state: WorldState, lv: WorldLv): Row {
  const t = state.templates;
  const hasSnapshots = state.lvs.some((s) => s.vg === lv.vg && s.origin === lv.lv);
  const base = lv.origin !== null ? (lv.invalid ? t.invalid : t.snapshot) : hasSnapshots ? t.origin : t.plain;
  const row: Row = {
    ...base,
    lv_name: lv.lv,
    vg_name: lv.vg,
    lv_uuid: lv.uuid,
    lv_full_name: `${lv.vg}/${lv.lv}`,
    lv_path: lv.file,
    lv_dm_path: `/dev/mapper/${dmEscape(lv.vg)}-${dmEscape(lv.lv)}`,
    lv_size: String(lv.size),
    lv_tags: lv.tags.join(','),
    lv_kernel_minor: String(lv.minor),
  };
  if (lv.origin !== null) {
    const origin = findLv(state, lv.vg, lv.origin);
    row.origin = lv.origin;
    row.origin_uuid = origin?.uuid ?? '';
    row.origin_size = String(origin?.size ?? 0);
    row.snap_percent = percentText(lv);
    row.data_percent = percentText(lv);
  } else if (hasSnapshots) {
    row.origin_size = String(lv.size);
  }
  return row;
}

function vgRow(state: WorldState, vg: WorldVg): Row {
  const lvs = state.lvs.filter((l) => l.vg === vg.name);
  const free = vgFree(state, vg);
  return {
    ...state.templates.vg,
    vg_name: vg.name,
    vg_uuid: vg.uuid,
    vg_size: String(vg.size),
    vg_free: String(free),
    vg_extent_size: String(vg.extentSize),
    vg_extent_count: String(Math.floor(vg.size / vg.extentSize)),
    vg_free_count: String(Math.floor(free / vg.extentSize)),
    lv_count: String(lvs.length),
    snap_count: String(lvs.filter((l) => l.origin !== null).length),
  };
}

function vgFree(state: WorldState, vg: WorldVg): number {
  return vg.size - state.lvs.filter((l) => l.vg === vg.name).reduce((n, l) => n + l.size, 0);
}

/** A report laid out as lvm2 2.03.16 prints `--reportformat json`. */
export function formatReport(key: 'lv' | 'vg', rows: Row[], fields: readonly string[]): string {
  const lines = ['  {', '      "report": [', '          {', `              "${key}": [`];
  rows.forEach((r, i) => {
    const body = fields.map((f) => `${JSON.stringify(f)}:${JSON.stringify(r[f])}`).join(', ');
    lines.push(`                  {${body}}${i < rows.length - 1 ? ',' : ''}`);
  });
  lines.push('              ]', '          }', '      ]', '  }');
  return `${lines.join('\n')}\n`;
}

/** The target a captured run was made for (its last argument). */
const lastArg = (r: RunRecord): string => r.argv[r.argv.length - 1];

const ok = (stdout = '', stderr = ''): WorldResult => ({ exitCode: 0, stdout, stderr });
const fail = (exitCode: number, stderr: string, stdout = ''): WorldResult => ({ exitCode, stdout, stderr });
/** An argv the real lvm2 would read differently than kvmbak means it: fail loudly. */
const unexpected = (argv: string[]): WorldResult =>
  fail(3, `fake lvm2: unexpected arguments ${JSON.stringify(argv)}\n  Run \`${argv[0]} --help' for more information.\n`);

/** lvm2's size display: 16.00 MiB. */
function displaySize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(2)} ${units[u]}`;
}

/** Takes `-o FIELDS` and the report options off a report argv; null when they are not what lvm2 was captured with. */
function reportArgs(state: WorldState, args: string[]): { fields: string[]; targets: string[] } | null {
  const opts = state.templates.reportOptions;
  if (JSON.stringify(args.slice(0, opts.length)) !== JSON.stringify(opts)) return null;
  const rest = args.slice(opts.length);
  if (rest[0] !== '-o' || rest[1] === undefined) return null;
  const fields = rest[1].split(',');
  const after = rest.slice(2);
  if (after.length > 0 && after[0] !== '--') return null;
  return { fields, targets: after.slice(1) };
}

function lvs(state: WorldState, argv: string[]): WorldResult {
  const parsed = reportArgs(state, argv.slice(1));
  if (parsed === null) return unexpected(argv);
  const { fields, targets } = parsed;
  const tpl = state.templates.origin;
  if (fields.some((f) => !(f in tpl))) return unexpected(argv);
  const pick: WorldLv[] = [];
  const add = (l: WorldLv): void => {
    if (!pick.includes(l)) pick.push(l);
  };
  if (targets.length === 0) state.lvs.forEach(add);
  for (const t of targets) {
    if (t.startsWith('@')) {
      state.lvs.filter((l) => l.tags.includes(t.slice(1))).forEach(add);
    } else if (t.includes('/')) {
      const [vg, lv] = t.split('/');
      const found = findLv(state, vg, lv);
      if (!found) {
        const r = state.templates.lvsMissingLv;
        return fail(r.exitCode, r.stderr.replaceAll(lastArg(r), t), formatReport('lv', [], fields));
      }
      add(found);
    } else {
      if (!findVg(state, t)) {
        const r = state.templates.lvsMissingVg;
        return fail(r.exitCode, r.stderr.replaceAll(lastArg(r), t), formatReport('lv', [], fields));
      }
      state.lvs.filter((l) => l.vg === t).forEach(add);
    }
  }
  const rows = pick.map((l) => lvRow(state, l));
  return ok(formatReport('lv', rows, fields));
}

function vgs(state: WorldState, argv: string[]): WorldResult {
  const parsed = reportArgs(state, argv.slice(1));
  if (parsed === null) return unexpected(argv);
  const { fields, targets } = parsed;
  if (fields.some((f) => !(f in state.templates.vg))) return unexpected(argv);
  const names = targets.length === 0 ? state.vgs.map((v) => v.name) : targets;
  const rows: Row[] = [];
  for (const n of names) {
    const vg = findVg(state, n);
    if (!vg) {
      const r = state.templates.vgsMissingVg;
      return fail(r.exitCode, r.stderr.replaceAll(lastArg(r), n), formatReport('vg', [], fields));
    }
    rows.push(vgRow(state, vg));
  }
  return ok(formatReport('vg', rows, fields));
}

/** Parses `NNNb` / `+NNNb`. */
function bytesArg(v: string | undefined, plus: boolean): number | null {
  const m = (plus ? /^\+(\d+)b$/ : /^(\d+)b$/).exec(v ?? '');
  return m ? Number(m[1]) : null;
}

function roundUp(n: number, step: number): number {
  return Math.ceil(n / step) * step;
}

function noSpace(state: WorldState, vg: WorldVg, need: number): WorldResult {
  const free = Math.floor(vgFree(state, vg) / vg.extentSize);
  const r = state.templates.lvcreateNoSpace;
  return fail(r.exitCode, `  Volume group "${vg.name}" has insufficient free space (${free} extents): ${need / vg.extentSize} required.\n`, r.stdout);
}

function lvcreate(state: WorldState, argv: string[]): WorldResult {
  // lvcreate -s -L NNNb -n NAME [--addtag TAG]... -- VG/LV
  const a = argv.slice(1);
  if (a[0] !== '-s' || a[1] !== '-L' || a[3] !== '-n' || a[4] === undefined) return unexpected(argv);
  const size = bytesArg(a[2], false);
  const name = a[4];
  const tags: string[] = [];
  let i = 5;
  while (a[i] === '--addtag' && a[i + 1] !== undefined) {
    tags.push(a[i + 1]);
    i += 2;
  }
  if (size === null || a[i] !== '--' || a.length !== i + 2) return unexpected(argv);
  const [vgName, originName] = a[i + 1].split('/');
  const vg = findVg(state, vgName);
  const origin = vg && findLv(state, vgName, originName);
  if (!vg) return fail(5, `  Volume group "${vgName}" not found\n  Cannot process volume group ${vgName}\n`);
  if (!origin) return fail(5, `  Failed to find logical volume "${vgName}/${originName}"\n`);
  if (findLv(state, vgName, name)) return fail(5, `  Logical Volume "${name}" already exists in volume group "${vgName}"\n`);
  const cow = roundUp(size, vg.extentSize);
  if (cow > vgFree(state, vg)) return noSpace(state, vg, cow);
  const file = lvFile(state, vgName, name);
  copyFileSync(origin.file, file);
  state.lvs.push({
    vg: vgName,
    lv: name,
    uuid: fakeUuid(`${vgName}/${name}/${state.nextMinor}`),
    size: cow,
    file,
    origin: originName,
    tags,
    used: 0,
    invalid: false,
    minor: state.nextMinor++,
  });
  const r = state.templates.lvcreate;
  return ok(r.stdout.replace(/"[^"]*"/, `"${name}"`), r.stderr);
}

function lvextend(state: WorldState, argv: string[]): WorldResult {
  // lvextend -L +NNNb -- VG/LV
  const a = argv.slice(1);
  const add = bytesArg(a[1], true);
  if (a[0] !== '-L' || add === null || a[2] !== '--' || a.length !== 4) return unexpected(argv);
  const [vgName, lvName] = a[3].split('/');
  const vg = findVg(state, vgName);
  const lv = vg && findLv(state, vgName, lvName);
  if (!vg || !lv) return fail(5, `  Failed to find logical volume "${a[3]}"\n`);
  const grow = roundUp(add, vg.extentSize);
  if (grow > vgFree(state, vg)) return noSpace(state, vg, grow);
  const from = lv.size;
  lv.size += grow;
  const ext = (n: number): string => `${displaySize(n)} (${n / vg.extentSize} extents)`;
  return ok(
    `  Size of logical volume ${a[3]} changed from ${ext(from)} to ${ext(lv.size)}.\n` + `  Logical volume ${a[3]} successfully resized.\n`,
    state.templates.lvextend.stderr,
  );
}

function lvremove(state: WorldState, argv: string[]): WorldResult {
  // lvremove -y -- VG/LV
  const a = argv.slice(1);
  if (a[0] !== '-y' || a[1] !== '--' || a.length !== 3) return unexpected(argv);
  const [vgName, lvName] = a[2].split('/');
  const lv = findLv(state, vgName, lvName);
  if (!lv) return fail(5, `  Failed to find logical volume "${a[2]}"\n`);
  state.lvs = state.lvs.filter((l) => l !== lv);
  rmSync(lv.file, { recursive: true, force: true });
  const r = state.templates.lvremove;
  return ok(r.stdout.replace(/"[^"]*"/, `"${lvName}"`), r.stderr);
}

/** `stat -L --printf FORMAT -- PATH` (Lvm.resolve, for paths that are no /dev/VG/LV): a missing path or a regular file. */
function stat(state: WorldState, argv: string[]): WorldResult {
  const { statMissing, statFile } = state.templates;
  const path = argv[argv.length - 1];
  if (JSON.stringify(argv.slice(0, -1)) !== JSON.stringify(statMissing.argv.slice(0, -1))) return unexpected(argv);
  if (existsSync(path) && statSync(path).isFile()) return ok(statFile.stdout, statFile.stderr);
  return fail(statMissing.exitCode, statMissing.stderr.replaceAll(lastArg(statMissing), path));
}

/** Runs one command in the world (argv: program first). */
export function runInWorld(state: WorldState, argv: string[]): WorldResult {
  state.calls.push([...argv]);
  const command = argv[0];
  for (const f of state.failures) {
    if (f.command !== command || (f.arg !== undefined && !argv.includes(f.arg))) continue;
    if (f.skip > 0) {
      f.skip--;
      continue;
    }
    if (f.count > 0) {
      f.count--;
      return fail(f.exitCode, f.stderr);
    }
  }
  switch (command) {
    case 'lvs':
      return lvs(state, argv);
    case 'vgs':
      return vgs(state, argv);
    case 'lvcreate':
      return lvcreate(state, argv);
    case 'lvextend':
      return lvextend(state, argv);
    case 'lvremove':
      return lvremove(state, argv);
    case 'stat':
      return stat(state, argv);
    default:
      return fail(127, `fake lvm2: ${command}: command not simulated\n`);
  }
}

/** Realistic stderr (lvm2 messages) for injected failures, by command. */
export const FAILURE_STDERR: Record<string, string> = {
  lvs: '  Volume group "vg0" not found\n  Cannot process volume group vg0\n',
  vgs: '  Volume group "vg0" not found\n  Cannot process volume group vg0\n',
  lvcreate: '  device-mapper: create ioctl on vg0-snap-cow  failed: Device or resource busy\n  Failed to suspend origin.\n',
  lvextend: '  Insufficient free space: 1 extents needed, but only 0 available\n',
  lvremove: '  Logical volume vg0/snap in use.\n',
};
