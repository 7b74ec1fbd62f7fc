/**
 * Planning a backup: every precondition is checked here, before anything
 * touches the VM (DESIGN.md, "Reliability rules").
 */
import { access, constants, statfs } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CHUNK_SIZE } from '../chunks/index.js';
import { ConfigError, KvmbakError, isLibvirtError, isKvmbakError } from '../errors.js';
import type { Domain, DomainDisk, Hypervisor } from '../libvirt/index.js';
import { KVMBAK_BASE_TAG, type LogicalVolume, type Lvm } from '../lvm/index.js';
import type { Manifest, ManifestDisk, ManifestDomainState, StorageFormat } from '../manifest/index.js';
import { assertDest, listSets, readSetManifest } from '../store/index.js';
import { formatBytes } from '../util/size.js';
import { DEFAULT_FORMAT } from './options.js';
import { describeShortfall, parseSnapshotSize, snapshotSizeFor } from './sizing.js';
import { type BackupMode, type BackupPlan, type PlannedDisk, type SkippedDisk, BACKUP_MODES } from './types.js';

/** A precondition of a backup does not hold; nothing was touched. */
export class BackupPlanError extends KvmbakError {
  readonly domain: string;
  constructor(domain: string, message: string, code = 'KVMBAK_BACKUP_PLAN', options: { cause?: unknown } = {}) {
    super(message, code, options);
    this.domain = domain;
  }
}
Object.defineProperty(BackupPlanError.prototype, 'name', { value: 'BackupPlanError', enumerable: false });

export interface PlanInput {
  domainName: string;
  /** Without a destination (kvmbak inspect) the destination checks are left out. */
  dest?: string;
  mode?: BackupMode;
  snapshotSize?: string | number;
  exclude?: readonly string[];
  /** How disks are stored (default chunks). */
  format?: StorageFormat;
  /** Format chunks: read every disk whole, even a thin disk with a base. */
  full?: boolean;
  /** The tag suffix (set id) used to name this run's snapshots. */
  runId: string;
}

/** The newest complete set of a domain in `dest` that stores any disk as chunks, or null. */
export async function previousChunkedSet(dest: string, domain: string): Promise<{ path: string; manifest: Manifest } | null> {
  const sets = (await listSets(dest, domain).catch(() => [])).filter((s) => s.complete);
  sets.sort((a, b) => b.time.getTime() - a.time.getTime() || b.seq - a.seq);
  for (const s of sets) {
    const manifest = await readSetManifest(s.path).catch(() => null);
    if (manifest?.disks.some((d) => d.chunks !== undefined)) return { path: s.path, manifest };
  }
  return null;
}

/**
 * A thin disk with an earlier chunked set: thin delta when the previous run's base is there and is
 * exactly what that set's list describes — a thin snapshot tagged as a base, of this LV, in its
 * pool, with the device id the set recorded — and the disk has the list's size. Otherwise a full
 * read, with the reason in `readNote` (the run warns it). Read-only.
 */
export async function planThinDelta(lvm: Lvm, p: PlannedDisk, before: ManifestDisk, setPath: string): Promise<void> {
  const chunks = before.chunks!;
  const why = (reason: string): void => {
    p.readNote = `${p.target}: reading the whole disk: ${reason}`;
  };
  if (chunks.base === undefined) return why(`the previous set kept no base snapshot of ${p.vg}/${p.lv}`);
  const name = { vg: p.vg, lv: chunks.base.lv };
  let base: LogicalVolume | null;
  try {
    base = await lvm.find(name);
  } catch (e) {
    return why(`cannot look up the base ${name.vg}/${name.lv} (${(e as Error).message})`);
  }
  if (base === null) return why(`the base ${name.vg}/${name.lv} of the previous set is gone`);
  if (!base.tags.includes(KVMBAK_BASE_TAG) || !base.thin) {
    return why(`${base.fullName} is not a kvmbak base (a thin snapshot tagged ${KVMBAK_BASE_TAG})`);
  }
  if (base.snapshot === null || base.origin !== p.lv || base.pool !== p.thinPool) {
    const gone = base.origin === null ? ' (its origin is gone)' : '';
    return why(`the base ${base.fullName} is not a snapshot of ${p.vg}/${p.lv} in pool ${p.thinPool ?? '-'}${gone}`);
  }
  if (chunks.rawBytes !== p.lvSize || chunks.chunkSize !== CHUNK_SIZE) {
    return why(`the disk is ${p.lvSize} bytes now, the previous set's list ${chunks.rawBytes}`);
  }
  let thinId: number;
  try {
    thinId = (await lvm.thinVolume(name)).thinId;
  } catch (e) {
    return why(`cannot read the thin id of ${base.fullName} (${(e as Error).message})`);
  }
  if (thinId !== chunks.base.thinId) return why(`${base.fullName} has thin id ${thinId}, the previous set recorded ${chunks.base.thinId}`);
  p.readPath = 'thin-delta';
  p.delta = { base: { ...name, thinId }, previousList: join(setPath, chunks.file), previousListSha256: chunks.listSha256 };
}

async function assertWritable(dest: string): Promise<void> {
  try {
    await access(dest, constants.W_OK);
  } catch (e) {
    throw new BackupPlanError('', `backup destination ${dest} is not writable; fix its permissions or run as root`, 'KVMBAK_DEST_NOT_WRITABLE', {
      cause: e,
    });
  }
}

/** The destination exists, is a folder and is writable; returns its absolute path. */
export async function assertDestUsable(dest: string): Promise<string> {
  const root = await assertDest(dest);
  await assertWritable(root);
  return root;
}

/** Looks a domain up by name or UUID; a clear error naming the domains there are when there is none. */
async function lookupDomainFor(hv: Hypervisor, name: string): Promise<Domain> {
  try {
    return await hv.lookupDomain(name);
  } catch (e) {
    if (isLibvirtError(e, 'VIR_ERR_NO_DOMAIN')) {
      const known = (await hv.listDomains().catch(() => [])).map((d) => d.name);
      throw new BackupPlanError(
        name,
        `no domain named ${name} on ${hv.uri}${known.length > 0 ? ` (domains: ${known.join(', ')})` : ''}; check the name or \`uri\``,
        'KVMBAK_NO_DOMAIN',
        { cause: e },
      );
    }
    throw e;
  }
}

/** The domain's own name (the caller may have given its UUID): what its lock and folder are named after. */
export async function domainNameOf(hv: Hypervisor, nameOrUuid: string): Promise<string> {
  const d = await lookupDomainFor(hv, nameOrUuid);
  try {
    return d.name;
  } finally {
    d.free();
  }
}

/** States in which a domain's disks can be frozen by save/pause/quiesce. */
const LIVE_STATES = new Set(['running', 'blocked', 'paused']);

/**
 * Chooses the mode: the requested one when it fits the domain's state,
 * else a clear error; by default `save` for a live domain and `offline` for
 * a shut-off one.
 */
export function chooseMode(domain: string, state: string, requested: BackupMode | undefined): BackupMode {
  if (requested !== undefined && !BACKUP_MODES.includes(requested)) {
    throw new ConfigError(`mode ${String(requested)} is not a mode; use one of ${BACKUP_MODES.join(', ')}`, 'mode');
  }
  if (state === 'shutoff') {
    if (requested === undefined || requested === 'offline') return 'offline';
    throw new BackupPlanError(
      domain,
      `domain ${domain} is shut off, so \`mode\` ${requested} cannot apply; use \`mode\` offline (or leave \`mode\` out)`,
      'KVMBAK_BACKUP_STATE',
    );
  }
  if (LIVE_STATES.has(state)) {
    if (requested === 'offline') {
      throw new BackupPlanError(
        domain,
        `domain ${domain} is ${state}; \`mode\` offline needs it shut off: shut it down first or use \`mode\` save, pause or quiesce`,
        'KVMBAK_BACKUP_STATE',
      );
    }
    return requested ?? 'save';
  }
  throw new BackupPlanError(
    domain,
    `domain ${domain} is ${state}; kvmbak backs up domains that are running, paused or shut off — wait until it settles`,
    'KVMBAK_BACKUP_STATE',
  );
}

/** A snapshot LV name for `lv`, unique to the run and within lvm2's 127 characters. */
export function snapshotNameFor(lv: string, runId: string): string {
  const suffix = `-kvmbak-${runId.toLowerCase()}`;
  return `${lv.slice(0, 127 - suffix.length)}${suffix}`;
}

/** The LVM tag naming one run (besides `kvmbak`). */
export function runTagFor(domainUuid: string, runId: string): string {
  return `kvmbak-run-${runId.toLowerCase()}-${domainUuid.slice(0, 8)}`;
}

interface Classified {
  backup: DomainDisk[];
  skipped: SkippedDisk[];
}

/** Sorts the domain's disks into those to back up and those skipped; throws for a disk kvmbak cannot take. */
export function classifyDisks(domain: string, disks: readonly DomainDisk[], exclude: readonly string[]): Classified {
  const targets = disks.map((d) => d.target);
  for (const t of exclude) {
    if (!targets.includes(t)) {
      throw new ConfigError(`\`exclude\` ${t}: domain ${domain} has no disk ${t} (its disks: ${targets.join(', ') || 'none'})`, 'exclude');
    }
  }
  const backup: DomainDisk[] = [];
  const skipped: SkippedDisk[] = [];
  for (const d of disks) {
    if (exclude.includes(d.target)) {
      skipped.push({ target: d.target, device: d.device, reason: 'excluded with --exclude' });
      continue;
    }
    if (d.device === 'cdrom' || d.device === 'floppy') {
      skipped.push({ target: d.target, device: d.device, reason: `${d.device}: removable media are not backed up` });
      continue;
    }
    if (d.type === 'block' || d.type === 'volume') {
      if (d.source === undefined) {
        throw new BackupPlanError(
          domain,
          `disk ${d.target} of domain ${domain} has no source; give it one or leave it out with \`exclude\` ${d.target}`,
          'KVMBAK_BACKUP_DISK',
        );
      }
      backup.push(d);
      continue;
    }
    const where = d.source !== undefined ? ` (${d.source})` : '';
    throw new BackupPlanError(
      domain,
      `disk ${d.target} of domain ${domain} is a ${d.type}${d.format ? ` ${d.format}` : ''} disk${where}, not an LVM ` +
        `logical volume; kvmbak backs up LVM disks only — leave it out with \`exclude\` ${d.target}`,
      'KVMBAK_BACKUP_DISK',
    );
  }
  if (backup.length === 0) {
    throw new BackupPlanError(
      domain,
      `domain ${domain} has no LVM disk to back up${skipped.length > 0 ? ` (skipped: ${skipped.map((s) => s.target).join(', ')})` : ''}`,
      'KVMBAK_BACKUP_DISK',
    );
  }
  return { backup, skipped };
}

/** Where a disk's data lives as a block device path. */
async function diskDevicePath(hv: Hypervisor, domain: string, d: DomainDisk): Promise<string> {
  if (d.type === 'block') return d.source!;
  // type='volume': ask libvirt for the volume's path in its pool.
  try {
    const vol = await hv.lookupVolume(d.pool!, d.volume!);
    return vol.path;
  } catch (e) {
    throw new BackupPlanError(
      domain,
      `disk ${d.target} of domain ${domain} is volume ${d.volume} of pool ${d.pool}, which libvirt cannot find ` +
        `(${(e as Error).message}); start the pool or leave the disk out with \`exclude\` ${d.target}`,
      'KVMBAK_BACKUP_DISK',
      { cause: e },
    );
  }
}

/** The libvirt storage pool holding the first of `paths` some pool covers, or null. */
async function poolOf(hv: Hypervisor, paths: string[]): Promise<string | null> {
  for (const p of new Set(paths)) {
    try {
      return (await hv.lookupVolumeByPath(p)).pool;
    } catch (e) {
      if (!isLibvirtError(e)) throw e;
    }
  }
  return null;
}

/** A thin pool fuller than this (data or metadata, percent) is refused at planning. */
export const THIN_POOL_PLAN_LIMIT_PERCENT = 95;

/**
 * Room in the thin pool of every thin disk: a thin snapshot takes no space
 * when made, but every block the guest writes while the snapshot exists is
 * allocated anew in the pool, and a full pool fails the backup (see
 * watch.ts). A pool already nearly full is refused before anything is touched.
 */
export async function checkThinPoolRoom(lvm: Lvm, domain: string, disks: readonly PlannedDisk[]): Promise<void> {
  const pools = new Map<string, { vg: string; lv: string }>();
  for (const d of disks) if (d.thin && d.thinPool !== null) pools.set(`${d.vg}/${d.thinPool}`, { vg: d.vg, lv: d.thinPool });
  for (const [full, ref] of pools) {
    const pool = await lvm.get(ref);
    const data = pool.dataPercent ?? 0;
    const meta = pool.metadataPercent ?? 0;
    if (data >= THIN_POOL_PLAN_LIMIT_PERCENT || meta >= THIN_POOL_PLAN_LIMIT_PERCENT) {
      const what = data >= meta ? `its data is ${data.toFixed(1)}% full` : `its metadata is ${meta.toFixed(1)}% full`;
      throw new BackupPlanError(
        domain,
        `thin pool ${full} has too little room for the thin snapshots of ${domain} (${what}; kvmbak needs it below ` +
          `${THIN_POOL_PLAN_LIMIT_PERCENT}%): extend it (lvextend ${full}) or free space in it first`,
        'KVMBAK_THIN_POOL_FULL',
      );
    }
  }
}

export interface PlannedBackup {
  plan: BackupPlan;
  domain: Domain;
  /** The inactive, secure domain XML for domain.xml. */
  domainXml: string;
  runTag: string;
  origins: Map<string, LogicalVolume>;
  /** Format chunks: the newest earlier set of this domain with chunked disks, if any. */
  previous: { path: string; manifest: Manifest } | null;
}

/**
 * Looks everything up and checks every precondition; touches nothing. The
 * caller owns the returned Domain handle (free it).
 */
export async function planBackup(hv: Hypervisor, lvm: Lvm, input: PlanInput): Promise<PlannedBackup> {
  const dest = input.dest === undefined ? null : await assertDestUsable(input.dest);
  const sizeReq = parseSnapshotSize(input.snapshotSize);
  const domain = await lookupDomainFor(hv, input.domainName);
  try {
    const info = await domain.info();
    const mode = chooseMode(domain.name, info.state, input.mode);
    const domainXml = await domain.xml({ inactive: true, secure: true });
    const disks = await domain.disks();
    const { backup, skipped } = classifyDisks(domain.name, disks, input.exclude ?? []);
    const runTag = runTagFor(domain.uuid, input.runId);
    const planned: PlannedDisk[] = [];
    const origins = new Map<string, LogicalVolume>();
    const seen = new Map<string, string>();
    for (const d of backup) {
      const path = await diskDevicePath(hv, domain.name, d);
      let lv: LogicalVolume;
      try {
        lv = await lvm.resolve(path);
      } catch (e) {
        if (!isKvmbakError(e) || e.code === 'KVMBAK_LVM_COMMAND' || e.code === 'ABORT_ERR') throw e;
        throw new BackupPlanError(
          domain.name,
          `disk ${d.target} of domain ${domain.name} (${path}) is not an LVM logical volume (${e.message}); ` +
            `kvmbak backs up LVM disks only — leave it out with \`exclude\` ${d.target}`,
          'KVMBAK_BACKUP_DISK',
          { cause: e },
        );
      }
      if (lv.snapshot !== null) {
        throw new BackupPlanError(
          domain.name,
          `disk ${d.target} of domain ${domain.name} is an LVM snapshot (${lv.fullName}); back up its origin or leave it out with \`exclude\` ${d.target}`,
          'KVMBAK_BACKUP_DISK',
        );
      }
      const other = seen.get(lv.fullName);
      if (other !== undefined) {
        throw new BackupPlanError(
          domain.name,
          `disks ${other} and ${d.target} of domain ${domain.name} are the same LV ${lv.fullName}; leave one out with \`exclude\``,
          'KVMBAK_BACKUP_DISK',
        );
      }
      seen.set(lv.fullName, d.target);
      if (!lv.active) {
        throw new BackupPlanError(
          domain.name,
          `LV ${lv.fullName} (disk ${d.target}) is not active; activate it (lvchange -ay ${lv.fullName}) and try again`,
          'KVMBAK_BACKUP_DISK',
        );
      }
      const block = await domain.blockInfo(d.target);
      // No libvirt pool covers this VG: the pool is information, not a precondition.
      const pool = d.type === 'volume' ? d.pool! : await poolOf(hv, [lv.path, path]);
      origins.set(d.target, lv);
      planned.push({
        target: d.target,
        source: path,
        vg: lv.vg,
        lv: lv.lv,
        lvPath: lv.path,
        lvSize: lv.size,
        lvUuid: lv.uuid,
        thin: lv.thin,
        thinPool: lv.pool,
        pool,
        capacity: block.capacity,
        allocation: block.allocation,
        physical: block.physical,
        snapshotName: snapshotNameFor(lv.lv, input.runId),
        snapshotSize: null,
        readPath: 'image',
      });
    }
    // Room in every VG for the classic snapshots.
    const vgNames = [...new Set(planned.map((p) => p.vg))];
    const volumeGroups: BackupPlan['volumeGroups'] = [];
    for (const vg of vgNames) {
      const info = await lvm.vgInfo(vg);
      let needed = 0;
      for (const p of planned.filter((x) => x.vg === vg)) {
        if (p.thin) continue;
        p.snapshotSize = snapshotSizeFor(p.lvSize, info.extentSize, sizeReq);
        needed += p.snapshotSize;
      }
      volumeGroups.push({ vg, free: info.free, needed, extentSize: info.extentSize });
      if (needed > info.free) {
        throw new BackupPlanError(domain.name, describeShortfall(vg, needed, info.free), 'KVMBAK_VG_FULL');
      }
    }
    await checkThinPoolRoom(lvm, domain.name, planned);
    // The destination: writable, with room for the memory state.
    let destFree: number | null = null;
    if (dest !== null) {
      const fsInfo = await statfs(dest);
      destFree = Number(fsInfo.bavail) * Number(fsInfo.bsize);
    }
    const memoryBytes = mode === 'save' ? info.memKiB * 1024 : 0;
    if (mode === 'save' && destFree !== null && memoryBytes > destFree) {
      throw new BackupPlanError(
        domain.name,
        `${dest} has ${formatBytes(destFree)} free but the memory state of ${domain.name} needs up to ${formatBytes(memoryBytes)}; ` +
          `free space there or use \`mode\` pause`,
        'KVMBAK_DEST_FULL',
      );
    }
    const format = input.format ?? DEFAULT_FORMAT;
    const previous = format === 'chunks' && dest !== null ? await previousChunkedSet(dest, domain.name) : null;
    if (format === 'chunks') {
      for (const p of planned) {
        const before = previous?.manifest.disks.find((d) => d.target === p.target && d.chunks !== undefined);
        p.readPath = before === undefined ? 'first' : 'full';
        if (before !== undefined && previous !== null && p.thin && input.full !== true) await planThinDelta(lvm, p, before, previous.path);
      }
    }
    const plan: BackupPlan = {
      domain: domain.name,
      uuid: domain.uuid,
      uri: hv.uri,
      host: hostname(),
      libvirtVersion: await hv.libVersion(),
      stateBefore: info.state as ManifestDomainState,
      mode,
      format,
      memoryBytes,
      dest,
      disks: planned,
      skipped,
      volumeGroups,
      destFree,
    };
    return { plan, domain, domainXml, runTag, origins, previous };
  } catch (e) {
    domain.free();
    throw e;
  }
}
