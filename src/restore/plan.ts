/**
 * Planning a restore: every precondition is checked here, before anything
 * is touched (existing LVs and domains, sizes, free space, the set's files).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { isKvmbakError } from '../errors.js';
import { type DomainSummary, type Hypervisor, parseDomainDisks } from '../libvirt/index.js';
import { LVM_MAX_NAME_LENGTH, type LogicalVolume, type Lvm } from '../lvm/index.js';
import { DOMAIN_XML_FILE, type ManifestDisk, diskRaw, isChunkedMemory, memorySetFile, type Manifest } from '../manifest/index.js';
import { errnoCode, isNotRegularFileError, openRegularFileIn } from '../util/fs.js';
import { formatBytes } from '../util/size.js';
import { RestoreError } from './errors.js';
import { type DiskTarget, resolveDiskTargets } from './targets.js';
import type { RestoreContext, RestoreDiskPlan, RestoreOptions, RestorePlan, RestoreReplacement } from './types.js';
import { domainXmlIdentity } from './xml.js';

/** The plan plus what execution needs but callers do not. */
export interface PlannedRestore {
  plan: RestorePlan;
  /** domain.xml as stored in the set (checked against the manifest). */
  domainXml: string;
  manifest: Manifest;
}

function refused(set: string, domain: string, message: string, cause?: unknown): RestoreError {
  return new RestoreError(message, 'KVMBAK_RESTORE_REFUSED', { set, domain }, cause === undefined ? {} : { cause });
}

const sameUuid = (a: string, b: string): boolean => a.replace(/-/g, '').toLowerCase() === b.replace(/-/g, '').toLowerCase();

/** The largest domain.xml read (libvirt's own are a few KiB). */
const MAX_DOMAIN_XML_BYTES = 16 * 1024 * 1024;

/**
 * The set's files the restore reads: regular files (never a link followed),
 * with the sizes the manifest records; domain.xml's sha256. Cheap: the full
 * check of every file against SHA256SUMS comes after planning (proveSet).
 */
async function checkSetFiles(setPath: string, m: Manifest, useMemory: boolean): Promise<string> {
  const domain = m.domain.name;
  const damaged = (what: string): RestoreError =>
    refused(setPath, domain, `backup set ${setPath} is damaged: ${what}; run kvmbak verify ${setPath}, or restore another set`);
  const open = async (rel: string) => {
    try {
      return await openRegularFileIn(setPath, rel);
    } catch (e) {
      if (isNotRegularFileError(e)) throw damaged(`${rel} is ${e.kind}, not a regular file`);
      if (errnoCode(e) === 'ENOENT') throw damaged(`${rel} is missing`);
      throw e;
    }
  };
  const sized = async (rel: string, bytes: number): Promise<void> => {
    const h = await open(rel);
    const { size } = await h.stat().finally(() => h.close());
    if (size !== bytes) throw damaged(`${rel} has ${size} bytes, the manifest says ${bytes} (truncated or changed)`);
  };
  for (const d of m.disks) {
    const f = diskFile(d);
    await sized(f.file, f.bytes);
  }
  if (useMemory && m.memory) await sized(memorySetFile(m.memory), isChunkedMemory(m.memory) ? m.memory.chunks.listBytes : m.memory.bytes);
  const h = await open(DOMAIN_XML_FILE);
  let raw: Buffer;
  try {
    if ((await h.stat()).size > MAX_DOMAIN_XML_BYTES) throw damaged(`${DOMAIN_XML_FILE} is larger than ${formatBytes(MAX_DOMAIN_XML_BYTES)}`);
    raw = await h.readFile();
  } finally {
    await h.close();
  }
  if (createHash('sha256').update(raw).digest('hex') !== m.domainXml.sha256) {
    throw damaged(`${DOMAIN_XML_FILE}: sha256 differs from the manifest`);
  }
  return raw.toString('utf8');
}

/** The file in the set that holds a disk: its image, or its chunk list (kvmbak/2), with its size. */
export function diskFile(d: ManifestDisk): { format: 'image' | 'chunks'; file: string; bytes: number } {
  if (d.chunks !== undefined) return { format: 'chunks', file: d.chunks.file, bytes: d.chunks.listBytes };
  if (d.image !== undefined) return { format: 'image', file: d.image.file, bytes: d.image.storedBytes };
  throw new Error(`disk ${d.target} of the manifest has neither an image nor a chunk list`); // the validator refuses such a manifest
}

/** The LVM tag of the new LVs a restore writes beside existing ones, while they have their temporary names. */
export const RESTORE_LV_TAG = 'kvmbak-restore';

/** `LV-kvmbak-new-SUFFIX` (the LV name shortened when needed to stay within lvm2's limit). */
function tempLvName(lv: string, what: 'new' | 'old', suffix: string): string {
  const tail = `-kvmbak-${what}-${suffix}`;
  return `${lv.slice(0, LVM_MAX_NAME_LENGTH - tail.length)}${tail}`;
}

/** Block-device paths the domain's disks use (live and persistent definitions). */
async function domainDiskPaths(hv: Hypervisor, name: string): Promise<Map<string, string>> {
  const out = new Map<string, string>(); // path → target
  let dom;
  try {
    dom = await hv.lookupDomain(name);
  } catch {
    return out; // gone meanwhile
  }
  try {
    const xmls = [await dom.xml()];
    const state = (await dom.info()).state;
    if (state !== 'shutoff') xmls.push(await dom.xml({ inactive: true }));
    for (const xml of xmls) {
      for (const d of parseDomainDisks(xml)) {
        if (d.type === 'block' && d.source !== undefined) out.set(d.source, d.target);
        if (d.type === 'volume' && d.pool !== undefined && d.volume !== undefined) {
          const vol = await hv.lookupVolume(d.pool, d.volume).catch(() => null);
          if (vol !== null) out.set(vol.path, d.target);
        }
      }
    }
  } finally {
    dom.free();
  }
  return out;
}

function lvPaths(vg: string, lv: string, found: LogicalVolume | null): string[] {
  const paths = [`/dev/${vg}/${lv}`, `/dev/mapper/${vg.replace(/-/g, '--')}-${lv.replace(/-/g, '--')}`];
  if (found) paths.push(found.path, found.dmPath);
  return [...new Set(paths.filter((p) => p !== ''))];
}

/**
 * The checks of the options that need only the manifest (no libvirt, no
 * lvm): `map` targets, `vg`. ConfigError. Returns the target LV of every disk.
 */
export function checkOptionsAgainstSet(m: Manifest, options: RestoreOptions): DiskTarget[] {
  return resolveDiskTargets(m.disks, m.skipped, options);
}

/**
 * Room for every new LV: linear ones in their VG (extent-rounded), thin ones
 * in their pool (fully written: the image's zeros are written to a device
 * too). When new LVs beside existing ones do not fit, the refusal says that
 * `inPlace` writes over the existing LVs instead.
 */
async function checkRoom(lvm: Lvm, setPath: string, domain: string, disks: readonly RestoreDiskPlan[]): Promise<void> {
  const fresh = disks.filter((p) => p.action !== 'overwrite');
  const byVg = new Map<string, RestoreDiskPlan[]>();
  for (const p of fresh.filter((x) => x.create?.kind === 'linear')) byVg.set(p.vg, [...(byVg.get(p.vg) ?? []), p]);
  const noRoom = (where: string, free: number, need: number, ps: RestoreDiskPlan[]): RestoreError => {
    const swapping = ps.some((p) => p.action === 'swap');
    return refused(
      setPath,
      domain,
      `${where} has ${formatBytes(free)} free but the new LVs for ${ps.map((p) => p.target).join(', ')} need ${formatBytes(need)}` +
        (swapping
          ? ' (restore writes beside the current LVs and swaps them out only once the new ones are written and checked); ' +
            'free space there, restore elsewhere with `vg` or `map`, or use `inPlace` to overwrite the current LVs directly ' +
            '(the domain is then stopped first, and a failure part-way loses their old data)'
          : '; free space there, or restore into another VG with `vg` or `map`'),
    );
  };
  for (const [vg, ps] of byVg) {
    const info = await lvm.vgInfo(vg);
    const need = ps.reduce((sum, p) => sum + Math.ceil(p.size / info.extentSize) * info.extentSize, 0);
    if (need > info.free) throw noRoom(`volume group ${vg}`, info.free, need, ps);
  }
  const byPool = new Map<string, RestoreDiskPlan[]>();
  for (const p of fresh.filter((x) => x.create?.kind === 'thin')) {
    const key = `${p.vg}/${(p.create as { pool: string }).pool}`;
    byPool.set(key, [...(byPool.get(key) ?? []), p]);
  }
  for (const [key, ps] of byPool) {
    const [vg, pool] = key.split('/') as [string, string];
    const lv = await lvm.get({ vg, lv: pool });
    const free = Math.floor(lv.size * (1 - (lv.dataPercent ?? 0) / 100));
    const need = ps.reduce((sum, p) => sum + p.rawBytes, 0);
    if (need > free) throw noRoom(`thin pool ${key}`, free, need, ps);
  }
}

/**
 * Plans the restore of `manifest` (read from `setPath`): checks everything,
 * touches nothing. Throws RestoreError KVMBAK_RESTORE_REFUSED when a
 * precondition does not hold, ConfigError for options that cannot apply.
 */
export async function planRestore(
  hv: Hypervisor,
  lvm: Lvm,
  setPath: string,
  manifest: Manifest,
  options: RestoreOptions,
  ctx: RestoreContext = {},
): Promise<PlannedRestore> {
  const m = manifest;
  const hasMemory = m.memory !== null;
  const copy = options.name !== undefined;
  // A copy cannot resume the original's RAM: libvirt ties a save image to the UUID and MAC addresses.
  const useMemory = hasMemory && !options.noMemory && !copy;
  const inPlace = options.inPlace === true;
  const suffix = ctx.lvSuffix ?? ((): string => randomBytes(3).toString('hex'));
  const targets: DiskTarget[] = checkOptionsAgainstSet(m, options);
  const domainXml = await checkSetFiles(setPath, m, useMemory);
  const identity = domainXmlIdentity(domainXml);
  const xmlDisks = parseDomainDisks(domainXml);
  for (const d of m.disks) {
    if (!xmlDisks.some((x) => x.target === d.target)) {
      throw refused(
        setPath,
        m.domain.name,
        `backup set ${setPath} is inconsistent: the manifest has disk ${d.target} but ${DOMAIN_XML_FILE} does not; restore another set`,
      );
    }
  }
  const name = options.name ?? identity.name;
  const uuid = copy ? (ctx.newUuid ?? randomUUID)() : (identity.uuid ?? m.domain.uuid);
  const warnings: string[] = [];
  const steps: string[] = [];

  // Domains with the same name or UUID.
  const domains: DomainSummary[] = await hv.listDomains();
  const replace: RestoreReplacement[] = [];
  for (const d of domains) {
    const byName = d.name === name;
    const byUuid = sameUuid(d.uuid, uuid);
    if (!byName && !byUuid) continue;
    replace.push({
      name: d.name,
      uuid: d.uuid,
      state: d.state,
      destroy: d.state !== 'shutoff',
      conflict: byName && byUuid ? 'name+uuid' : byName ? 'name' : 'uuid',
    });
  }
  if (replace.length > 0 && !options.force) {
    const what = replace
      .map(
        (r) => `${r.conflict === 'uuid' ? `domain ${r.name} has the UUID ${r.uuid} of` : `a domain named ${r.name} exists for`} ${name} (${r.state})`,
      )
      .join('; ');
    throw refused(
      setPath,
      name,
      `${what}; restore does not replace a domain unless told: use \`force\` to replace it` +
        `${replace.some((r) => r.destroy) ? ' (it is stopped, unsaved state is lost)' : ''}, or use \`name\` to restore a copy beside it`,
    );
  }

  // Who else uses block devices: no other domain may have a target LV as a disk.
  const others = new Map<string, string>(); // path → "domain disk"
  for (const d of domains) {
    if (replace.some((r) => r.name === d.name)) continue;
    for (const [path, target] of await domainDiskPaths(hv, d.name)) others.set(path, `disk ${target} of domain ${d.name}`);
  }

  const disks: RestoreDiskPlan[] = [];
  for (const t of targets) {
    const d = m.disks.find((x) => x.target === t.target)!;
    const want = `${t.vg}/${t.lv}`;
    const raw = diskRaw(d);
    const stored = diskFile(d);
    const required = Math.max(d.lvSize, raw.rawBytes);
    let found: LogicalVolume | null;
    try {
      found = await lvm.find({ vg: t.vg, lv: t.lv });
    } catch (e) {
      if (isKvmbakError(e) && (e.code === 'KVMBAK_VG_NOT_FOUND' || e.code === 'KVMBAK_INVALID_ARGUMENT')) {
        throw refused(
          setPath,
          name,
          `disk ${t.target} → ${want}: ${e.message}${t.from === 'original' ? '; restore into another VG with `vg` or `map`' : ''}`,
          e,
        );
      }
      throw e;
    }
    const user = lvPaths(t.vg, t.lv, found)
      .map((p) => others.get(p))
      .find((u) => u !== undefined);
    if (user !== undefined) {
      throw refused(
        setPath,
        name,
        `disk ${t.target} → ${want}: that LV is ${user}; restore into another LV with \`vg\` or \`map\`${copy ? ' (a copy needs its own LVs)' : ''}`,
      );
    }
    const moved = t.vg !== d.vg || t.lv !== d.lv;
    const toBlock = xmlDisks.find((x) => x.target === t.target)!.type !== 'block';
    const plan: RestoreDiskPlan = {
      target: t.target,
      format: stored.format,
      image: join(setPath, stored.file),
      rawBytes: raw.rawBytes,
      rawSha256: raw.rawSha256,
      original: { vg: d.vg, lv: d.lv, source: d.source, thin: d.thin, thinPool: d.thinPool, lvSize: d.lvSize },
      vg: t.vg,
      lv: t.lv,
      path: found ? found.path : `/dev/${t.vg}/${t.lv}`,
      action: !found ? 'create' : inPlace ? 'overwrite' : 'swap',
      size: found && inPlace ? found.size : required,
      create: null,
      skipZeros: false,
      temp: null,
      moved,
      toBlock,
    };
    if (found) {
      // in place, the LV itself must take the data; a swap only renames it
      const why =
        found.snapshot !== null
          ? `it is a ${found.snapshot} snapshot`
          : found.path === ''
            ? `it is an internal LV (${found.segtype})`
            : inPlace && found.size < required
              ? `it holds ${found.size} bytes (${formatBytes(found.size)}) but the disk needs ${required} (${formatBytes(required)}); ` +
                `grow it (lvextend -L ${required}b ${want})`
              : inPlace && !found.active
                ? `it is not active; activate it (lvchange -ay ${want})`
                : found.thin && found.pool === null
                  ? 'it is a thin volume whose pool lvs does not name'
                  : null;
      if (why !== null)
        throw refused(setPath, name, `disk ${t.target} → ${want}: cannot restore into it: ${why}, or restore elsewhere with \`vg\` or \`map\``);
      if (!options.force) {
        throw refused(
          setPath,
          name,
          `disk ${t.target} → ${want}: the LV exists and restore does not replace data unless told: use \`force\` to replace it, ` +
            'or restore into a new LV with `vg` or `map`',
        );
      }
      if (found.open === true && !replace.some((r) => r.destroy)) {
        throw refused(
          setPath,
          name,
          `disk ${t.target} → ${want}: the LV is in use (open by some process); stop what uses it, or restore elsewhere with \`vg\` or \`map\``,
        );
      }
      if (inPlace) {
        if (found.size > required)
          warnings.push(
            `${want} is larger than the disk was (${formatBytes(found.size)} > ${formatBytes(required)}); the bytes past ${formatBytes(required)} are left as they are`,
          );
      } else {
        const sfx = suffix();
        plan.temp = { newLv: tempLvName(t.lv, 'new', sfx), oldLv: tempLvName(t.lv, 'old', sfx) };
        plan.create = found.thin ? { kind: 'thin', pool: found.pool! } : { kind: 'linear' };
        if (found.size !== required) {
          warnings.push(`${want} holds ${formatBytes(found.size)}; it is replaced by an LV of the disk's recorded size, ${formatBytes(required)}`);
        }
      }
    } else if (d.thin && options.thinPool !== undefined) {
      let pool: LogicalVolume | null;
      try {
        pool = await lvm.find({ vg: t.vg, lv: options.thinPool });
      } catch (e) {
        throw refused(setPath, name, `\`thinPool\` ${options.thinPool}: ${(e as Error).message}`, e);
      }
      if (pool === null || pool.segtype !== 'thin-pool') {
        throw refused(
          setPath,
          name,
          `\`thinPool\` ${options.thinPool}: ${t.vg}/${options.thinPool} is not a thin pool; name an existing thin pool of ${t.vg} (lvs ${t.vg})`,
        );
      }
      plan.create = { kind: 'thin', pool: options.thinPool };
    } else if (d.thin && d.thinPool !== null && t.vg === d.vg && (await isThinPool(lvm, t.vg, d.thinPool))) {
      // The disk was thin and its pool is still there: it comes back as it was, a thin volume there.
      plan.create = { kind: 'thin', pool: d.thinPool };
    } else {
      plan.create = { kind: 'linear' };
      if (d.thin)
        warnings.push(
          `disk ${t.target} was a thin volume (pool ${d.thinPool}, which ${t.vg === d.vg ? 'is gone' : `is not in ${t.vg}`}); ${want} is created as a fully allocated LV (use \`thinPool\` to make it thin)`,
        );
    }
    // a thin LV made now reads as zeros: its all-zero chunks need not be written (nor allocated)
    plan.skipZeros = plan.create?.kind === 'thin';
    disks.push(plan);
  }
  await checkRoom(lvm, setPath, name, disks);

  const run: RestorePlan['run'] = useMemory ? (options.noStart ? 'resume-paused' : 'resume') : options.noStart ? 'none' : 'start';
  const memoryXml = useMemory && disks.some((p) => p.moved || p.toBlock);
  const droppedDisks = copy
    ? m.skipped.filter((s) => (s.device === 'disk' || s.device === 'lun') && xmlDisks.some((x) => x.target === s.target)).map((s) => s.target)
    : [];
  if (droppedDisks.length > 0) {
    warnings.push(`the copy leaves out ${droppedDisks.join(', ')}: not in the backup set, and they belong to ${identity.name}`);
  }
  if (hasMemory && copy && !options.noMemory) {
    warnings.push(
      `a copy cannot resume the memory state of ${identity.name} (libvirt ties it to the domain's UUID and MAC addresses, which a copy changes): ${name} boots from its disks`,
    );
  } else if (hasMemory && options.noMemory) {
    warnings.push('the memory state is not used (`noMemory`): the domain boots from its disks');
  }
  if (memoryXml) {
    warnings.push(
      'the disks change in the domain XML, so the memory state is resumed with domain.xml rewritten (libvirt requires it to match the saved domain); ' +
        'if libvirt refuses, restore with `noMemory`',
    );
  }

  // The steps, in order (see restore.ts for why the domain is stopped where it is).
  const stopFirst = disks.some((p) => p.action === 'overwrite');
  const stopSteps = replace.map((r) =>
    r.destroy ? `stop domain ${r.name} (${r.state}) at once (virsh destroy), to replace it` : `replace domain ${r.name} (shut off)`,
  );
  if (stopFirst) steps.push(...stopSteps);
  for (const p of disks) {
    const f = diskFile(m.disks.find((x) => x.target === p.target)!);
    const image =
      `${formatBytes(p.rawBytes)} from ${f.file}${f.format === 'chunks' ? ' (chunks from the chunk store)' : ''}` +
      (p.skipZeros ? ', leaving its all-zero chunks unwritten' : '');
    const kind = (c: RestoreDiskPlan['create']): string => (c!.kind === 'thin' ? `thin in ${(c as { pool: string }).pool}` : 'linear');
    // a chunked disk without a whole-disk sha256 is checked chunk by chunk, each against its id
    const check = p.rawSha256 === undefined ? "checking each chunk's sha256" : 'checking its sha256';
    steps.push(
      p.action === 'create'
        ? `${p.target}: create ${p.vg}/${p.lv} (${formatBytes(p.size)}, ${kind(p.create)}) and write ${image}, ${check}`
        : p.action === 'swap'
          ? `${p.target}: create a new LV ${p.vg}/${p.temp!.newLv} (${formatBytes(p.size)}, ${kind(p.create)}) beside ${p.vg}/${p.lv} and write ${image}, ${check}`
          : `${p.target}: overwrite ${p.vg}/${p.lv} in place (${formatBytes(p.size)}, existing) with ${image}, ${check}`,
    );
  }
  if (!stopFirst) steps.push(...stopSteps);
  const swaps = disks.filter((p) => p.action === 'swap');
  if (swaps.length > 0) {
    steps.push(
      `swap the new LVs in (lvrename): ${swaps.map((p) => `${p.vg}/${p.temp!.newLv} → ${p.lv}`).join(', ')}; the old ones are removed once the domain is defined`,
    );
  }
  steps.push(
    `${replace.length > 0 ? `undefine ${replace.map((r) => r.name).join(', ')}, ` : ''}define domain ${name}` +
      (copy ? ` as a copy of ${identity.name} (new UUID ${uuid}, new MAC addresses, fresh NVRAM)` : '') +
      (disks.some((p) => p.moved || p.toBlock)
        ? ` with disks ${disks
            .filter((p) => p.moved || p.toBlock)
            .map((p) => `${p.target} → ${p.vg}/${p.lv}${p.toBlock ? ' (as a block disk)' : ''}`)
            .join(', ')}`
        : ''),
  );
  steps.push(
    run === 'resume'
      ? `resume ${name} from memory.state (where it was at ${m.createdAt})`
      : run === 'resume-paused'
        ? `load ${name}'s memory.state paused (virsh resume ${name} runs it)`
        : run === 'start'
          ? `start ${name} (boot from its disks)`
          : `leave ${name} shut off`,
  );

  return {
    domainXml,
    manifest: m,
    plan: {
      set: setPath,
      source: { domain: m.domain.name, uuid: m.domain.uuid, createdAt: m.createdAt, mode: m.mode, host: m.host },
      domain: { name, uuid, copy },
      disks,
      replace,
      run,
      memoryXml,
      droppedDisks,
      warnings,
      steps,
    },
  };
}

/** Whether VG/LV exists and is a thin pool (a failed lookup counts as no). */
async function isThinPool(lvm: Lvm, vg: string, lv: string): Promise<boolean> {
  const found = await lvm.find({ vg, lv }).catch(() => null);
  return found !== null && found.segtype === 'thin-pool';
}
