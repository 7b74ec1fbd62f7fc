/**
 * restore(): read the set → plan (every check, nothing touched) → lock the
 * set's domain folder → check the memory state → stop the domain it
 * replaces → create LVs → write and verify every image → define → resume
 * from the memory state or start.
 *
 * Nothing half-done: a failure before the domain is defined removes the LVs
 * this restore created (they hold nothing but data from the set), puts back
 * the definition of a domain it replaced, and says which pre-existing LVs
 * were overwritten (their old content is gone; restore never deletes an LV
 * it did not create). A failure after the define (resume or start) leaves
 * the restored domain defined, shut off, and says how to go on.
 */
import { resolve } from 'node:path';
import { AbortError, ConfigError, KvmbakError, isAbortError, isLibvirtError, throwIfAborted } from '../errors.js';
import { type Domain, type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { type LogicalVolume, Lvm, validateLvName, validateVgName } from '../lvm/index.js';
import { unpackImage } from '../archive/index.js';
import { type Manifest, readManifest } from '../manifest/index.js';
import { type DomainLock, acquireLock, isValidDomainName, parseSetPath, sha256File } from '../store/index.js';
import { RestoreError } from './errors.js';
import { type PlannedRestore, checkOptionsAgainstSet, planRestore } from './plan.js';
import type {
  RestoreContext,
  RestoreDiskResult,
  RestoreOptions,
  RestorePhase,
  RestoreProgress,
  RestoreReplacement,
  RestoreResult,
} from './types.js';
import { randomMac, rewriteDomainXml } from './xml.js';
import { parseLvTarget } from './targets.js';

/** Option names whose bad values are the caller's mistake (the CLI maps them to usage errors). */
export const RESTORE_OPTION_NAMES = ['set', 'name', 'vg', 'map', 'thinPool', 'threads'] as const;

/** Checks the options' shapes (not the system): ConfigError naming the option. */
export function checkRestoreOptions(o: RestoreOptions): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('restore needs options with a set', 'set');
  if (typeof o.set !== 'string' || o.set === '') throw new ConfigError('name the backup set to restore (its folder, DEST/DOMAIN/YYYYMMDDTHHMMSSZ)', 'set');
  if (o.name !== undefined && (typeof o.name !== 'string' || !isValidDomainName(o.name) || /[\0-\x1f\x7f]/.test(o.name))) {
    throw new ConfigError(`--name ${JSON.stringify(o.name)} is not a usable domain name: give a non-empty name without '/' or control characters`, 'name');
  }
  if (o.vg !== undefined) validateVgName(o.vg, 'vg');
  if (o.thinPool !== undefined) validateLvName(o.thinPool, 'thinPool');
  if (o.map !== undefined) {
    if (typeof o.map !== 'object' || o.map === null) throw new ConfigError('map must be an object of disk target → LV', 'map');
    for (const [target, lv] of Object.entries(o.map)) parseLvTarget(lv, target);
  }
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 256)) {
    throw new ConfigError(`--threads ${String(o.threads)} must be a whole number from 1 to 256`, 'threads');
  }
}

/**
 * Restores a backup set. See the module comment for the guarantees. Throws
 * ManifestError for a set without a usable manifest ("incomplete backup" when
 * it has none), ConfigError for bad options, RestoreError when refused
 * (nothing touched) or failed (with what was done), AbortError when cancelled.
 */
export async function restore(options: RestoreOptions, ctx: RestoreContext = {}): Promise<RestoreResult> {
  checkRestoreOptions(options);
  throwIfAborted(options.signal);
  const t0 = performance.now();
  const setPath = resolve(options.set);
  // A missing, incomplete, foreign or newer set fails here, before any connection.
  let manifest = await readManifest(setPath);
  checkOptionsAgainstSet(manifest, options);
  const hv = ctx.hypervisor ?? (await openHypervisor(options.uri));
  const lvm = ctx.lvm ?? new Lvm();
  let lock: DomainLock | null = null;
  try {
    if (!options.dryRun) {
      // The set lives in DEST/DOMAIN: hold that domain's lock so prune cannot delete it under us.
      let where: { dest: string; domain: string } | null = null;
      try {
        where = parseSetPath(setPath);
      } catch {
        where = null; // a set copied outside a kvmbak destination: nothing to lock
      }
      if (where !== null) {
        lock = await acquireLock(where.dest, where.domain, 'restore');
        manifest = await readManifest(setPath); // it may have changed before we held the lock
      }
    }
    const emit = (e: RestoreProgress): void => {
      try {
        options.onProgress?.(e);
      } catch {
        // a progress consumer must never break a restore
      }
    };
    const planned = await planRestore(hv, lvm, setPath, manifest, options, ctx);
    const { plan } = planned;
    const phase = (p: RestorePhase, message: string): void => emit({ type: 'phase', domain: plan.domain.name, phase: p, message });
    phase('plan', `restore plan for ${setPath}: ${plan.steps.length} steps`);
    for (const w of plan.warnings) emit({ type: 'warning', domain: plan.domain.name, message: w });
    if (options.dryRun) {
      return {
        set: setPath,
        domain: plan.domain.name,
        uuid: plan.domain.uuid,
        dryRun: true,
        plan,
        disks: [],
        replaced: [],
        memoryRestored: false,
        started: false,
        stateAfter: null,
        seconds: (performance.now() - t0) / 1000,
      };
    }
    return await execute(hv, lvm, planned, options, ctx, { t0, emit, phase });
  } finally {
    await lock?.release();
    if (ctx.hypervisor === undefined) hv.close();
  }
}

interface Run {
  t0: number;
  emit: (e: RestoreProgress) => void;
  phase: (p: RestorePhase, message: string) => void;
}

const lvName = (x: { vg: string; lv: string }): string => `${x.vg}/${x.lv}`;

async function execute(
  hv: Hypervisor,
  lvm: Lvm,
  planned: PlannedRestore,
  options: RestoreOptions,
  ctx: RestoreContext,
  run: Run,
): Promise<RestoreResult> {
  const { plan, manifest } = planned;
  const { emit, phase } = run;
  const signal = options.signal;
  const name = plan.domain.name;

  // 1. The memory state must be intact before anything is touched.
  if (plan.run === 'resume' || plan.run === 'resume-paused') await checkMemory(plan.set, manifest, name, signal, emit, phase);
  throwIfAborted(signal);

  const created: { vg: string; lv: string; uuid: string }[] = [];
  const overwritten: string[] = [];
  const results: RestoreDiskResult[] = [];
  /** Definitions of replaced domains, to put back if the restore fails before its own define. */
  const replacedXml = new Map<string, { name: string; xml: string }>();
  const replaced: RestoreReplacement[] = [];
  let defined = false;
  try {
    // 2. Stop the domains being replaced (their disks may be the targets); keep their definitions for now.
    for (const r of plan.replace) {
      const dom = await hv.lookupDomain(r.uuid);
      try {
        replacedXml.set(r.uuid, { name: r.name, xml: await dom.xml({ inactive: true, secure: true }) });
        if ((await dom.info()).state !== 'shutoff') {
          phase('stop', `stopping domain ${r.name} (virsh destroy)`);
          await dom.destroy();
        }
      } finally {
        dom.free();
      }
      replaced.push(r);
    }

    // 3. Target LVs: create the missing ones; existing ones must not be in use any more.
    const lvs = new Map<string, LogicalVolume>();
    for (const p of plan.disks) {
      throwIfAborted(signal);
      if (p.action === 'create') {
        phase('create', `creating ${p.vg}/${p.lv} (${p.size} bytes${p.create?.kind === 'thin' ? `, thin in ${p.create.pool}` : ''})`);
        const lv = await lvm.createVolume(p.vg, p.lv, p.size, p.create?.kind === 'thin' ? { thinPool: p.create.pool } : {});
        created.push({ vg: lv.vg, lv: lv.lv, uuid: lv.uuid });
        lvs.set(p.target, lv);
      } else {
        const lv = await lvm.get({ vg: p.vg, lv: p.lv });
        if (lv.open === true) {
          throw new KvmbakError(
            `${lvName(p)} (disk ${p.target}) is still in use after stopping the domain it belonged to; find what holds it open (fuser -v ${lv.path})`,
            'KVMBAK_LV_BUSY',
          );
        }
        lvs.set(p.target, lv);
      }
    }

    // 4. Write every image, verifying the raw sha256 as it goes.
    for (const p of plan.disks) {
      throwIfAborted(signal);
      const lv = lvs.get(p.target)!;
      const d = manifest.disks.find((x) => x.target === p.target)!;
      phase('write', `writing ${d.image.file} onto ${lvName(p)} (${lv.path})`);
      if (p.action === 'overwrite') overwritten.push(lvName(p));
      const r = await unpackImage(p.image, lv.path, {
        index: { chunkSize: d.image.chunkSize, bytes: d.image.rawBytes, members: d.image.members, storedBytes: d.image.storedBytes },
        expectSha256: d.image.rawSha256,
        expectBytes: d.image.rawBytes,
        // an LV is a block device, written in place; this only matters for test files standing in for LVs
        overwrite: true,
        ...(options.threads !== undefined ? { threads: options.threads } : {}),
        ...(signal ? { signal } : {}),
        onProgress: (ev) =>
          emit({
            type: 'write',
            domain: name,
            target: p.target,
            lv: lvName(p),
            phase: ev.phase,
            bytesDone: ev.bytesDone,
            bytesTotal: ev.bytesTotal,
            rate: ev.rate,
          }),
      });
      results.push({
        target: p.target,
        lv: lvName(p),
        path: lv.path,
        created: p.action === 'create',
        rawBytes: r.bytes,
        sha256: r.sha256,
        mode: r.mode,
        seconds: r.seconds,
      });
    }
    throwIfAborted(signal);

    // 5. Define: the replaced domains go, the restored one comes.
    const diskPaths: Record<string, string> = {};
    for (const p of plan.disks) if (p.moved || p.toBlock) diskPaths[p.target] = lvs.get(p.target)!.path;
    const xml = rewriteDomainXml(planned.domainXml, {
      diskPaths,
      ...(plan.domain.copy
        ? {
            name,
            uuid: plan.domain.uuid,
            newMac: ctx.newMac ?? randomMac,
            removeDisks: plan.droppedDisks,
            freshNvram: true,
          }
        : {}),
    }).xml;
    phase('define', `defining domain ${name}`);
    for (const r of plan.replace) await undefineDomain(hv, r);
    let dom: Domain;
    try {
      dom = await hv.defineDomain(xml);
    } catch (e) {
      await redefine(hv, replacedXml);
      throw e;
    }
    defined = true;
    try {
      return await bringUp(hv, dom, plan, diskPaths, results, replaced, options, run);
    } finally {
      dom.free();
    }
  } catch (e) {
    if (defined) throw e;
    // Undo what can be undone: the LVs this restore made, the definitions it removed.
    phase('cleanup', 'restore failed: cleaning up');
    const removed: string[] = [];
    const kept: string[] = [];
    for (const c of created.reverse()) {
      try {
        const now = await lvm.find({ vg: c.vg, lv: c.lv });
        if (now !== null && now.uuid === c.uuid) await lvm.remove({ vg: c.vg, lv: c.lv }, { force: true });
        removed.push(lvName(c));
      } catch {
        kept.push(lvName(c));
      }
    }
    const lost = replacedXml.size > 0 ? await redefine(hv, replacedXml) : [];
    if (isAbortError(e)) throw e;
    const cause = e as Error;
    const parts: string[] = [];
    if (removed.length > 0) parts.push(`removed the LVs it had created (${removed.join(', ')})`);
    if (kept.length > 0) parts.push(`could not remove the LVs it created: ${kept.join(', ')} (lvremove them)`);
    if (overwritten.length > 0) parts.push(`${overwritten.join(', ')} ${overwritten.length > 1 ? 'were' : 'was'} (partly) overwritten: the old data there is gone`);
    const back = replaced.filter((r) => !lost.includes(r.name));
    if (back.length > 0) parts.push(`domain ${back.map((r) => r.name).join(', ')} is defined as before${back.some((r) => r.destroy) ? ' (shut off)' : ''}`);
    if (lost.length > 0) parts.push(`could not define ${lost.join(', ')} again (virsh define its XML by hand)`);
    throw new RestoreError(
      `${cause.message}; restore of ${name} stopped before defining it${parts.length > 0 ? `: ${parts.join('; ')}` : ', nothing was changed'}`,
      'KVMBAK_RESTORE_FAILED',
      { set: plan.set, domain: name, createdLvs: kept, removedLvs: removed, overwrittenLvs: overwritten, defined: false },
      { cause: e },
    );
  }
}

/** Hashes memory.state against the manifest (a damaged state must never be resumed). */
async function checkMemory(
  setPath: string,
  m: Manifest,
  domain: string,
  signal: AbortSignal | undefined,
  emit: (e: RestoreProgress) => void,
  phase: (p: RestorePhase, message: string) => void,
): Promise<void> {
  const mem = m.memory!;
  phase('check', `checking ${mem.file} (${mem.bytes} bytes)`);
  let done = 0;
  let last = 0;
  const h = await sha256File(resolve(setPath, mem.file), {
    ...(signal ? { signal } : {}),
    onBytes: (n) => {
      done += n;
      const now = Date.now();
      if (now - last >= 200) {
        last = now;
        emit({ type: 'check', domain, file: mem.file, bytesDone: done, bytesTotal: mem.bytes });
      }
    },
  });
  emit({ type: 'check', domain, file: mem.file, bytesDone: done, bytesTotal: mem.bytes });
  if (h.sha256 !== mem.sha256 || h.bytes !== mem.bytes) {
    throw new RestoreError(
      `backup set ${setPath} is damaged: ${mem.file}: sha256 differs from the manifest; nothing was changed. ` +
        'Restore another set, or this one from its disks with --no-memory',
      'KVMBAK_RESTORE_REFUSED',
      { set: setPath, domain },
    );
  }
}

/** Undefines a replaced domain, removing what would make the restored one misbehave (a managed-save image). */
async function undefineDomain(hv: Hypervisor, r: RestoreReplacement): Promise<void> {
  let dom: Domain;
  try {
    dom = await hv.lookupDomain(r.uuid);
  } catch (e) {
    if (isLibvirtError(e, 'VIR_ERR_NO_DOMAIN')) return; // a transient domain vanished when destroyed
    throw e;
  }
  try {
    try {
      // keep the UEFI variables: the restored domain (same name) uses the same NVRAM file
      await dom.undefine({ managedSave: true, snapshotsMetadata: true, keepNvram: true });
    } catch (e) {
      // drivers without NVRAM support reject the flag (the test driver does)
      if (!isLibvirtError(e, 'VIR_ERR_INVALID_ARG')) throw e;
      await dom.undefine({ managedSave: true, snapshotsMetadata: true });
    }
  } finally {
    dom.free();
  }
}

/** Puts back definitions of replaced domains that are no longer defined; returns the names it could not. */
async function redefine(hv: Hypervisor, xmls: Map<string, { name: string; xml: string }>): Promise<string[]> {
  const lost: string[] = [];
  for (const [uuid, { name, xml }] of xmls) {
    try {
      const existing = await hv.lookupDomain(uuid).catch(() => null);
      if (existing !== null) {
        existing.free();
        continue;
      }
      (await hv.defineDomain(xml)).free();
    } catch {
      lost.push(name);
    }
  }
  return lost;
}

/** After the define: resume from the memory state, start, or leave shut off. */
async function bringUp(
  hv: Hypervisor,
  dom: Domain,
  plan: PlannedRestore['plan'],
  diskPaths: Readonly<Record<string, string>>,
  disks: RestoreDiskResult[],
  replaced: RestoreReplacement[],
  options: RestoreOptions,
  run: Run,
): Promise<RestoreResult> {
  const name = plan.domain.name;
  let memoryRestored = false;
  let started = false;
  try {
    if (plan.run === 'resume' || plan.run === 'resume-paused') {
      run.phase('resume', `resuming ${name} from its memory state`);
      const memoryFile = resolve(plan.set, 'memory.state');
      // Disks moved: the XML saved inside the state gets the same new disk sources
      // (libvirt checks it against the saved one, so it must start from that one).
      const xml = plan.memoryXml
        ? rewriteDomainXml(await hv.saveImageXml(memoryFile, { secure: true }), { diskPaths }).xml
        : undefined;
      await hv.restoreDomain(memoryFile, {
        ...(xml !== undefined ? { xml } : {}),
        ...(plan.run === 'resume-paused' ? { startMode: 'paused' as const } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      memoryRestored = true;
    } else if (plan.run === 'start') {
      run.phase('start', `starting ${name}`);
      await dom.start();
      started = true;
    }
  } catch (e) {
    const how =
      plan.run === 'start'
        ? `start it with virsh start ${name}`
        : plan.memoryXml
          ? `libvirt may refuse the saved state with the disks rewritten: start it from its disks with virsh start ${name} (a cold boot)`
          : `resume it by hand (virsh restore ${resolve(plan.set, 'memory.state')}) or start it from its disks (virsh start ${name})`;
    const what = plan.run === 'start' ? 'could not start it' : 'could not resume it from its memory state';
    const err = new RestoreError(
      `${(e as Error).message}; the disks of ${name} are restored and the domain is defined, but restore ${what}: ${how}`,
      'KVMBAK_RESTORE_NOT_STARTED',
      { set: plan.set, domain: name, defined: true },
      { cause: e },
    );
    if (isAbortError(e)) throw new AbortError(err.message, { cause: e });
    throw err;
  }
  const stateAfter = (await dom.info()).state;
  run.phase('done', `restored ${name} (${stateAfter})`);
  return {
    set: plan.set,
    domain: name,
    uuid: dom.uuid,
    dryRun: false,
    plan,
    disks,
    replaced,
    memoryRestored,
    started,
    stateAfter,
    seconds: (performance.now() - run.t0) / 1000,
  };
}
