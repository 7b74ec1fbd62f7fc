/**
 * backup(): check options → lock → recover the domain's leftovers → plan →
 * set + journal → window (hold, snapshot, release) → archive (watching the
 * snapshots) → remove snapshots → commit. Every exit path leaves the VM as
 * it was, no snapshot behind, and either a complete set or none.
 */
import { existsSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortError, KvmbakError, isKvmbakError, throwIfAborted } from '../errors.js';
import { type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { KVMBAK_BASE_TAG, Lvm } from '../lvm/index.js';
import { removeBaseIfOurs } from './bases.js';
import { type PackResult, ReadThrottle, packImage } from '../archive/index.js';
import { type ChunkStore } from '../chunks/index.js';
import {
  DOMAIN_XML_FILE,
  MEMORY_CHUNKS_FILE,
  MEMORY_FILE,
  isChunkedMemory,
  manifestFormatFor,
  type Manifest,
  type ManifestChunks,
  type ManifestDisk,
  type ManifestDomainState,
} from '../manifest/index.js';
import {
  type BackupSetFiles,
  type DomainLock,
  type Journal,
  type WrittenFile,
  acquireLock,
  commitSet,
  createBackupSet,
  deleteSet,
  formatSetId,
  openChunkStore,
  openJournal,
  removeEmptyDomainDir,
  storeChunked,
  storeChunkedDelta,
  processOwner,
  sha256File,
} from '../store/index.js';
import { toolVersion } from '../version.js';
import { DEFAULT_AGENT_TIMEOUT_SECONDS, checkBackupOptions } from './options.js';
import { type PlannedBackup, assertDestUsable, domainNameOf, planBackup } from './plan.js';
import { handOverJournal, ownerTag, recoverDomain } from './recover.js';
import { ThinDeltaError, thinChangedChunks } from './thin-delta.js';
import type {
  BackupDiskResult,
  BackupHookContext,
  BackupOptions,
  BackupPhase,
  BackupPlan,
  BackupProgress,
  BackupResult,
  PlannedDisk,
} from './types.js';
import { SnapshotWatcher, type WatchedSnapshot } from './watch.js';
import { type LiveSnapshots, VmNotResumedError, type WindowResult, removeSnapshots, runWindow } from './window.js';

/** Internal knobs (tests inject these). */
export interface BackupContext {
  /** Reuse an open connection instead of opening `uri`. */
  hypervisor?: Hypervisor;
  lvm?: Lvm;
  /**
   * Pass VIR_DOMAIN_SAVE_BYPASS_CACHE (default true; dropped with a warning
   * when the driver rejects it, as libvirt's test driver does).
   */
  bypassCache?: boolean;
  /** Delay between the two tries of bringing a VM back or removing a snapshot (ms, default 1000). */
  retryDelayMs?: number;
  /** How often job statistics are read while the memory is saved (ms, default 500). */
  saveProgressIntervalMs?: number;
  now?: () => Date;
}

async function withConnection<T>(uri: string | undefined, ctx: BackupContext, fn: (hv: Hypervisor, lvm: Lvm) => Promise<T>): Promise<T> {
  const hv = ctx.hypervisor ?? (await openHypervisor(uri));
  const lvm = ctx.lvm ?? new Lvm();
  try {
    return await fn(hv, lvm);
  } finally {
    if (ctx.hypervisor === undefined) hv.close();
  }
}

function plan(hv: Hypervisor, lvm: Lvm, options: Omit<BackupOptions, 'dest'> & { dest?: string }, runId: string): Promise<PlannedBackup> {
  return planBackup(hv, lvm, {
    domainName: options.domain,
    ...(options.dest !== undefined ? { dest: options.dest } : {}),
    ...(options.mode !== undefined ? { mode: options.mode } : {}),
    ...(options.snapshotSize !== undefined ? { snapshotSize: options.snapshotSize } : {}),
    ...(options.exclude !== undefined ? { exclude: options.exclude } : {}),
    ...(options.format !== undefined ? { format: options.format } : {}),
    ...(options.full !== undefined ? { full: options.full } : {}),
    runId,
  });
}

/**
 * What a backup of `options.domain` would do — every precondition checked,
 * nothing touched (`kvmbak inspect`, `kvmbak backup --dry-run`).
 */
export async function inspectBackup(options: Omit<BackupOptions, 'dest'> & { dest?: string }, ctx: BackupContext = {}): Promise<BackupPlan> {
  checkBackupOptions(options as BackupOptions, false);
  return withConnection(options.uri, ctx, async (hv, lvm) => {
    const planned = await plan(hv, lvm, options, formatSetId(ctx.now?.() ?? new Date()));
    planned.domain.free();
    return planned.plan;
  });
}

/** Backs up one domain. See the module comment for the guarantees. */
export async function backup(options: BackupOptions, ctx: BackupContext = {}): Promise<BackupResult> {
  checkBackupOptions(options);
  throwIfAborted(options.signal);
  return withConnection(options.uri, ctx, (hv, lvm) => runBackup(hv, lvm, options, ctx));
}

/** One run: its options, its clock and how it reports. */
interface Run {
  hv: Hypervisor;
  lvm: Lvm;
  options: BackupOptions;
  ctx: BackupContext;
  startedAt: Date;
  runId: string;
  t0: number;
  retryDelayMs: number;
  emit: (e: BackupProgress) => void;
  phase: (p: BackupPhase, message: string) => void;
  warn: (message: string) => void;
}

function startRun(hv: Hypervisor, lvm: Lvm, options: BackupOptions, ctx: BackupContext): Run {
  const startedAt = ctx.now?.() ?? new Date();
  const emit = (e: BackupProgress): void => {
    try {
      options.onProgress?.(e);
    } catch {
      // A progress consumer must never break a backup.
    }
  };
  return {
    hv,
    lvm,
    options,
    ctx,
    startedAt,
    runId: formatSetId(startedAt),
    t0: performance.now(),
    retryDelayMs: ctx.retryDelayMs ?? 1000,
    emit,
    phase: (p, message) => emit({ type: 'phase', domain: options.domain, phase: p, message }),
    warn: (message) => emit({ type: 'warning', domain: options.domain, message }),
  };
}

async function runBackup(hv: Hypervisor, lvm: Lvm, options: BackupOptions, ctx: BackupContext): Promise<BackupResult> {
  const run = startRun(hv, lvm, options, ctx);
  run.phase('plan', `planning the backup of ${options.domain}`);
  if (options.dryRun) {
    // A dry run touches nothing: no lock, no recovery of earlier runs.
    const planned = await plan(hv, lvm, options, run.runId);
    planned.domain.free();
    return dryRunResult(planned.plan);
  }
  const dest = await assertDestUsable(options.dest);
  const name = await domainNameOf(hv, options.domain);
  const domainDirExisted = existsSync(join(dest, name));
  const lock: DomainLock = await acquireLock(dest, name, 'backup');
  try {
    // Leftovers first: a run killed in its window may have left the VM saved and shut
    // off, or paused. Its state now decides the plan (mode, state before).
    await recoverLeftovers(run, dest, name);
    throwIfAborted(options.signal);
    const planned = await plan(hv, lvm, { ...options, dest }, run.runId);
    try {
      throwIfAborted(options.signal);
      return await execute(run, planned, Math.round(performance.now() - run.t0));
    } finally {
      planned.domain.free();
    }
  } finally {
    await lock.release();
    // A run that stopped before making anything leaves no empty DEST/DOMAIN behind.
    if (!domainDirExisted) await removeEmptyDomainDir(dest, name);
  }
}

/** Finishes or undoes an interrupted earlier run of this domain; throws when one cannot be. */
async function recoverLeftovers(run: Run, dest: string, name: string): Promise<void> {
  const recovered = await recoverDomain({
    dest,
    domain: name,
    hv: run.hv,
    lvm: run.lvm,
    holdsLock: true,
    agentTimeoutSeconds: run.options.agentTimeoutSeconds ?? DEFAULT_AGENT_TIMEOUT_SECONDS,
    retryDelayMs: run.retryDelayMs,
    onProgress: (e) => (e.type === 'warning' ? run.warn(e.message) : run.phase('recover', e.message)),
  });
  for (const r of recovered) {
    for (const a of r.actions) run.warn(`recovered an interrupted backup (${r.setId}): ${a}`);
  }
  const unfinished = recovered.filter((r) => r.error !== undefined);
  if (unfinished.length > 0) {
    throw new KvmbakError(
      `an interrupted backup of ${name} could not be undone (${unfinished.map((r) => `${r.setId}: ${r.error}`).join('; ')}); ` +
        `fix that and run kvmbak recover (\`dest\` ${dest}) before backing ${name} up again`,
      'KVMBAK_RECOVER_FAILED',
    );
  }
}

function dryRunResult(plan: BackupPlan): BackupResult {
  return {
    domain: plan.domain,
    uuid: plan.uuid,
    setPath: '',
    mode: plan.mode,
    stateBefore: plan.stateBefore,
    stateAfter: plan.stateBefore,
    downtimeMs: null,
    memoryBytes: null,
    format: plan.format,
    disks: [],
    skipped: plan.skipped,
    storedBytes: 0,
    timings: { planMs: 0, windowMs: 0, archiveMs: 0, totalMs: 0 },
    dryRun: true,
    plan,
  };
}

/** What a run has made so far (what its undo has to take back). */
interface Made {
  files: BackupSetFiles | null;
  journal: Journal | null;
  /** Snapshots that may exist. */
  live: LiveSnapshots;
  /** The VM is held (VmNotResumedError): the set keeps its memory state for recover. */
  vmHeld: boolean;
  /** A thin pool's metadata snapshot may still be reserved: the journal is left for recover. */
  metadataHeld: boolean;
}

async function execute(run: Run, planned: PlannedBackup, planMs: number): Promise<BackupResult> {
  const made: Made = { files: null, journal: null, live: new Map(), vmHeld: false, metadataHeld: false };
  let store: ChunkStore | null = null;
  try {
    const { files, journal, domainXml } = await prepareSet(run, planned, made);
    if (planned.plan.format === 'chunks') {
      // Opened (and announced as a writer) before the VM is held: a running garbage collection
      // is waited for here, never inside the window.
      store = await openChunkStore(planned.plan.dest!, run.options.level !== undefined ? { level: run.options.level } : {});
      await store.beginWriting(run.options.signal);
    }
    const hookCtx: BackupHookContext = { domain: planned.plan.domain, mode: planned.plan.mode, setPath: files.set.path };
    await run.options.hooks?.beforeHold?.(hookCtx);
    throwIfAborted(run.options.signal);
    const window = await holdAndSnapshot(run, planned, files, journal, made, hookCtx);
    const ta = performance.now();
    const disks = await archiveDisks(run, planned, files, journal, window, store, made);
    let archiveMs = Math.round(performance.now() - ta);
    const kept = await keepBases(run, planned, disks, made.live);
    await removeRunSnapshots(run, made.live, journal, kept);
    let memory: Manifest['memory'] = null;
    if (window.memorySaved) {
      const tm = performance.now();
      memory = await archiveMemory(run, files, store);
      archiveMs += Math.round(performance.now() - tm);
    }
    const result = await commit(run, planned, files, journal, window, disks, memory, domainXml, { planMs, archiveMs });
    // The set owns its bases now; the bases they replace go.
    for (const target of kept.keys()) made.live.delete(target);
    await removeOldBases(run, planned, kept);
    return result;
  } catch (e) {
    await undo(run, made, e);
    throw e;
  } finally {
    await store?.close().catch(() => undefined);
  }
}

/**
 * The memory state: as it is (format image), or (format chunks) chunked into the store, then
 * memory.state removed from the set. Only once the VM runs again: until then the file is what
 * brings the VM back.
 */
async function archiveMemory(run: Run, files: BackupSetFiles, store: ChunkStore | null): Promise<Manifest['memory']> {
  if (store === null) {
    const h = await sha256File(files.memoryFile);
    return { file: MEMORY_FILE, bytes: h.bytes, sha256: h.sha256 };
  }
  run.phase('archive', 'storing the memory state in the chunk store');
  const { chunks } = await storeChunked(store, files.memoryFile, files.set, files.memoryChunkList.file, {
    ...(run.options.signal !== undefined ? { signal: run.options.signal } : {}),
    ...(run.options.threads !== undefined ? { concurrency: run.options.threads } : {}),
  });
  await unlink(files.memoryFile);
  return { bytes: chunks.rawBytes, sha256: chunks.rawSha256!, chunks: { ...chunks, file: MEMORY_CHUNKS_FILE } };
}

/** The set folder, the journal (its `planned` step), domain.xml. */
async function prepareSet(
  run: Run,
  planned: PlannedBackup,
  made: Made,
): Promise<{ files: BackupSetFiles; journal: Journal; domainXml: WrittenFile }> {
  const { plan, runTag } = planned;
  run.phase('prepare', `creating the backup set in ${plan.dest}`);
  const files = await createBackupSet(plan.dest!, plan.domain, { now: run.startedAt });
  made.files = files;
  const journal = await openJournal(files.set, 'backup');
  made.journal = journal;
  await journal.record({
    step: 'planned',
    domain: plan.domain,
    uuid: plan.uuid,
    uri: plan.uri,
    mode: plan.mode,
    stateBefore: plan.stateBefore as ManifestDomainState,
    setPath: files.set.path,
    snapshots: plan.disks.map((d) => ({ vg: d.vg, lv: d.lv, name: d.snapshotName })),
    runTag,
  });
  const domainXml = await files.writeDomainXml(planned.domainXml);
  throwIfAborted(run.options.signal);
  return { files, journal, domainXml };
}

/** Awaits a hook that must not change the outcome: a throw is a warning. */
async function afterResume(run: Run, hookCtx: BackupHookContext): Promise<void> {
  try {
    await run.options.hooks?.afterResume?.(hookCtx);
  } catch (e) {
    run.warn(`the afterResume hook failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The window; then (whenever the VM runs again) the afterResume hook. */
async function holdAndSnapshot(
  run: Run,
  planned: PlannedBackup,
  files: BackupSetFiles,
  journal: Journal,
  made: Made,
  hookCtx: BackupHookContext,
): Promise<WindowResult> {
  const { plan } = planned;
  let window: WindowResult;
  try {
    window = await runWindow({
      hv: run.hv,
      lvm: run.lvm,
      domain: planned.domain,
      journal,
      mode: plan.mode,
      stateBefore: plan.stateBefore,
      disks: plan.disks,
      origins: planned.origins,
      runTag: planned.runTag,
      ownerTag: ownerTag(processOwner()),
      memoryFile: files.memoryFile,
      live: made.live,
      bypassCache: run.ctx.bypassCache ?? true,
      agentTimeoutSeconds: run.options.agentTimeoutSeconds ?? DEFAULT_AGENT_TIMEOUT_SECONDS,
      quiesceFallback: run.options.quiesceFallback ?? 'none',
      retryDelayMs: run.retryDelayMs,
      onPhase: (p, m) => run.phase(p, m),
      onWarning: run.warn,
      onSaveProgress: (bytesDone, bytesTotal) => run.emit({ type: 'save', domain: plan.domain, bytesDone, bytesTotal }),
      ...(run.ctx.saveProgressIntervalMs !== undefined ? { saveProgressIntervalMs: run.ctx.saveProgressIntervalMs } : {}),
    });
  } catch (e) {
    if (e instanceof VmNotResumedError) made.vmHeld = true;
    else await afterResume(run, hookCtx);
    throw e;
  }
  await afterResume(run, hookCtx);
  return window;
}

interface ArchivedDisk {
  result: BackupDiskResult;
  manifest: ManifestDisk;
}

/** Archives every disk from its snapshot, watching the snapshots; aborts on an invalid one. */
async function archiveDisks(
  run: Run,
  planned: PlannedBackup,
  files: BackupSetFiles,
  journal: Journal,
  window: WindowResult,
  store: ChunkStore | null,
  made: Made,
): Promise<ArchivedDisk[]> {
  const { plan } = planned;
  const signal = run.options.signal;
  const watched: WatchedSnapshot[] = plan.disks.map((d) => {
    const s = window.snapshots.get(d.target)!;
    return { target: d.target, vg: s.vg, lv: s.lv, size: s.size, peakPercent: 0, extendedTo: null, done: false, thin: d.thin };
  });
  const archiveAbort = new AbortController();
  const onOuterAbort = (): void => archiveAbort.abort(signal?.reason);
  signal?.addEventListener('abort', onOuterAbort, { once: true });
  if (signal?.aborted) onOuterAbort();
  const snapPercent = new Map<string, number>();
  const watcher = new SnapshotWatcher({
    lvm: run.lvm,
    snapshots: watched,
    intervalMs: run.options.watchIntervalMs ?? 1500,
    threshold: run.options.extendThreshold ?? 80,
    onExtended: (s, from, percent) =>
      run.emit({ type: 'snapshot-extended', domain: plan.domain, target: s.target, fromBytes: from, toBytes: s.size, percent }),
    onWarning: run.warn,
    onInvalid: (err) => archiveAbort.abort(err),
    onUsage: (s, p) => snapPercent.set(s.target, p),
  });
  const out: ArchivedDisk[] = [];
  watcher.start();
  try {
    for (const d of plan.disks) {
      const snap = window.snapshots.get(d.target)!;
      const w = watched.find((x) => x.target === d.target)!;
      const report = (bytesDone: number, bytesTotal: number | undefined, rate: number): void =>
        run.emit({
          type: 'archive',
          domain: plan.domain,
          target: d.target,
          bytesDone,
          bytesTotal,
          rate,
          snapshotPercent: snapPercent.get(d.target),
        });
      if (store === null) {
        const image = files.image(d.target);
        run.phase('archive', `archiving ${d.target} (${snap.path})`);
        const packed = await readSnapshot(run, watcher, archiveAbort.signal, (signal) =>
          packSnapshot(run, snap.path, image.path, signal, (p) => report(p.bytesDone, p.bytesTotal, p.rate)),
        );
        w.done = true;
        await journal.record({ step: 'archived', target: d.target, file: image.file });
        out.push(describeDisk(d, image.file, packed, w));
      } else {
        const list = files.chunkList(d.target);
        const t0 = performance.now();
        const onProgress = (p: { bytesDone: number; bytesTotal?: number | undefined }): void =>
          report(p.bytesDone, p.bytesTotal, p.bytesDone / Math.max((performance.now() - t0) / 1000, 1e-3));
        if (d.readNote !== undefined) run.warn(d.readNote);
        const read = <T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> => readSnapshot(run, watcher, archiveAbort.signal, work);
        let stored: { chunks: ManifestChunks } | null =
          d.readPath === 'thin-delta'
            ? await storeThinDelta(run, {
                disk: d,
                snapshot: snap,
                store,
                files,
                journal,
                file: list.file,
                made,
                read,
                onProgress,
                signal: archiveAbort.signal,
              })
            : null;
        if (stored === null) {
          run.phase('archive', `storing ${d.target} (${snap.path}) in the chunk store`);
          stored = await read((signal) =>
            withSnapshotSource(run, snap.path, signal, (source) =>
              storeChunked(store, source, files.set, list.file, {
                signal,
                size: d.lvSize,
                ...(run.options.threads !== undefined ? { concurrency: run.options.threads } : {}),
                onProgress,
              }),
            ),
          );
        }
        w.done = true;
        await journal.record({ step: 'archived', target: d.target, file: list.file });
        out.push(describeChunkedDisk(d, stored.chunks, (performance.now() - t0) / 1000, w));
      }
    }
  } finally {
    await watcher.stop();
    signal?.removeEventListener('abort', onOuterAbort);
  }
  return out;
}

interface ThinDeltaRead {
  disk: PlannedDisk;
  snapshot: { vg: string; lv: string; path: string };
  store: ChunkStore;
  files: BackupSetFiles;
  journal: Journal;
  /** The disk's chunk list in the set. */
  file: string;
  made: Made;
  /** Reads the snapshot as readSnapshot does (watched, the real cause of a failed read reported). */
  read: <T>(work: (signal: AbortSignal) => Promise<T>) => Promise<T>;
  onProgress: (p: { bytesDone: number; bytesTotal?: number | undefined }) => void;
  signal: AbortSignal;
}

/**
 * A thin disk with a base: thin_delta names the chunks that changed since the previous run, and
 * only those are read; the other ids come from the previous set's list. Returns null (after one
 * warning line) when that path cannot be taken, so the caller reads the disk whole; throws only
 * what a full read could not fix (a cancel, a metadata snapshot left held, a bad snapshot).
 */
async function storeThinDelta(run: Run, t: ThinDeltaRead): Promise<Awaited<ReturnType<typeof storeChunkedDelta>> | null> {
  const d = t.disk;
  const delta = d.delta!;
  const fallback = (reason: string): null => {
    run.warn(`${d.target}: reading the whole disk: ${reason}`);
    return null;
  };
  // The previous list must be the one its set recorded (the next step trusts every id in it).
  const listed = await sha256File(delta.previousList, { signal: t.signal }).catch((e: unknown) => e as Error);
  if (listed instanceof Error) return fallback(`cannot read the previous chunk list ${delta.previousList} (${listed.message})`);
  if (listed.sha256 !== delta.previousListSha256) return fallback(`the previous chunk list ${delta.previousList} differs from its manifest`);
  run.phase('archive', `asking thin pool ${d.vg}/${d.thinPool} which chunks of ${d.target} changed since ${delta.base.lv}`);
  let changed: number[];
  try {
    changed = (
      await thinChangedChunks({
        lvm: run.lvm,
        journal: t.journal,
        base: { vg: delta.base.vg, lv: delta.base.lv },
        current: { vg: t.snapshot.vg, lv: t.snapshot.lv },
        diskSize: d.lvSize,
        signal: t.signal,
      })
    ).changed;
  } catch (e) {
    if (!(e instanceof ThinDeltaError)) throw e;
    if (e.metadataHeld) {
      t.made.metadataHeld = true;
      throw e;
    }
    return fallback(e.message);
  }
  run.phase('archive', `storing the ${changed.length} changed chunks of ${d.target} (${t.snapshot.path}) in the chunk store`);
  try {
    return await t.read((signal) =>
      withSnapshotSource(run, t.snapshot.path, signal, (source) =>
        storeChunkedDelta(t.store, source, t.files.set, t.file, {
          previous: delta.previousList,
          changed,
          size: d.lvSize,
          signal,
          ...(run.options.threads !== undefined ? { concurrency: run.options.threads } : {}),
          onProgress: t.onProgress,
        }),
      ),
    );
  } catch (e) {
    if (isKvmbakError(e) && (e.code === 'KVMBAK_CHUNK_DISK_MISMATCH' || e.code === 'KVMBAK_CHUNK_MISSING')) return fallback(e.message);
    throw e;
  }
}

/** A thin snapshot kept as the next run's base. */
interface KeptBase {
  vg: string;
  lv: string;
}

/**
 * Format chunks: every thin disk's snapshot is kept as the base of the next run's thin_delta —
 * its run and owner tags swapped for `kvmbak-base` in one lvchange, its thin id recorded in the
 * manifest, then deactivated. Until the commit it stays in `live` (a failure removes it, and so
 * does recover while the set is not committed). A snapshot that cannot be kept is removed like any
 * other (warning).
 */
async function keepBases(run: Run, planned: PlannedBackup, disks: ArchivedDisk[], live: LiveSnapshots): Promise<Map<string, KeptBase>> {
  const kept = new Map<string, KeptBase>();
  if (planned.plan.format !== 'chunks') return kept;
  for (const disk of disks) {
    const d = planned.plan.disks.find((x) => x.target === disk.manifest.target)!;
    const snap = live.get(d.target);
    if (!d.thin || snap === undefined || disk.manifest.chunks === undefined) continue;
    try {
      const { thinId } = await run.lvm.thinVolume(snap);
      await run.lvm.changeTags(snap, { remove: [planned.runTag, ownerTag(processOwner())], add: [KVMBAK_BASE_TAG] });
      disk.manifest.chunks.base = { lv: snap.lv, thinId };
      kept.set(d.target, { vg: snap.vg, lv: snap.lv });
    } catch (e) {
      run.warn(
        `${d.target}: cannot keep ${snap.vg}/${snap.lv} as the base of the next run (${(e as Error).message}); the next run reads the disk whole`,
      );
      continue;
    }
    try {
      // thin_delta reads the base through the pool's metadata only: its device can go (one dm
      // device less per thin disk, and the base is then as it is after the host's next boot)
      await run.lvm.deactivate(snap);
    } catch (e) {
      run.warn(
        `${d.target}: could not deactivate the base ${snap.vg}/${snap.lv} (${(e as Error).message}); it stays active, which costs nothing but a device`,
      );
    }
  }
  return kept;
}

/**
 * After the commit: the bases the previous set recorded for the disks that now have a new one.
 * Only an LV still tagged `kvmbak-base` with the recorded thin id goes; a failure is a warning
 * (it costs pool space, not correctness: no set uses it any more).
 */
async function removeOldBases(run: Run, planned: PlannedBackup, kept: ReadonlyMap<string, KeptBase>): Promise<void> {
  for (const [target, now] of kept) {
    const old = planned.previous?.manifest.disks.find((x) => x.target === target)?.chunks?.base;
    const vg = planned.plan.disks.find((x) => x.target === target)!.vg;
    if (old === undefined || old.lv === now.lv) continue;
    try {
      const removed = await removeBaseIfOurs(run.lvm, { vg, lv: old.lv, thinId: old.thinId });
      if (removed !== null) run.phase('cleanup', `removed the previous base ${removed}`);
    } catch (e) {
      run.warn(`could not remove the previous base ${vg}/${old.lv} (${(e as Error).message}); remove it with lvremove ${vg}/${old.lv}`);
    }
  }
}

/**
 * Reads one snapshot through `work`; the snapshot must still be valid once every block was read.
 * An invalid snapshot reads as EIO or aborts the read: the real cause is reported.
 */
async function readSnapshot<T>(run: Run, watcher: SnapshotWatcher, signal: AbortSignal, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await work(signal);
  } catch (e) {
    const invalid = watcher.failure ?? (await watcher.check());
    if (invalid !== null) throw invalid;
    if (signal.aborted && run.options.signal?.aborted) throw new AbortError('backup cancelled', { cause: e });
    throw e;
  }
  const invalid = await watcher.check({ strict: true });
  if (invalid !== null) throw invalid;
  return result;
}

/** Format image: the snapshot into one multi-member gzip file. */
function packSnapshot(
  run: Run,
  from: string,
  to: string,
  signal: AbortSignal,
  onProgress: (p: { bytesDone: number; bytesTotal?: number | undefined; rate: number }) => void,
): Promise<PackResult> {
  const o = run.options;
  return packImage(from, to, {
    ...(o.level !== undefined ? { level: o.level } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.chunkSize !== undefined ? { chunkSize: o.chunkSize } : {}),
    ...(o.bwlimit !== undefined ? { bwlimit: o.bwlimit } : {}),
    signal,
    onProgress,
  });
}

/**
 * Format chunks: runs `use` on the snapshot's source — its path, or with `bwlimit` an open handle
 * whose reads (sequential or positional) first wait for the cap, closed once `use` is done. The
 * full read and the thin-delta read share it, so one cap holds for both.
 */
async function withSnapshotSource<T>(run: Run, path: string, signal: AbortSignal, use: (source: string | FileHandle) => Promise<T>): Promise<T> {
  const limit = run.options.bwlimit;
  if (limit === undefined) return use(path);
  const throttle = new ReadThrottle(limit);
  const fh = await open(path, 'r');
  try {
    // the chunk readers only call read() on a handle they are given (and never close it)
    const throttled = {
      read: async (buf: Uint8Array, offset: number, length: number, position: number | null) => {
        await throttle.take(length, signal);
        return fh.read(buf, offset, length, position);
      },
    };
    return await use(throttled as unknown as FileHandle);
  } finally {
    await fh.close();
  }
}

/** What the manifest keeps of a disk besides how it is stored. */
function diskFacts(d: PlannedDisk, w: WatchedSnapshot): Omit<ManifestDisk, 'image' | 'chunks'> {
  return {
    target: d.target,
    source: d.source,
    vg: d.vg,
    lv: d.lv,
    pool: d.pool,
    capacity: d.capacity,
    allocation: d.allocation,
    physical: d.physical,
    lvSize: d.lvSize,
    lvUuid: d.lvUuid,
    thin: d.thin,
    thinPool: d.thinPool,
    snapshot: {
      name: d.snapshotName,
      size: d.thin ? null : d.snapshotSize,
      peakPercent: d.thin ? null : w.peakPercent,
      ...(w.extendedTo !== null ? { extendedTo: w.extendedTo } : {}),
    },
  };
}

function snapshotFigures(d: PlannedDisk, w: WatchedSnapshot): Pick<BackupDiskResult, 'snapshotSize' | 'snapshotPeakPercent' | 'snapshotExtendedTo'> {
  return {
    snapshotSize: d.thin ? null : w.size,
    snapshotPeakPercent: d.thin ? null : w.peakPercent,
    snapshotExtendedTo: w.extendedTo,
  };
}

function describeChunkedDisk(d: PlannedDisk, chunks: ManifestChunks, seconds: number, w: WatchedSnapshot): ArchivedDisk {
  return {
    result: {
      target: d.target,
      lvPath: d.lvPath,
      format: 'chunks',
      file: chunks.file,
      rawBytes: chunks.rawBytes,
      rawSha256: chunks.rawSha256,
      storedBytes: chunks.addedBytes,
      fileSha256: chunks.listSha256,
      zeroChunks: chunks.zeroChunks,
      chunks: { total: chunks.chunks, new: chunks.newChunks, read: chunks.chunksRead, method: chunks.read },
      ...snapshotFigures(d, w),
      seconds,
    },
    manifest: { ...diskFacts(d, w), chunks },
  };
}

function describeDisk(d: PlannedDisk, file: string, packed: PackResult, w: WatchedSnapshot): ArchivedDisk {
  return {
    result: {
      target: d.target,
      lvPath: d.lvPath,
      format: 'image',
      file,
      rawBytes: packed.bytes,
      rawSha256: packed.sha256,
      storedBytes: packed.storedBytes,
      fileSha256: packed.fileSha256,
      zeroChunks: packed.zeroChunks,
      ...snapshotFigures(d, w),
      seconds: packed.seconds,
    },
    manifest: {
      ...diskFacts(d, w),
      image: {
        file,
        rawBytes: packed.bytes,
        rawSha256: packed.sha256,
        storedBytes: packed.storedBytes,
        fileSha256: packed.fileSha256,
        chunkSize: packed.chunkSize,
        members: packed.members,
        zeroChunks: packed.zeroChunks,
      },
    },
  };
}

/** Removes the run's snapshots but the bases kept; `snapshots-removed` is journaled when none is kept. */
async function removeRunSnapshots(run: Run, live: LiveSnapshots, journal: Journal, kept: ReadonlyMap<string, KeptBase>): Promise<void> {
  run.phase('cleanup', 'removing the snapshots');
  const others: LiveSnapshots = new Map([...live].filter(([target]) => !kept.has(target)));
  const errors = await removeSnapshots(run.lvm, others, run.retryDelayMs);
  for (const target of live.keys()) if (!kept.has(target) && !others.has(target)) live.delete(target);
  if (errors.length > 0) {
    throw new KvmbakError(`could not remove snapshots: ${errors.map((e) => e.message).join('; ')}; run kvmbak recover`, 'KVMBAK_SNAPSHOT_REMOVE');
  }
  // With a base kept, the journal still names it: recover removes it unless the set is committed.
  if (kept.size === 0) await journal.record({ step: 'snapshots-removed' });
}

/** Checksums and the manifest, written last; the journal goes. */
async function commit(
  run: Run,
  planned: PlannedBackup,
  files: BackupSetFiles,
  journal: Journal,
  window: WindowResult,
  disks: ArchivedDisk[],
  memory: Manifest['memory'],
  domainXml: WrittenFile,
  t: { planMs: number; archiveMs: number },
): Promise<BackupResult> {
  const { plan } = planned;
  run.phase('commit', 'writing checksums and the manifest');
  const stateAfter = (await planned.domain.info()).state;
  const timings = { planMs: t.planMs, windowMs: window.windowMs, archiveMs: t.archiveMs, totalMs: Math.round(performance.now() - run.t0) };
  const manifest: Manifest = {
    format: manifestFormatFor({ disks: disks.map((d) => d.manifest), memory }),
    toolVersion: toolVersion(),
    createdAt: new Date().toISOString(),
    host: plan.host,
    libvirtVersion: plan.libvirtVersion,
    uri: plan.uri,
    domain: { name: plan.domain, uuid: plan.uuid, stateBefore: plan.stateBefore as ManifestDomainState },
    mode: window.mode,
    downtimeMs: window.downtimeMs,
    timings,
    memory,
    domainXml: { file: DOMAIN_XML_FILE, sha256: domainXml.sha256 },
    disks: disks.map((d) => d.manifest),
    skipped: plan.skipped,
  };
  await commitSet(files.set, manifest);
  await journal.record({ step: 'committed' });
  await journal.remove();
  run.phase('done', `backup of ${plan.domain} complete: ${files.set.path}`);
  const results = disks.map((d) => d.result);
  return {
    domain: plan.domain,
    uuid: plan.uuid,
    setPath: files.set.path,
    mode: window.mode,
    stateBefore: plan.stateBefore,
    stateAfter,
    downtimeMs: window.downtimeMs,
    memoryBytes: memory?.bytes ?? null,
    format: plan.format,
    disks: results,
    skipped: plan.skipped,
    storedBytes:
      results.reduce((n, d) => n + d.storedBytes, 0) + (memory === null ? 0 : isChunkedMemory(memory) ? memory.chunks.addedBytes : memory.bytes),
    timings,
  };
}

/**
 * After a failure: snapshots go, the partial set goes (unless the VM still
 * needs its saved state). What cannot be undone stays in the journal for
 * kvmbak recover.
 */
async function undo(run: Run, made: Made, e: unknown): Promise<void> {
  await removeSnapshots(run.lvm, made.live, run.retryDelayMs);
  const journal = made.journal;
  if (journal !== null) {
    await journal
      .record({ step: 'failed', message: (e as Error).message, ...(e instanceof KvmbakError ? { code: e.code } : {}) })
      .catch(() => undefined);
  }
  const setGone =
    made.files === null ||
    (!made.vmHeld &&
      (await deleteSet(made.files.set, { dest: made.files.set.dest }).then(
        () => true,
        () => false,
      )));
  if (journal !== null) {
    if (made.live.size === 0) await journal.record({ step: 'snapshots-removed' }).catch(() => undefined);
    if (setGone && made.live.size === 0 && !made.metadataHeld) await journal.remove().catch(() => undefined);
    else handOverJournal(journal);
  }
}
