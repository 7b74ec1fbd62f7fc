/**
 * Restore test helpers.
 *
 * FakeLvm: a CommandRunner at the process boundary that plays lvm2 with
 * state. Its report rows are rows captured from lvm2 2.03.16 in the lab
 * (test/fixtures/lvm: lvs-all, lvs-thin, vgs), renamed and resized; its
 * error replies are captured runs (missing VG, lvcreate output). An LV's
 * lv_path is a regular file in a temp folder standing in for the device
 * node (the archive functions write regular files too).
 *
 * buildSet: a real backup set of the test driver's web-01 (packImage
 * images, the driver's own inactive XML and save image, commitSet).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandResult, CommandRunOptions, CommandRunner } from '../../../src/exec/index.js';
import { type Hypervisor, openHypervisor, packImage, readChunkList, writeChunkList } from '../../../src/index.js';
import { type Manifest, type ManifestDisk, manifestFormatFor, readManifest } from '../../../src/manifest/index.js';
import {
  createSet,
  commitSet,
  expectedFiles,
  formatChecksums,
  openChunkStore,
  setFilePath,
  storeChunked,
  sha256File,
  writeSetFile,
  type BackupSet,
} from '../../../src/store/index.js';
import { fixture, record } from '../lvm/helpers.js';

type Row = Record<string, string>;

const LIBVIRT_FIXTURES = fileURLToPath(new URL('../../fixtures/libvirt/', import.meta.url));

function firstRows(doc: string, key: 'lv' | 'vg'): Row[] {
  return (JSON.parse(doc) as { report: Record<string, Row[]>[] }).report.flatMap((s) => s[key] ?? []);
}

/** Captured rows used as templates. */
const TEMPLATES = (() => {
  const all = firstRows(fixture('lvs-all'), 'lv');
  const thin = firstRows(fixture('lvs-thin'), 'lv');
  return {
    linear: all.find((r) => r.lv_attr === '-wi-a-----')!,
    thin: thin.find((r) => r.segtype === 'thin' && r.origin === '')!,
    pool: thin.find((r) => r.segtype === 'thin-pool')!,
    vg: firstRows(fixture('vgs'), 'vg')[0]!,
  };
})();

const lvUuid = (): string => {
  const a = randomBytes(24)
    .toString('base64')
    .replace(/[^A-Za-z0-9]/g, 'x');
  return [a.slice(0, 6), a.slice(6, 10), a.slice(10, 14), a.slice(14, 18), a.slice(18, 22), a.slice(22, 26), a.slice(26, 32)].join('-');
};

function report(key: 'lv' | 'vg', rows: Row[]): string {
  // lvm2's own layout, indentation included
  const body = rows.map((r) => `                  ${JSON.stringify(r)}`).join(',\n');
  return `  {\n      "report": [\n          {\n              "${key}": [\n${body}${rows.length ? '\n' : ''}              ]\n          }\n      ]\n  }\n`;
}

export interface FakeLvOptions {
  vg: string;
  lv: string;
  size: number;
  kind?: 'linear' | 'thin' | 'pool';
  /** lv_device_open; a function is asked at every report (e.g. "while that domain runs"). */
  open?: boolean | (() => Promise<boolean>);
  active?: boolean;
  pool?: string;
  /** File content (default: zeros of `size`). */
  content?: Uint8Array;
  /** A device (e.g. a loop device) to stand for the LV instead of a file of its own. */
  path?: string;
}

/** A stateful lvm2 stand-in; see the module comment. */
export class FakeLvm implements CommandRunner {
  readonly calls: string[][] = [];
  readonly rows: Row[] = [];
  readonly vgs: Row[] = [];
  /** Make the next lvcreate fail like lvm2 does when the VG is full. */
  failNextCreate = false;
  /** Make the next lvrename of this VG/LV fail. */
  failRename: string | null = null;
  readonly openIf = new Map<Row, () => Promise<boolean>>();
  /** When set, lvcreate gives the new LV this device (e.g. a loop device) instead of a file. */
  deviceOnCreate: ((vg: string, lv: string, size: number) => Promise<string>) | null = null;

  constructor(readonly dir: string) {}

  addVg(name: string, free = 4 * 1024 ** 3): void {
    const extent = Number(TEMPLATES.vg.vg_extent_size);
    this.vgs.push({
      ...TEMPLATES.vg,
      vg_name: name,
      vg_free: String(free),
      vg_free_count: String(Math.floor(free / extent)),
    });
  }

  pathOf(vg: string, lv: string): string {
    return join(this.dir, `${vg}--${lv}`);
  }

  async addLv(o: FakeLvOptions): Promise<Row> {
    const t = o.kind === 'thin' ? TEMPLATES.thin : o.kind === 'pool' ? TEMPLATES.pool : TEMPLATES.linear;
    const dm = (s: string): string => s.replace(/-/g, '--');
    const row: Row = {
      ...t,
      lv_name: o.lv,
      vg_name: o.vg,
      lv_uuid: lvUuid(),
      lv_full_name: `${o.vg}/${o.lv}`,
      lv_path: o.kind === 'pool' ? '' : (o.path ?? this.pathOf(o.vg, o.lv)),
      lv_dm_path: `/dev/mapper/${dm(o.vg)}-${dm(o.lv)}`,
      lv_size: String(o.size),
      lv_tags: '',
      lv_device_open: o.open === true ? '1' : '0',
      ...(o.kind === 'thin' ? { pool_lv: o.pool ?? '' } : {}),
    };
    if (o.active === false) {
      row.lv_attr = `${row.lv_attr.slice(0, 4)}-${row.lv_attr.slice(5)}`;
      row.lv_active = '';
      row.lv_active_locally = '0';
      row.lv_kernel_major = '-1';
      row.lv_kernel_minor = '-1';
    }
    this.rows.push(row);
    if (typeof o.open === 'function') this.openIf.set(row, o.open);
    if (o.kind !== 'pool' && o.path === undefined) {
      if (o.content) await writeFile(row.lv_path, o.content);
      else {
        await writeFile(row.lv_path, '');
        await truncate(row.lv_path, o.size);
      }
    }
    return row;
  }

  async run(file: string, args: readonly string[], _options?: CommandRunOptions): Promise<CommandResult> {
    this.calls.push([file, ...args]);
    const dd = args.indexOf('--');
    const targets = dd < 0 ? [] : args.slice(dd + 1);
    const ok = (stdout: string): CommandResult => ({ stdout, stderr: '', exitCode: 0, signal: null });
    const missingVg = (vg: string, kind: 'lvs' | 'vgs'): CommandResult => {
      const rec = record(kind === 'lvs' ? 'nodm-lvs-missing-vg' : 'vgs-missing-vg');
      const was = rec.argv[rec.argv.length - 1]!;
      return { stdout: rec.stdout, stderr: rec.stderr.split(was).join(vg), exitCode: rec.exitCode, signal: null };
    };
    switch (file) {
      case 'lvs': {
        for (const [row, isOpen] of this.openIf) row.lv_device_open = (await isOpen()) ? '1' : '0';
        const out: Row[] = [];
        for (const t of targets.length ? targets : [null]) {
          if (t === null) out.push(...this.rows);
          else if (t.includes('/')) out.push(...this.rows.filter((r) => r.lv_full_name === t));
          else if (!this.vgs.some((v) => v.vg_name === t)) return missingVg(t, 'lvs');
          else out.push(...this.rows.filter((r) => r.vg_name === t));
        }
        return ok(report('lv', out));
      }
      case 'vgs': {
        for (const t of targets) if (!this.vgs.some((v) => v.vg_name === t)) return missingVg(t, 'vgs');
        return ok(
          report(
            'vg',
            this.vgs.filter((v) => targets.length === 0 || targets.includes(v.vg_name)),
          ),
        );
      }
      case 'lvcreate': {
        const vg = targets[0]!;
        const name = args[args.indexOf('-n') + 1]!;
        const thin = args.includes('--thinpool');
        const size = Number(args[args.indexOf(thin ? '-V' : '-L') + 1]!.replace(/b$/, ''));
        const vgRow = this.vgs.find((v) => v.vg_name === vg)!;
        const extent = Number(vgRow.vg_extent_size);
        const rounded = Math.ceil(size / extent) * extent;
        if (this.failNextCreate || (!thin && rounded > Number(vgRow.vg_free))) {
          this.failNextCreate = false;
          const rec = record('lvcreate-nospace');
          return { stdout: rec.stdout, stderr: rec.stderr.replace('vgkvmbak', vg), exitCode: rec.exitCode, signal: null };
        }
        if (!thin) vgRow.vg_free = String(Number(vgRow.vg_free) - rounded);
        const device = this.deviceOnCreate ? await this.deviceOnCreate(vg, name, rounded) : undefined;
        const row = await this.addLv({
          vg,
          lv: name,
          size: rounded,
          ...(device !== undefined ? { path: device } : {}),
          kind: thin ? 'thin' : 'linear',
          ...(thin ? { pool: args[args.indexOf('--thinpool') + 1]! } : {}),
        });
        row.lv_tags = args.flatMap((a, i) => (a === '--addtag' ? [args[i + 1]!] : [])).join(',');
        const rec = record(thin ? 'lvcreate-volume-thin' : 'lvcreate-volume');
        const was = rec.argv[rec.argv.indexOf('-n') + 1]!;
        return ok(rec.stdout.split(was).join(name));
      }
      case 'lvrename': {
        // lvrename -- VG OLD NEW: lvm2 refuses a taken name; the device node follows the name
        const [vg, from, to] = targets as [string, string, string];
        if (this.failRename === `${vg}/${from}`) {
          this.failRename = null;
          return { stdout: '', stderr: `  Failed to rename ${from}: device busy\n`, exitCode: 5, signal: null };
        }
        if (this.rows.some((r) => r.lv_full_name === `${vg}/${to}`)) {
          return { stdout: '', stderr: `  Logical Volume "${to}" already exists in volume group "${vg}"\n`, exitCode: 5, signal: null };
        }
        const row = this.rows.find((r) => r.lv_full_name === `${vg}/${from}`)!;
        const path = this.pathOf(vg, to);
        await rename(row.lv_path, path);
        const dm = (x: string): string => x.replace(/-/g, '--');
        Object.assign(row, { lv_name: to, lv_full_name: `${vg}/${to}`, lv_path: path, lv_dm_path: `/dev/mapper/${dm(vg)}-${dm(to)}` });
        return ok(`  Renamed "${from}" to "${to}" in volume group "${vg}"\n`);
      }
      case 'lvchange': {
        const row = this.rows.find((r) => r.lv_full_name === targets[0])!;
        const drop = args.flatMap((a, i) => (a === '--deltag' ? [args[i + 1]!] : []));
        row.lv_tags = row.lv_tags
          .split(',')
          .filter((t) => t !== '' && !drop.includes(t))
          .join(',');
        return ok(`  Logical volume ${targets[0]} changed.\n`);
      }
      case 'lvremove': {
        const full = targets[0]!;
        const i = this.rows.findIndex((r) => r.lv_full_name === full);
        const row = this.rows.splice(i, 1)[0]!;
        if (row.lv_path.startsWith(`${this.dir}/`)) await unlink(row.lv_path).catch(() => undefined);
        const rec = record('lvremove-snapshot');
        return ok(rec.stdout.split(rec.argv[rec.argv.length - 1]!.split('/')[1]!).join(row.lv_name));
      }
      default:
        throw new Error(`FakeLvm: unexpected command ${file} ${args.join(' ')}`);
    }
  }

  /** Commands that changed something, as 'lvcreate VG/NAME', 'lvremove VG/NAME', 'lvrename VG/OLD NEW', 'lvchange VG/NAME'. */
  changes(): string[] {
    return this.calls
      .filter((c) => ['lvcreate', 'lvremove', 'lvrename', 'lvchange'].includes(c[0]!))
      .map((c) => {
        const t = c.slice(c.indexOf('--') + 1);
        if (c[0] === 'lvcreate') return `lvcreate ${t[0]}/${c[c.indexOf('-n') + 1]}`;
        if (c[0] === 'lvrename') return `lvrename ${t[0]}/${t[1]} ${t[2]}`;
        return `${c[0]} ${t[0]}`;
      });
  }

  /** The LV row of VG/LV (tags, size, ...), or undefined. */
  row(vg: string, lv: string): Row | undefined {
    return this.rows.find((r) => r.lv_full_name === `${vg}/${lv}`);
  }
}

export interface TestEnv {
  dir: string;
  dest: string;
  hv: Hypervisor;
  lvm: FakeLvm;
  cleanup(): Promise<void>;
}

/** A temp folder, a private test-driver connection (node.xml copy), a FakeLvm with VG vg0. */
export async function testEnv(): Promise<TestEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'kvmbak-restore-'));
  await mkdir(join(dir, 'dest'));
  await mkdir(join(dir, 'lv'));
  await copyFile(join(LIBVIRT_FIXTURES, 'node.xml'), join(dir, 'node.xml'));
  const hv = await openHypervisor(`test://${join(dir, 'node.xml')}`);
  const lvm = new FakeLvm(join(dir, 'lv'));
  lvm.addVg('vg0');
  return {
    dir,
    dest: join(dir, 'dest'),
    hv,
    lvm,
    async cleanup() {
      if (!hv.closed) hv.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Raw disk content: text, zeros and random bytes over several 64 KiB chunks. */
export function diskData(size: number, seed: string): Buffer {
  const b = Buffer.alloc(size);
  b.fill(`${seed} kvmbak restore test\n`, 0, Math.floor(size / 3));
  randomBytes(Math.floor(size / 3)).copy(b, Math.floor((2 * size) / 3));
  return b;
}

export interface BuiltSet {
  set: BackupSet;
  manifest: Manifest;
  raw: Record<string, Buffer>;
}

const CHUNK = 64 * 1024;

/**
 * Backs up the test driver's web-01 by hand into DEST: its inactive secure
 * XML, (mode save) its save image made by the driver itself (web-01 is then
 * shut off), and two disk images of made-up content for vda (vg0/web-root)
 * and vdb (vg0/web-data-01); vdc (a qcow2 file) excluded, sda (cdrom) skipped.
 *
 * `format: 'chunks'` (kvmbak/2): the disks and the save image go into DEST/.chunks with
 * storeChunked (4 MiB chunks) and the set keeps their chunk lists; memory.state is not kept.
 * `raw` gives the disks' content (default: diskData of the sizes). `wholeDiskSha256`: the chunked
 * disks as kvmbak wrote them before a disk's identity was its chunk list: the list (`# raw-sha256`)
 * and the manifest (chunks.rawSha256) carry the whole disk's sha256.
 */
export async function buildSet(
  env: TestEnv,
  options: {
    mode?: 'save' | 'pause';
    sizes?: [number, number];
    format?: 'image' | 'chunks';
    raw?: Record<'vda' | 'vdb', Buffer>;
    /** vda was a thin volume of vg0/pool0. */
    thin?: boolean;
    wholeDiskSha256?: boolean;
  } = {},
): Promise<BuiltSet> {
  const mode = options.mode ?? 'save';
  const chunked = options.format === 'chunks';
  const [sizeA, sizeB] = options.sizes ?? [5 * CHUNK + 1000, 3 * CHUNK];
  const set = await createSet(env.dest, 'web-01', { now: new Date(Date.now() - 3600_000) });
  const dom = await env.hv.lookupDomain('web-01');
  try {
    const xml = await writeSetFile(set, 'domain.xml', await dom.xml({ inactive: true, secure: true }));
    const raw: Record<string, Buffer> = options.raw ?? { vda: diskData(sizeA, 'vda'), vdb: diskData(sizeB, 'vdb') };
    const store = chunked ? await openChunkStore(env.dest) : undefined;
    const disks: ManifestDisk[] = [];
    await mkdir(join(set.path, 'disks'), { mode: 0o700 });
    for (const [target, lv] of [
      ['vda', 'web-root'],
      ['vdb', 'web-data-01'],
    ] as const) {
      const src = join(env.dir, `${target}.raw`);
      await writeFile(src, raw[target]!);
      const common = {
        target,
        source: `/dev/vg0/${lv}`,
        vg: 'vg0',
        lv,
        pool: 'vg0',
        capacity: raw[target]!.length,
        allocation: 0,
        physical: raw[target]!.length,
        lvSize: raw[target]!.length,
        lvUuid: lvUuid(),
        thin: options.thin === true && target === 'vda',
        thinPool: options.thin === true && target === 'vda' ? 'pool0' : null,
      };
      const snapshot = common.thin
        ? { name: `${lv}-kvmbak-x`, size: null, peakPercent: null }
        : { name: `${lv}-kvmbak-x`, size: 8 * CHUNK, peakPercent: 1 };
      if (store) {
        const { chunks } = await storeChunked(store, src, set, `disks/${target}.chunks`);
        if (options.wholeDiskSha256 === true) {
          const path = setFilePath(set, chunks.file);
          const rawSha256 = createHash('sha256').update(raw[target]!).digest('hex');
          await writeChunkList(path, { ...(await readChunkList(path)), rawSha256 });
          const listed = await sha256File(path);
          Object.assign(chunks, { rawSha256, listBytes: listed.bytes, listSha256: listed.sha256 });
        }
        disks.push({ ...common, chunks, snapshot });
        continue;
      }
      const p = await packImage(src, setFilePath(set, `disks/${target}.img.gz`), { chunkSize: CHUNK, threads: 2 });
      disks.push({
        ...common,
        image: {
          file: `disks/${target}.img.gz`,
          rawBytes: p.bytes,
          rawSha256: p.sha256,
          storedBytes: p.storedBytes,
          fileSha256: p.fileSha256,
          chunkSize: p.chunkSize,
          members: p.members,
          zeroChunks: p.zeroChunks,
        },
        snapshot,
      });
    }
    let memory: Manifest['memory'] = null;
    if (mode === 'save') {
      const file = setFilePath(set, 'memory.state');
      await dom.save(file);
      const h = await sha256File(file);
      if (store) {
        const { chunks } = await storeChunked(store, file, set, 'memory.chunks');
        await unlink(file);
        memory = { bytes: h.bytes, sha256: h.sha256, chunks: { ...chunks, file: 'memory.chunks' } };
      } else {
        memory = { file: 'memory.state', bytes: h.bytes, sha256: h.sha256 };
      }
    }
    await store?.close();
    const manifest: Manifest = {
      format: 'kvmbak/1',
      toolVersion: '0.1.0',
      createdAt: set.time.toISOString(),
      host: 'testhost',
      libvirtVersion: await env.hv.libVersion(),
      uri: env.hv.uri,
      domain: { name: 'web-01', uuid: dom.uuid, stateBefore: 'running' },
      mode,
      downtimeMs: mode === 'save' ? 1234 : null,
      timings: { planMs: 1, windowMs: 2, archiveMs: 3, totalMs: 6 },
      memory,
      domainXml: { file: 'domain.xml', sha256: xml.sha256 },
      disks,
      skipped: [
        { target: 'vdc', device: 'disk', reason: 'excluded with --exclude' },
        { target: 'sda', device: 'cdrom', reason: 'cdrom: removable media are not backed up' },
      ],
    };
    manifest.format = manifestFormatFor(manifest);
    await commitSet(set, manifest);
    return { set, manifest, raw };
  } finally {
    dom.free();
  }
}

/** Removes web-01 from the test driver (shut off first): the host lost the VM. */
export async function dropWeb01(hv: Hypervisor): Promise<void> {
  const dom = await hv.lookupDomain('web-01');
  try {
    if ((await dom.info()).state !== 'shutoff') await dom.destroy();
    await dom.undefine();
  } finally {
    dom.free();
  }
}

/** After editing a set's files and manifest by hand: SHA256SUMS written again from the manifest (as a forger would). */
export async function resign(setPath: string): Promise<void> {
  const m = await readManifest(setPath);
  await writeFile(join(setPath, 'SHA256SUMS'), formatChecksums(expectedFiles(m).map((f) => ({ file: f.file, sha256: f.sha256 }))));
}

export const readLv = (lvm: FakeLvm, vg: string, lv: string): Promise<Buffer> => readFile(lvm.pathOf(vg, lv));

export { randomUUID };
