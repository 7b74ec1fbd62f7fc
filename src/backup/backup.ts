/**
 * backup(): plan → lock → recover leftovers → journal + set → window
 * (quiesce, snapshot, resume) → archive (watching the snapshots) → remove
 * snapshots → commit. Every exit path leaves the VM as it was, no snapshot
 * behind, and either a complete set or none.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortError, ConfigError, KvmbakError, throwIfAborted } from '../errors.js';
import { type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { Lvm } from '../lvm/index.js';
import { packImage } from '../archive/index.js';
import {
  DOMAIN_XML_FILE,
  MANIFEST_FORMAT,
  MEMORY_FILE,
  type Manifest,
  type ManifestDisk,
  type ManifestDomainState,
} from '../manifest/index.js';
import {
  type BackupSet,
  type DomainLock,
  type Journal,
  acquireLock,
  commitSet,
  createSet,
  deleteSet,
  openJournal,
  processOwner,
  setFilePath,
  sha256File,
  writeSetFile,
} from '../store/index.js';
import { toolVersion } from '../version.js';
import { type PlannedBackup, planBackup } from './plan.js';
import { handOverJournal, ownerTag, recoverDomain } from './recover.js';
import type { BackupDiskResult, BackupOptions, BackupPhase, BackupPlan, BackupProgress, BackupResult } from './types.js';
import { SnapshotWatcher, type WatchedSnapshot } from './watch.js';
import { type LiveSnapshots, VmNotResumedError, removeSnapshots, runWindow } from './window.js';
import { formatSetId } from '../store/index.js';

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
  now?: () => Date;
}

function checkOptions(o: BackupOptions, inspect = false): void {
  if (typeof o.domain !== 'string' || o.domain === '') throw new ConfigError('name the domain to back up', 'domain');
  if (!inspect && (typeof o.dest !== 'string' || o.dest === '')) {
    throw new ConfigError('give a destination folder for the backup (--dest DIR)', 'dest');
  }
  if (o.level !== undefined && (!Number.isInteger(o.level) || o.level < 1 || o.level > 9)) {
    throw new ConfigError(`--level ${o.level} is out of range; give a gzip level from 1 to 9`, 'level');
  }
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1)) {
    throw new ConfigError(`--threads ${o.threads} must be a whole number of at least 1`, 'threads');
  }
  if (o.extendThreshold !== undefined && !(o.extendThreshold > 0 && o.extendThreshold < 100)) {
    throw new ConfigError('extendThreshold must be a percentage between 0 and 100', 'extendThreshold');
  }
  if (o.agentTimeoutSeconds !== undefined && !(Number.isInteger(o.agentTimeoutSeconds) && o.agentTimeoutSeconds > 0)) {
    throw new ConfigError('--agent-timeout must be a whole number of seconds above 0', 'agentTimeoutSeconds');
  }
}

async function withConnection<T>(
  uri: string | undefined,
  ctx: BackupContext,
  fn: (hv: Hypervisor, lvm: Lvm) => Promise<T>,
): Promise<T> {
  const hv = ctx.hypervisor ?? (await openHypervisor(uri));
  const lvm = ctx.lvm ?? new Lvm();
  try {
    return await fn(hv, lvm);
  } finally {
    if (ctx.hypervisor === undefined) hv.close();
  }
}

/**
 * What a backup of `options.domain` would do — every precondition checked,
 * nothing touched (`kvmbak inspect`, `kvmbak backup --dry-run`).
 */
export async function inspectBackup(
  options: Omit<BackupOptions, 'dest'> & { dest?: string },
  ctx: BackupContext = {},
): Promise<BackupPlan> {
  checkOptions(options as BackupOptions, true);
  return withConnection(options.uri, ctx, async (hv, lvm) => {
    const runId = formatSetId(ctx.now?.() ?? new Date());
    const planned = await planBackup(hv, lvm, {
      domainName: options.domain,
      ...(options.dest !== undefined ? { dest: options.dest } : {}),
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
      ...(options.snapshotSize !== undefined ? { snapshotSize: options.snapshotSize } : {}),
      ...(options.exclude !== undefined ? { exclude: options.exclude } : {}),
      runId,
    });
    planned.domain.free();
    return planned.plan;
  });
}

/** Backs up one domain. See the module comment for the guarantees. */
export async function backup(options: BackupOptions, ctx: BackupContext = {}): Promise<BackupResult> {
  checkOptions(options);
  throwIfAborted(options.signal);
  return withConnection(options.uri, ctx, (hv, lvm) => runBackup(hv, lvm, options, ctx));
}

async function runBackup(hv: Hypervisor, lvm: Lvm, options: BackupOptions, ctx: BackupContext): Promise<BackupResult> {
  const t0 = performance.now();
  const signal = options.signal;
  const emit = (e: BackupProgress): void => {
    try {
      options.onProgress?.(e);
    } catch {
      // A progress consumer must never break a backup.
    }
  };
  const phase = (p: BackupPhase, message: string): void => emit({ type: 'phase', domain: options.domain, phase: p, message });
  const warn = (message: string): void => emit({ type: 'warning', domain: options.domain, message });

  phase('plan', `planning the backup of ${options.domain}`);
  const startedAt = ctx.now?.() ?? new Date();
  const runId = formatSetId(startedAt);
  const makePlan = (): Promise<PlannedBackup> =>
    planBackup(hv, lvm, {
      domainName: options.domain,
      dest: options.dest,
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
      ...(options.snapshotSize !== undefined ? { snapshotSize: options.snapshotSize } : {}),
      ...(options.exclude !== undefined ? { exclude: options.exclude } : {}),
      runId,
    });
  let planned: PlannedBackup = await makePlan();
  const dest = planned.plan.dest!;
  let lock: DomainLock | null = null;
  try {
    // A dry run touches nothing: no lock, no recovery of earlier runs.
    if (options.dryRun) return dryRunResult(planned.plan);
    const name = planned.plan.domain;
    lock = await acquireLock(dest, name, 'backup');
    // Finish or undo an interrupted earlier run of this domain first.
    phase('recover', `checking for interrupted backups of ${name}`);
    const recovered = await recoverDomain({ dest, domain: name, hv, lvm, holdsLock: true });
    for (const r of recovered) {
      for (const a of r.actions) warn(`recovered an interrupted backup (${r.setId}): ${a}`);
    }
    const unfinished = recovered.filter((r) => r.error !== undefined);
    if (unfinished.length > 0) {
      throw new KvmbakError(
        `an interrupted backup of ${name} could not be undone (${unfinished.map((r) => `${r.setId}: ${r.error}`).join('; ')}); ` +
          `fix that and run kvmbak recover --dest ${dest} before backing ${name} up again`,
        'KVMBAK_RECOVER_FAILED',
      );
    }
    if (recovered.some((r) => r.actions.length > 0)) {
      // The domain may have changed state (e.g. restored from a crashed run's memory state): plan again.
      planned.domain.free();
      planned = await makePlan();
    }
    throwIfAborted(signal);
    const planMs = Math.round(performance.now() - t0);
    return await execute(hv, lvm, planned, options, ctx, { startedAt, planMs, t0, phase, warn, emit });
  } finally {
    planned.domain.free();
    await lock?.release();
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
    disks: [],
    skipped: plan.skipped,
    storedBytes: 0,
    timings: { planMs: 0, windowMs: 0, archiveMs: 0, totalMs: 0 },
    dryRun: true,
    plan,
  };
}

interface Run {
  startedAt: Date;
  planMs: number;
  t0: number;
  phase: (p: BackupPhase, message: string) => void;
  warn: (message: string) => void;
  emit: (e: BackupProgress) => void;
}

async function execute(
  hv: Hypervisor,
  lvm: Lvm,
  planned: PlannedBackup,
  options: BackupOptions,
  ctx: BackupContext,
  run: Run,
): Promise<BackupResult> {
  const { plan, domain, runTag } = planned;
  const dest = plan.dest!;
  const { phase, warn, emit } = run;
  const signal = options.signal;
  phase('prepare', `creating the backup set in ${dest}`);
  const set: BackupSet = await createSet(dest, plan.domain, { now: run.startedAt });
  let journal: Journal | null = null;
  /** The VM is held (VmNotResumedError): the set keeps its memory state for recover. */
  let vmHeld = false;
  const live: LiveSnapshots = new Map();
  const retryDelayMs = ctx.retryDelayMs ?? 1000;
  try {
    journal = await openJournal(set, 'backup');
    await journal.record({
      step: 'planned',
      domain: plan.domain,
      uuid: plan.uuid,
      uri: plan.uri,
      mode: plan.mode,
      stateBefore: plan.stateBefore as ManifestDomainState,
      setPath: set.path,
      snapshots: plan.disks.map((d) => ({ vg: d.vg, lv: d.lv, name: d.snapshotName })),
      runTag,
    });
    const xmlFile = await writeSetFile(set, DOMAIN_XML_FILE, planned.domainXml);
    const disksDir = join(set.path, 'disks');
    await mkdir(disksDir, { mode: 0o700 });
    await chmod(disksDir, 0o700);
    throwIfAborted(signal);

    await options.hooks?.beforeHold?.({ domain: plan.domain, mode: plan.mode, setPath: set.path });
    // The window.
    const memoryFile = setFilePath(set, MEMORY_FILE);
    const tw = performance.now();
    let window;
    try {
      window = await runWindow({
        hv,
        lvm,
        domain,
        journal,
        mode: plan.mode,
        stateBefore: plan.stateBefore,
        disks: plan.disks,
        origins: planned.origins,
        runTag,
        ownerTag: ownerTag(processOwner()),
        memoryFile,
        live,
        bypassCache: ctx.bypassCache ?? true,
        agentTimeoutSeconds: options.agentTimeoutSeconds ?? 10,
        quiesceFallback: options.quiesceFallback ?? 'none',
        retryDelayMs,
        onPhase: (p, m) => phase(p, m),
        onWarning: warn,
      });
    } catch (e) {
      if (e instanceof VmNotResumedError) vmHeld = true;
      throw e;
    }
    const windowMs = Math.round(performance.now() - tw);
    const snapshots = window.snapshots;
    await options.hooks?.afterResume?.({ domain: plan.domain, mode: window.mode, setPath: set.path }).catch((e: unknown) => warn((e as Error).message));

    // Archive, watching the classic snapshots.
    const ta = performance.now();
    const watched: WatchedSnapshot[] = plan.disks.map((d) => {
      const s = snapshots.get(d.target)!;
      return { target: d.target, vg: s.vg, lv: s.lv, size: s.size, peakPercent: 0, extendedTo: null, done: d.thin };
    });
    const archiveAbort = new AbortController();
    const onOuterAbort = (): void => archiveAbort.abort(signal?.reason);
    signal?.addEventListener('abort', onOuterAbort, { once: true });
    if (signal?.aborted) onOuterAbort();
    const snapPercent = new Map<string, number>();
    const watcher = new SnapshotWatcher({
      lvm,
      snapshots: watched,
      intervalMs: options.watchIntervalMs ?? 1500,
      threshold: options.extendThreshold ?? 80,
      onExtended: (s, from, percent) =>
        emit({ type: 'snapshot-extended', domain: plan.domain, target: s.target, fromBytes: from, toBytes: s.size, percent }),
      onWarning: warn,
      onInvalid: (err) => archiveAbort.abort(err),
      onUsage: (s, p) => snapPercent.set(s.target, p),
    });
    const diskResults: BackupDiskResult[] = [];
    const manifestDisks: ManifestDisk[] = [];
    watcher.start();
    try {
      for (const d of plan.disks) {
        const snap = snapshots.get(d.target)!;
        const rel = `disks/${d.target}.img.gz`;
        phase('archive', `archiving ${d.target} (${snap.path})`);
        let packed;
        try {
          packed = await packImage(snap.path, setFilePath(set, rel), {
            ...(options.level !== undefined ? { level: options.level } : {}),
            ...(options.threads !== undefined ? { threads: options.threads } : {}),
            ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
            ...(options.bwlimit !== undefined ? { bwlimit: options.bwlimit } : {}),
            signal: archiveAbort.signal,
            onProgress: (p) =>
              emit({
                type: 'archive',
                domain: plan.domain,
                target: d.target,
                bytesDone: p.bytesDone,
                bytesTotal: p.bytesTotal,
                rate: p.rate,
                snapshotPercent: snapPercent.get(d.target),
              }),
          });
        } catch (e) {
          // An invalid snapshot reads as EIO or aborts the pack: report the real cause.
          const invalid = watcher.failure ?? (await watcher.check());
          if (invalid !== null) throw invalid;
          if (archiveAbort.signal.aborted && signal?.aborted) throw new AbortError('backup cancelled', { cause: e });
          throw e;
        }
        // The snapshot must still be valid now that every block was read.
        const invalid = await watcher.check({ strict: true });
        if (invalid !== null) throw invalid;
        const w = watched.find((x) => x.target === d.target)!;
        w.done = true;
        await journal.record({ step: 'archived', target: d.target, file: rel });
        diskResults.push({
          target: d.target,
          lvPath: d.lvPath,
          file: rel,
          rawBytes: packed.bytes,
          rawSha256: packed.sha256,
          storedBytes: packed.storedBytes,
          fileSha256: packed.fileSha256,
          zeroChunks: packed.zeroChunks,
          snapshotSize: d.thin ? null : w.size,
          snapshotPeakPercent: d.thin ? null : w.peakPercent,
          snapshotExtendedTo: w.extendedTo,
          seconds: packed.seconds,
        });
        manifestDisks.push({
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
          image: {
            file: rel,
            rawBytes: packed.bytes,
            rawSha256: packed.sha256,
            storedBytes: packed.storedBytes,
            fileSha256: packed.fileSha256,
            chunkSize: packed.chunkSize,
            members: packed.members,
            zeroChunks: packed.zeroChunks,
          },
          snapshot: {
            name: d.snapshotName,
            size: d.thin ? null : d.snapshotSize,
            peakPercent: d.thin ? null : w.peakPercent,
            ...(w.extendedTo !== null ? { extendedTo: w.extendedTo } : {}),
          },
        });
      }
    } finally {
      await watcher.stop();
      signal?.removeEventListener('abort', onOuterAbort);
    }
    const archiveMs = Math.round(performance.now() - ta);

    phase('cleanup', 'removing the snapshots');
    const removeErrors = await removeSnapshots(lvm, live, retryDelayMs);
    if (removeErrors.length > 0) {
      throw new KvmbakError(
        `could not remove snapshots: ${removeErrors.map((e) => e.message).join('; ')}; run kvmbak recover`,
        'KVMBAK_SNAPSHOT_REMOVE',
      );
    }
    await journal.record({ step: 'snapshots-removed' });

    phase('commit', 'writing checksums and the manifest');
    let memory: Manifest['memory'] = null;
    if (window.memorySaved) {
      const h = await sha256File(memoryFile);
      memory = { file: MEMORY_FILE, bytes: h.bytes, sha256: h.sha256 };
    }
    const stateAfter = (await domain.info()).state;
    const totalMs = Math.round(performance.now() - run.t0);
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      toolVersion: toolVersion(),
      createdAt: new Date().toISOString(),
      host: plan.host,
      libvirtVersion: plan.libvirtVersion,
      uri: plan.uri,
      domain: { name: plan.domain, uuid: plan.uuid, stateBefore: plan.stateBefore as ManifestDomainState },
      mode: window.mode,
      downtimeMs: window.downtimeMs,
      timings: { planMs: run.planMs, windowMs, archiveMs, totalMs },
      memory,
      domainXml: { file: DOMAIN_XML_FILE, sha256: xmlFile.sha256 },
      disks: manifestDisks,
      skipped: plan.skipped,
    };
    await commitSet(set, manifest);
    await journal.record({ step: 'committed' });
    await journal.remove();
    phase('done', `backup of ${plan.domain} complete: ${set.path}`);
    return {
      domain: plan.domain,
      uuid: plan.uuid,
      setPath: set.path,
      mode: window.mode,
      stateBefore: plan.stateBefore,
      stateAfter,
      downtimeMs: window.downtimeMs,
      memoryBytes: memory?.bytes ?? null,
      disks: diskResults,
      skipped: plan.skipped,
      storedBytes: diskResults.reduce((n, d) => n + d.storedBytes, 0) + (memory?.bytes ?? 0),
      timings: { planMs: run.planMs, windowMs, archiveMs, totalMs },
    };
  } catch (e) {
    // Undo: snapshots go, the partial set goes (unless the VM still needs its saved
    // state). What cannot be undone stays in the journal for kvmbak recover.
    await removeSnapshots(lvm, live, retryDelayMs);
    if (journal !== null) {
      await journal
        .record({ step: 'failed', message: (e as Error).message, ...(e instanceof KvmbakError ? { code: e.code } : {}) })
        .catch(() => undefined);
    }
    const setGone = !vmHeld && (await deleteSet(set, { dest }).then(() => true, () => false));
    if (journal !== null) {
      if (live.size === 0) await journal.record({ step: 'snapshots-removed' }).catch(() => undefined);
      if (setGone && live.size === 0) await journal.remove().catch(() => undefined);
      else handOverJournal(journal);
    }
    throw e;
  }
}
