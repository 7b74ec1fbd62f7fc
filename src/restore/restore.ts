/**
 * restore(): read the set → plan (every check, nothing touched) → prove the
 * set good (every file against SHA256SUMS and the manifest) → lock →
 * write → swap → define → resume from the memory state or start.
 *
 * Nothing is destroyed before what replaces it is proven good:
 * - before anything is stopped or written, every file of the set is hashed
 *   and compared with SHA256SUMS and the manifest (a dry run does the same);
 * - an existing LV (with `force`) is not overwritten: a new LV is written
 *   beside it (same VG, or same thin pool), its data checked, and only
 *   then is the domain using the old one stopped and the names swapped
 *   (lvrename). A failure before the swap leaves the old LV and the running
 *   domain as they were; the old LV is removed once the restored domain is
 *   defined. The domain is stopped as late as possible (the LV is in use
 *   while it runs) and never before the new data is complete and checked;
 * - `inPlace` (for a VG without room for the second copy) writes over the
 *   existing LVs: the domain is stopped first, and a failure part-way says
 *   which LVs lost their old data.
 *
 * A failure before the define removes the LVs this restore created, swaps
 * back what it swapped, puts back the definition of a domain it replaced and
 * starts that domain again when it was running and its disks are intact. A
 * failure after the define (resume or start) leaves the restored domain
 * defined, shut off, and says how to go on.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { AbortError, ConfigError, KvmbakError, isAbortError, isLibvirtError, throwIfAborted } from '../errors.js';
import { type Domain, type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { type LogicalVolume, Lvm, validateLvName, validateVgName } from '../lvm/index.js';
import { unpackImage } from '../archive/index.js';
import { ChunkStore, readChunkList, readDiskFromStore } from '../chunks/index.js';
import { MEMORY_FILE, isChunkedMemory, memorySetFile, type Manifest } from '../manifest/index.js';
import {
  type DomainLock,
  acquireLock,
  assertPrivateFolder,
  isValidDomainName,
  parseSetPath,
  readSetManifest,
  sha256File,
  verifySetFiles,
} from '../store/index.js';
import { RestoreError } from './errors.js';
import { type PlannedRestore, RESTORE_LV_TAG, checkOptionsAgainstSet, planRestore } from './plan.js';
import { type ChunkListRef, checkChunkLists, chunkStoreOfSet, manifestChunkLists } from './chunks.js';
import type {
  RestoreContext,
  RestoreDiskPlan,
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
export const RESTORE_OPTION_NAMES = ['set', 'name', 'vg', 'map', 'thinPool', 'threads', 'inPlace'] as const;

/** Checks the options' shapes (not the system): ConfigError naming the option. */
export function checkRestoreOptions(o: RestoreOptions): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('restore needs options with a set', 'set');
  if (typeof o.set !== 'string' || o.set === '')
    throw new ConfigError('name the backup set to restore (its folder, DEST/DOMAIN/YYYYMMDDTHHMMSSZ)', 'set');
  if (o.name !== undefined && (typeof o.name !== 'string' || !isValidDomainName(o.name) || /[\0-\x1f\x7f]/.test(o.name))) {
    throw new ConfigError(
      `\`name\` ${JSON.stringify(o.name)} is not a usable domain name: give a non-empty name without '/' or control characters`,
      'name',
    );
  }
  if (o.vg !== undefined) validateVgName(o.vg, 'vg');
  if (o.thinPool !== undefined) validateLvName(o.thinPool, 'thinPool');
  if (o.map !== undefined) {
    if (typeof o.map !== 'object' || o.map === null) throw new ConfigError('`map` must be an object of disk target → LV', 'map');
    for (const [target, lv] of Object.entries(o.map)) parseLvTarget(lv, target);
  }
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 256)) {
    throw new ConfigError(`\`threads\` ${String(o.threads)} must be a whole number from 1 to 256`, 'threads');
  }
  if (o.inPlace === true && o.force !== true) {
    throw new ConfigError('`inPlace` writes over existing LVs, which needs `force` too', 'inPlace');
  }
}

/**
 * Restores a backup set. See the module comment for the guarantees. Throws
 * ManifestError for a set without a usable manifest ("incomplete backup" when
 * it has none), StoreError KVMBAK_NOT_A_SET for a folder that is not a set,
 * ConfigError for bad options, RestoreError when refused (nothing touched) or
 * failed (with what was done), AbortError when cancelled.
 */
export async function restore(options: RestoreOptions, ctx: RestoreContext = {}): Promise<RestoreResult> {
  checkRestoreOptions(options);
  throwIfAborted(options.signal);
  const t0 = performance.now();
  const setPath = resolve(options.set);
  // A missing, incomplete, foreign or newer set fails here, before any connection.
  let manifest = await readSetManifest(setPath);
  checkOptionsAgainstSet(manifest, options);
  await checkSetFolders(setPath);
  const hv = ctx.hypervisor ?? (await openHypervisor(options.uri));
  const lvm = ctx.lvm ?? new Lvm();
  let lock: DomainLock | null = null;
  try {
    if (!options.dryRun) ({ lock, manifest } = await lockSetDomain(setPath, manifest));
    const emit = progressEmitter(options);
    const planned = await planRestore(hv, lvm, setPath, manifest, options, ctx);
    const { plan } = planned;
    const phase = (p: RestorePhase, message: string): void => emit({ type: 'phase', domain: plan.domain.name, phase: p, message });
    phase('plan', `restore plan for ${setPath}: ${plan.steps.length} steps`);
    for (const w of plan.warnings) emit({ type: 'warning', domain: plan.domain.name, message: w });
    await proveSet(planned, options.signal, emit, phase);
    if (options.dryRun) return dryRunResult(planned, t0);
    return await execute(new RestoreRun(hv, lvm, planned, options, ctx, t0, emit, phase));
  } finally {
    await lock?.release();
    if (ctx.hypervisor === undefined) hv.close();
  }
}

/** A progress callback that can never break a restore. */
function progressEmitter(options: RestoreOptions): (e: RestoreProgress) => void {
  return (e) => {
    try {
      options.onProgress?.(e);
    } catch {
      // a progress consumer must never break a restore
    }
  };
}

/** The set folder, and the domain folder it lives in, must be private: another user could swap the set under us. */
async function checkSetFolders(setPath: string): Promise<void> {
  await assertPrivateFolder(setPath, 'backup set folder');
  if (inDestination(setPath)) await assertPrivateFolder(dirname(setPath), 'backup folder');
}

function inDestination(setPath: string): { dest: string; domain: string } | null {
  try {
    return parseSetPath(setPath);
  } catch {
    return null; // a set copied outside a kvmbak destination
  }
}

/** Holds the lock of the set's domain folder (so prune cannot delete it under us) and re-reads the manifest under it. */
async function lockSetDomain(setPath: string, manifest: Manifest): Promise<{ lock: DomainLock | null; manifest: Manifest }> {
  const where = inDestination(setPath);
  if (where === null) return { lock: null, manifest };
  const lock = await acquireLock(where.dest, where.domain, 'restore');
  try {
    return { lock, manifest: await readSetManifest(setPath) }; // it may have changed before we held the lock
  } catch (e) {
    await lock.release();
    throw e;
  }
}

/**
 * Proves the set good before anything is touched: every file it holds that
 * the restore uses is hashed and compared with SHA256SUMS and the manifest
 * (opened without following links; the memory state only when it is
 * resumed). Files the set should not hold do not stop it (a warning).
 */
async function proveSet(
  planned: PlannedRestore,
  signal: AbortSignal | undefined,
  emit: (e: RestoreProgress) => void,
  phase: (p: RestorePhase, message: string) => void,
): Promise<void> {
  const { plan, manifest } = planned;
  const domain = plan.domain.name;
  const resumes = plan.run === 'resume' || plan.run === 'resume-paused';
  phase('check', `checking every file of ${plan.set} against SHA256SUMS and the manifest`);
  let last = 0;
  const v = await verifySetFiles(plan.set, {
    ...(signal ? { signal } : {}),
    skipFiles: manifest.memory !== null && !resumes ? [memorySetFile(manifest.memory)] : [],
    onProgress: (p) => {
      const now = Date.now();
      if (now - last < 200 && p.bytesDone < p.bytesTotal) return;
      last = now;
      emit({ type: 'check', domain, file: p.file, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal });
    },
  });
  const damage = v.problems.filter((p) => !v.strays.includes(p));
  if (JSON.stringify(v.manifest) !== JSON.stringify(manifest)) damage.unshift('manifest.json changed while it was being read');
  if (damage.length > 0) {
    const more = damage.length > 1 ? ` (and ${damage.length - 1} more problem${damage.length > 2 ? 's' : ''})` : '';
    const memoryOnly = manifest.memory !== null && damage.every((d) => d.startsWith(memorySetFile(manifest.memory!)));
    throw new RestoreError(
      `backup set ${plan.set} is damaged: ${damage[0]}${more}; nothing was changed. ` +
        (memoryOnly ? 'Restore another set, or this one from its disks with `noMemory`' : `Run kvmbak verify ${plan.set}, or restore another set`),
      'KVMBAK_RESTORE_REFUSED',
      { set: plan.set, domain },
    );
  }
  for (const s of v.strays) emit({ type: 'warning', domain, message: `${s} (ignored: the set's own files are intact)` });
  await proveChunks(planned, resumes, signal, emit, phase);
}

/**
 * For chunked disks (and a chunked memory state that is resumed): every list the restore uses
 * read and checked against the manifest, and every distinct chunk they name read, decompressed
 * and checked against its id, before anything is touched.
 */
async function proveChunks(
  planned: PlannedRestore,
  resumes: boolean,
  signal: AbortSignal | undefined,
  emit: (e: RestoreProgress) => void,
  phase: (p: RestorePhase, message: string) => void,
): Promise<void> {
  const { plan, manifest } = planned;
  const domain = plan.domain.name;
  const memoryList = manifest.memory !== null && isChunkedMemory(manifest.memory) ? manifest.memory.chunks.file : null;
  const refs: ChunkListRef[] = manifestChunkLists(plan.set, manifest, { memory: resumes }).filter(
    (r) => r.file === memoryList || plan.disks.some((p) => p.format === 'chunks' && p.image === r.path),
  );
  if (refs.length === 0) return;
  const store = chunkStoreOfSet(plan.set);
  const rawTotal = refs.reduce((n, r) => n + r.rawBytes, 0);
  phase('check', `checking every chunk ${refs.map((r) => r.file).join(', ')} name${refs.length === 1 ? 's' : ''} in ${store}`);
  const c = await checkChunkLists(store, refs, {
    ...(signal ? { signal } : {}),
    // raw bytes checked; the total counts a chunk once per list naming it, so a shared chunk ends it early
    onProgress: (p) => emit({ type: 'check', domain, file: p.file, bytesDone: p.bytesDone, bytesTotal: rawTotal }),
  });
  const damage = [...c.listProblems.map((p) => p.message), ...c.chunkProblems.map((p) => p.message)];
  if (damage.length === 0) return;
  const memoryOnly =
    memoryList !== null &&
    c.listProblems.every((p) => p.file === memoryList) &&
    c.chunkProblems.every((p) => p.files.every((f) => f === resolve(plan.set, memoryList)));
  const more = damage.length > 1 ? ` (and ${damage.length - 1} more problem${damage.length > 2 ? 's' : ''})` : '';
  throw new RestoreError(
    `backup set ${plan.set} is damaged: ${damage[0]}${more}; nothing was changed. ` +
      (memoryOnly ? 'Restore another set, or this one from its disks with `noMemory`' : `Run kvmbak verify ${plan.set}, or restore another set`),
    'KVMBAK_RESTORE_REFUSED',
    { set: plan.set, domain },
  );
}

function dryRunResult(planned: PlannedRestore, t0: number): RestoreResult {
  const { plan } = planned;
  return {
    set: plan.set,
    domain: plan.domain.name,
    uuid: plan.domain.uuid,
    dryRun: true,
    plan,
    disks: [],
    replaced: [],
    memoryRestored: false,
    started: false,
    stateAfter: null,
    leftoverLvs: [],
    seconds: (performance.now() - t0) / 1000,
  };
}

const lvName = (x: { vg: string; lv: string }): string => `${x.vg}/${x.lv}`;

/** One restore under way: what it has done so far, so a failure can be undone step by step. */
class RestoreRun {
  readonly plan: PlannedRestore['plan'];
  readonly name: string;
  readonly signal: AbortSignal | undefined;
  /** LVs this restore made (final names of created disks, temporary names of swap disks). */
  readonly created: { vg: string; lv: string; uuid: string }[] = [];
  /** The LV each disk is written to, by target. */
  readonly lvs = new Map<string, LogicalVolume>();
  /** Swap disks whose names were swapped (old LV under its temporary name, new LV under the final one). */
  readonly swapped: RestoreDiskPlan[] = [];
  /** Existing LVs written in place (inPlace). */
  readonly overwritten: string[] = [];
  readonly results: RestoreDiskResult[] = [];
  /** Definitions of replaced domains, to put back if the restore fails before its own define. */
  readonly replacedXml = new Map<string, { name: string; xml: string }>();
  readonly replaced: RestoreReplacement[] = [];
  /** Disk target → LV path, for the disks whose source changes in the domain XML (set by the define). */
  diskPaths: Record<string, string> = {};
  defined = false;
  /** The libvirt save image to resume from: the set's memory.state, or a chunked one rebuilt into a private file. */
  memoryFile = '';

  constructor(
    readonly hv: Hypervisor,
    readonly lvm: Lvm,
    readonly planned: PlannedRestore,
    readonly options: RestoreOptions,
    readonly ctx: RestoreContext,
    readonly t0: number,
    readonly emit: (e: RestoreProgress) => void,
    readonly phase: (p: RestorePhase, message: string) => void,
  ) {
    this.plan = planned.plan;
    this.name = planned.plan.domain.name;
    this.signal = options.signal;
  }

  get inPlace(): boolean {
    return this.plan.disks.some((p) => p.action === 'overwrite');
  }
}

/**
 * The steps. In place, the replaced domain must stop before its LVs are
 * written; otherwise it runs on while the new LVs are written and checked,
 * and stops only for the swap (its LVs are in use while it runs).
 */
async function execute(run: RestoreRun): Promise<RestoreResult> {
  const m = run.planned.manifest.memory;
  const resumes = run.plan.run === 'resume' || run.plan.run === 'resume-paused';
  // A chunked memory state is rebuilt (and checked) before anything is stopped or written.
  let rebuilt: { file: string; remove: () => Promise<void> } | null = null;
  if (resumes && m !== null && isChunkedMemory(m)) rebuilt = await rebuildMemoryState(run);
  run.memoryFile = rebuilt?.file ?? resolve(run.plan.set, MEMORY_FILE);
  try {
    return await executeSteps(run);
  } finally {
    await rebuilt?.remove();
  }
}

async function executeSteps(run: RestoreRun): Promise<RestoreResult> {
  try {
    if (run.inPlace) await stopReplacedDomains(run);
    await prepareTargets(run);
    await writeImages(run);
    if (!run.inPlace) await stopReplacedDomains(run);
    await swapInNewLvs(run);
    const dom = await defineRestored(run);
    try {
      return await bringUp(run, dom);
    } finally {
      dom.free();
    }
  } catch (e) {
    if (run.defined) throw e;
    throw await undoBeforeDefine(run, e);
  }
}

/** Stops the domains being replaced (their disks may be the targets); keeps their definitions for now. */
async function stopReplacedDomains(run: RestoreRun): Promise<void> {
  for (const r of run.plan.replace) {
    throwIfAborted(run.signal);
    const dom = await run.hv.lookupDomain(r.uuid);
    try {
      run.replacedXml.set(r.uuid, { name: r.name, xml: await dom.xml({ inactive: true, secure: true }) });
      if ((await dom.info()).state !== 'shutoff') {
        run.phase('stop', `stopping domain ${r.name} (virsh destroy)`);
        await dom.destroy();
      }
    } finally {
      dom.free();
    }
    run.replaced.push(r);
  }
}

/** Creates the new LVs (missing disks under their names, swap disks under temporary names); checks in-place targets are free. */
async function prepareTargets(run: RestoreRun): Promise<void> {
  for (const p of run.plan.disks) {
    throwIfAborted(run.signal);
    if (p.action === 'overwrite') {
      run.lvs.set(p.target, await assertNotInUse(run, p, p.lv));
      continue;
    }
    const name = p.action === 'swap' ? p.temp!.newLv : p.lv;
    const thin = p.create?.kind === 'thin' ? p.create.pool : undefined;
    run.phase('create', `creating ${p.vg}/${name} (${p.size} bytes${thin !== undefined ? `, thin in ${thin}` : ''})`);
    const lv = await run.lvm.createVolume(p.vg, name, p.size, {
      ...(thin !== undefined ? { thinPool: thin } : {}),
      ...(p.action === 'swap' ? { tags: [RESTORE_LV_TAG] } : {}),
    });
    run.created.push({ vg: lv.vg, lv: lv.lv, uuid: lv.uuid });
    run.lvs.set(p.target, lv);
  }
}

/** The LV `lv` of disk `p`, refused when something still holds it open. */
async function assertNotInUse(run: RestoreRun, p: RestoreDiskPlan, lv: string): Promise<LogicalVolume> {
  const found = await run.lvm.get({ vg: p.vg, lv });
  if (found.open === true) {
    throw new KvmbakError(
      `${lvName(p)} (disk ${p.target}) is still in use after stopping the domain it belonged to; find what holds it open (fuser -v ${found.path})`,
      'KVMBAK_LV_BUSY',
    );
  }
  return found;
}

/**
 * Writes every disk, checking its data as it goes: an image through unpackImage (raw sha256; it
 * fails on a mismatch), a chunk list through readDiskFromStore (the list's sha256 against the
 * manifest first, each chunk against its id, the size against the manifest; the whole disk's sha256
 * too in a set of older kvmbak that records one). A new thin LV gets no all-zero chunk written
 * (skipZeros).
 */
async function writeImages(run: RestoreRun): Promise<void> {
  for (const p of run.plan.disks) {
    throwIfAborted(run.signal);
    const lv = run.lvs.get(p.target)!;
    if (p.action === 'overwrite') run.overwritten.push(lvName(p));
    run.results.push(p.format === 'chunks' ? await writeFromChunks(run, p, lv) : await writeFromImage(run, p, lv));
  }
  throwIfAborted(run.signal);
}

function writeProgress(run: RestoreRun, p: RestoreDiskPlan, lv: LogicalVolume) {
  return (ev: { phase: 'unpack' | 'sync' | 'hash' | 'pack'; bytesDone: number; bytesTotal?: number | undefined; rate: number }): void =>
    run.emit({
      type: 'write',
      domain: run.name,
      target: p.target,
      lv: lv.fullName,
      phase: ev.phase,
      bytesDone: ev.bytesDone,
      bytesTotal: ev.bytesTotal,
      rate: ev.rate,
    });
}

async function writeFromImage(run: RestoreRun, p: RestoreDiskPlan, lv: LogicalVolume): Promise<RestoreDiskResult> {
  const d = run.planned.manifest.disks.find((x) => x.target === p.target)!;
  const image = d.image!; // the plan's format 'image' is a disk with an image
  run.phase('write', `writing ${image.file} onto ${lv.fullName} (${lv.path})`);
  const r = await unpackImage(p.image, lv.path, {
    index: { chunkSize: image.chunkSize, bytes: image.rawBytes, members: image.members, storedBytes: image.storedBytes },
    expectSha256: image.rawSha256,
    expectBytes: image.rawBytes,
    // an LV is a block device, written in place; this only matters for test files standing in for LVs
    overwrite: true,
    skipZeros: p.skipZeros,
    ...(run.options.threads !== undefined ? { threads: run.options.threads } : {}),
    ...(run.signal ? { signal: run.signal } : {}),
    onProgress: writeProgress(run, p, lv),
  });
  return diskResult(p, { rawBytes: r.bytes, sha256: r.sha256, bytesWritten: r.bytesWritten, mode: r.mode, seconds: r.seconds });
}

/** What restore reports of a disk written as `p` planned it. */
function diskResult(
  p: RestoreDiskPlan,
  written: Pick<RestoreDiskResult, 'rawBytes' | 'sha256' | 'listSha256' | 'bytesWritten' | 'mode' | 'seconds'>,
): RestoreDiskResult {
  return {
    target: p.target,
    lv: lvName(p),
    path: p.path,
    created: p.action === 'create',
    swapped: p.action === 'swap',
    skipZeros: p.skipZeros,
    ...written,
  };
}

async function writeFromChunks(run: RestoreRun, p: RestoreDiskPlan, lv: LogicalVolume): Promise<RestoreDiskResult> {
  const d = run.planned.manifest.disks.find((x) => x.target === p.target)!;
  const chunks = d.chunks!; // the plan's format 'chunks' is a disk with a chunk list
  run.phase('write', `writing ${chunks.file} (${chunks.chunks} chunks from ${chunkStoreOfSet(run.plan.set)}) onto ${lv.fullName} (${lv.path})`);
  const t0 = performance.now();
  // The disk's identity is its list: the one read here must be the one the manifest names (each
  // chunk is then checked against its id as it is read).
  const listed = await sha256File(p.image, { signal: run.signal });
  if (listed.bytes !== chunks.listBytes || listed.sha256 !== chunks.listSha256) {
    throw new RestoreError(
      `${chunks.file} changed since the set was checked (sha256 ${listed.sha256}, the manifest says ${chunks.listSha256}); nothing was written to ${lv.fullName}`,
      'KVMBAK_RESTORE_FAILED',
      { set: run.plan.set, domain: run.name },
    );
  }
  const list = await readChunkList(p.image, run.signal);
  const store = await ChunkStore.open(chunkStoreOfSet(run.plan.set));
  const progress = writeProgress(run, p, lv);
  let r;
  try {
    r = await readDiskFromStore(list, store, lv.path, {
      sparse: p.skipZeros,
      // a set of older kvmbak records the whole disk's sha256: checked below
      wholeSha256: chunks.rawSha256 !== undefined,
      ...(run.options.threads !== undefined ? { concurrency: Math.max(2, run.options.threads) } : {}),
      ...(run.signal ? { signal: run.signal } : {}),
      onProgress: (ev) => {
        const s = (performance.now() - t0) / 1000;
        progress({ phase: 'unpack', bytesDone: ev.bytesDone, bytesTotal: ev.bytesTotal, rate: s > 0 ? ev.bytesDone / s : 0 });
      },
    });
  } finally {
    await store.close();
  }
  if (list.rawSize !== chunks.rawBytes || (chunks.rawSha256 !== undefined && r.rawSha256 !== chunks.rawSha256)) {
    const what = (bytes: number, sha256: string | undefined): string => `${bytes} bytes${sha256 !== undefined ? `, sha256 ${sha256}` : ''}`;
    throw new RestoreError(
      `the data rebuilt from ${chunks.file} (${what(list.rawSize, chunks.rawSha256 !== undefined ? r.rawSha256 : undefined)}) differs from the manifest's (${what(chunks.rawBytes, chunks.rawSha256)}); ${lv.fullName} now holds unverified data`,
      'KVMBAK_RESTORE_FAILED',
      { set: run.plan.set, domain: run.name },
    );
  }
  progress({ phase: 'sync', bytesDone: list.rawSize, bytesTotal: list.rawSize, rate: 0 });
  return diskResult(p, {
    rawBytes: list.rawSize,
    sha256: chunks.rawSha256 !== undefined ? r.rawSha256! : null,
    listSha256: chunks.listSha256,
    bytesWritten: r.bytesWritten,
    mode: 'chunks',
    seconds: (performance.now() - t0) / 1000,
  });
}

/**
 * A chunked memory state (kvmbak/2) rebuilt into a private file for virDomainRestore: a 0700
 * folder made with mkdtemp in the set's domain folder (the destination's file system, not /tmp,
 * which may be small or a tmpfs), the file 0600 in it, each chunk and the whole checked against
 * the manifest. Returns the file and a remover the caller runs in a finally.
 */
async function rebuildMemoryState(run: RestoreRun): Promise<{ file: string; remove: () => Promise<void> }> {
  const m = run.planned.manifest.memory!;
  if (!isChunkedMemory(m)) throw new Error('rebuildMemoryState needs a chunked memory state');
  const dir = await mkdtemp(join(dirname(run.plan.set), '.kvmbak-restore-memory-'));
  const remove = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const file = join(dir, MEMORY_FILE);
    run.phase('write', `rebuilding the memory state from ${m.chunks.file} (${m.chunks.chunks} chunks) into ${file}`);
    const list = await readChunkList(resolve(run.plan.set, m.chunks.file), run.signal);
    const store = await ChunkStore.open(chunkStoreOfSet(run.plan.set));
    let r;
    try {
      r = await readDiskFromStore(list, store, file, {
        wholeSha256: true, // the memory state is checked whole: memory.sha256
        ...(run.options.threads !== undefined ? { concurrency: Math.max(2, run.options.threads) } : {}),
        ...(run.signal ? { signal: run.signal } : {}),
      });
    } finally {
      await store.close();
    }
    if (list.rawSize !== m.bytes || r.rawSha256 !== m.sha256) {
      throw new RestoreError(
        `the memory state rebuilt from ${m.chunks.file} (${list.rawSize} bytes, sha256 ${r.rawSha256}) differs from the manifest's (${m.bytes} bytes, sha256 ${m.sha256}); nothing was changed. Restore another set, or this one from its disks with \`noMemory\``,
        'KVMBAK_RESTORE_REFUSED',
        { set: run.plan.set, domain: run.name },
      );
    }
    return { file, remove };
  } catch (e) {
    await remove();
    throw e;
  }
}

/**
 * Gives each new LV its final name: the old LV (now unused: its domain is
 * stopped) goes to its temporary name, the new one takes the old name and
 * loses the restore tag.
 */
async function swapInNewLvs(run: RestoreRun): Promise<void> {
  for (const p of run.plan.disks.filter((x) => x.action === 'swap')) {
    throwIfAborted(run.signal);
    await assertNotInUse(run, p, p.lv);
    run.phase('swap', `swapping ${p.vg}/${p.temp!.newLv} in for ${lvName(p)} (the old one becomes ${p.vg}/${p.temp!.oldLv})`);
    await run.lvm.rename({ vg: p.vg, lv: p.lv }, p.temp!.oldLv);
    try {
      run.lvs.set(p.target, await run.lvm.rename({ vg: p.vg, lv: p.temp!.newLv }, p.lv));
    } catch (e) {
      await run.lvm.rename({ vg: p.vg, lv: p.temp!.oldLv }, p.lv).catch(() => undefined);
      throw e;
    }
    run.swapped.push(p);
    await run.lvm.deleteTags({ vg: p.vg, lv: p.lv }, [RESTORE_LV_TAG]).catch(() =>
      run.emit({
        type: 'warning',
        domain: run.name,
        message: `could not remove the tag ${RESTORE_LV_TAG} from ${lvName(p)} (lvchange --deltag ${RESTORE_LV_TAG} ${lvName(p)})`,
      }),
    );
  }
}

/** Undefines the replaced domains and defines the restored one (disks pointed at their LVs; a copy's identity). */
async function defineRestored(run: RestoreRun): Promise<Domain> {
  const { plan } = run;
  const diskPaths: Record<string, string> = {};
  for (const p of plan.disks) if (p.moved || p.toBlock) diskPaths[p.target] = run.lvs.get(p.target)!.path;
  const xml = rewriteDomainXml(run.planned.domainXml, {
    diskPaths,
    ...(plan.domain.copy
      ? {
          name: run.name,
          uuid: plan.domain.uuid,
          newMac: run.ctx.newMac ?? randomMac,
          removeDisks: plan.droppedDisks,
          freshNvram: true,
        }
      : {}),
  }).xml;
  run.phase('define', `defining domain ${run.name}`);
  for (const r of plan.replace) await undefineDomain(run.hv, r);
  let dom: Domain;
  try {
    dom = await run.hv.defineDomain(xml);
  } catch (e) {
    await redefine(run.hv, run.replacedXml);
    throw e;
  }
  run.defined = true;
  run.diskPaths = diskPaths;
  return dom;
}

/** Removes the swapped-out old LVs (their data is superseded by the defined domain's); returns those it could not. */
async function removeSwappedOut(run: RestoreRun): Promise<string[]> {
  const left: string[] = [];
  for (const p of run.swapped) {
    const old = { vg: p.vg, lv: p.temp!.oldLv };
    run.phase('cleanup', `removing the old LV ${lvName(old)}`);
    try {
      await run.lvm.remove(old, { force: true, missingOk: true });
    } catch (e) {
      left.push(lvName(old));
      run.emit({ type: 'warning', domain: run.name, message: `could not remove the old LV ${lvName(old)}: ${(e as Error).message}; lvremove it` });
    }
  }
  return left;
}

/**
 * libvirt caches each pool's volumes: after LVs were created or swapped behind
 * its back, it would still show the old LVs (old keys, a temporary name) and
 * miss the new ones, which a `<disk type='volume'>` needs to start. Refreshes
 * the pool of each VG written to, if libvirt has one; a failure is a warning.
 */
async function refreshPools(run: RestoreRun): Promise<void> {
  const vgs = new Set(run.plan.disks.filter((p) => p.action !== 'overwrite').map((p) => p.vg));
  for (const vg of vgs) {
    try {
      await run.hv.refreshStoragePoolsAt(`/dev/${vg}`);
    } catch (e) {
      run.emit({
        type: 'warning',
        domain: run.name,
        message: `could not refresh libvirt's storage pool of ${vg}: ${(e as Error).message}; virsh pool-refresh it`,
      });
    }
  }
}

/**
 * Undoes what can be undone after a failure before the define: swaps the
 * names back, removes the LVs this restore made, puts back the definitions
 * it removed, and starts a replaced domain again when it was running and its
 * disks were not written in place. Returns the error to throw.
 */
async function undoBeforeDefine(run: RestoreRun, e: unknown): Promise<unknown> {
  run.phase('cleanup', 'restore failed: cleaning up');
  const parts: string[] = [];
  for (const p of [...run.swapped].reverse()) {
    try {
      await run.lvm.rename({ vg: p.vg, lv: p.lv }, p.temp!.newLv);
      await run.lvm.rename({ vg: p.vg, lv: p.temp!.oldLv }, p.lv);
    } catch {
      parts.push(`could not swap ${lvName(p)} back: its old data is in ${p.vg}/${p.temp!.oldLv} (lvrename it back)`);
    }
  }
  const removed: string[] = [];
  const kept: string[] = [];
  for (const c of [...run.created].reverse()) {
    try {
      const now = await run.lvm.find({ vg: c.vg, lv: c.lv });
      if (now !== null && now.uuid === c.uuid) await run.lvm.remove({ vg: c.vg, lv: c.lv }, { force: true });
      removed.push(lvName(c));
    } catch {
      kept.push(lvName(c));
    }
  }
  const lost = run.replacedXml.size > 0 ? await redefine(run.hv, run.replacedXml) : [];
  const restarted = run.overwritten.length === 0 ? await restartReplaced(run, lost) : [];
  if (isAbortError(e)) return e;
  const cause = e as Error;
  if (removed.length > 0) parts.push(`removed the LVs it had created (${removed.join(', ')})`);
  if (kept.length > 0) parts.push(`could not remove the LVs it created: ${kept.join(', ')} (lvremove them)`);
  const { overwritten } = run;
  if (overwritten.length > 0)
    parts.push(`${overwritten.join(', ')} ${overwritten.length > 1 ? 'were' : 'was'} (partly) overwritten in place: the old data there is gone`);
  else if (run.plan.disks.some((p) => p.action === 'swap')) parts.push('the existing LVs are as they were');
  const back = run.replaced.filter((r) => !lost.includes(r.name));
  for (const r of back) {
    parts.push(
      `domain ${r.name} is defined as before` +
        (restarted.includes(r.name) ? ' and running again (a cold boot: its memory was lost when it was stopped)' : r.destroy ? ' (shut off)' : ''),
    );
  }
  if (lost.length > 0) parts.push(`could not define ${lost.join(', ')} again (virsh define its XML by hand)`);
  return new RestoreError(
    `${cause.message}; restore of ${run.name} stopped before defining it${parts.length > 0 ? `: ${parts.join('; ')}` : ', nothing was changed'}`,
    'KVMBAK_RESTORE_FAILED',
    { set: run.plan.set, domain: run.name, createdLvs: kept, removedLvs: removed, overwrittenLvs: overwritten, defined: false },
    { cause: e },
  );
}

/** Starts again the replaced domains this restore stopped (their disks are intact); returns the names started. */
async function restartReplaced(run: RestoreRun, lost: string[]): Promise<string[]> {
  const started: string[] = [];
  for (const r of run.replaced.filter((x) => x.destroy && !lost.includes(x.name))) {
    try {
      const dom = await run.hv.lookupDomain(r.uuid);
      try {
        if ((await dom.info()).state === 'shutoff') await dom.start();
        started.push(r.name);
      } finally {
        dom.free();
      }
    } catch {
      // reported as shut off
    }
  }
  return started;
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

/** After the define: removes the swapped-out LVs, then resumes from the memory state, starts, or leaves shut off. */
async function bringUp(run: RestoreRun, dom: Domain): Promise<RestoreResult> {
  const { plan, options } = run;
  const name = run.name;
  const m = run.planned.manifest.memory;
  const leftoverLvs = await removeSwappedOut(run);
  await refreshPools(run);
  let memoryRestored = false;
  let started = false;
  try {
    if (plan.run === 'resume' || plan.run === 'resume-paused') {
      run.phase('resume', `resuming ${name} from its memory state`);
      const memoryFile = run.memoryFile;
      // Disks moved: the XML saved inside the state gets the same new disk sources
      // (libvirt checks it against the saved one, so it must start from that one).
      const xml = plan.memoryXml
        ? rewriteDomainXml(await run.hv.saveImageXml(memoryFile, { secure: true }), { diskPaths: run.diskPaths }).xml
        : undefined;
      await run.hv.restoreDomain(memoryFile, {
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
          : m !== null && isChunkedMemory(m)
            ? `rebuild memory.state from ${m.chunks.file} (see the README's by-hand restore) and virsh restore it, or start it from its disks (virsh start ${name})`
            : `resume it by hand (virsh restore ${resolve(plan.set, MEMORY_FILE)}) or start it from its disks (virsh start ${name})`;
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
    disks: run.results,
    replaced: run.replaced,
    memoryRestored,
    started,
    stateAfter,
    leftoverLvs,
    seconds: (performance.now() - run.t0) / 1000,
  };
}
