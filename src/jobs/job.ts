/**
 * runBackupJob(): an unattended run over several domains, one after
 * another — the configuration file's settings under the caller's, the
 * selection (`all`, exclusions), hooks at every phase, retention after each
 * successful backup (never after a failure), a durable record of each
 * domain's result, and the metrics file. One domain's failure never stops
 * the others; a cancel stops the run after the domain in progress is undone.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortError, ConfigError, isAbortError, isKvmbakError, isLibvirtError } from '../errors.js';
import { openHypervisor } from '../libvirt/index.js';
import { type BackupOptions, type BackupPlan, type BackupProgress, type BackupResult, backup, inspectBackup, pruneBackups } from '../backup/index.js';
import type { PruneGcResult, RetentionRules } from '../store/index.js';
import { type DomainSettings, type KvmbakConfig, checkDomainSections, effectiveSettings } from './config.js';
import { type HookFacts, type HookPhase, HookError, runHook } from './hooks.js';
import { type LastRun, readLastRun, writeLastRun } from './last-run.js';
import { writeMetricsFile } from './metrics.js';
import { type Selection, type SkippedDomain, selectDomains } from './selection.js';

export interface BackupJobOptions {
  /** The configuration file read (loadConfig), or none. */
  config?: KvmbakConfig | null;
  /** Domains to back up (names or UUIDs). Default: the file's `domains`, or all with `all`. */
  domains?: readonly string[];
  /** Every domain whose disks are LVs. */
  all?: boolean;
  /** Domains left out (added to the file's). */
  excludeDomains?: readonly string[];
  /** Settings given by the caller (the command line): they override the file's. */
  settings?: DomainSettings;
  uri?: string;
  metricsFile?: string;
  /** Plan every domain, touch nothing (no hooks, no records, no metrics). */
  dryRun?: boolean;
  signal?: AbortSignal;
  onEvent?: (event: JobEvent) => void;
}

export type JobEvent =
  | { type: 'skipped'; domain: string; reason: string }
  | { type: 'domain-start'; domain: string; index: number; count: number; settings: DomainSettings }
  | { type: 'backup'; domain: string; event: BackupProgress }
  | { type: 'hook'; phase: HookPhase; domain?: string; line: string; stream: 'stdout' | 'stderr' }
  | { type: 'warning'; domain?: string; message: string }
  | { type: 'retention'; domain: string; kept: number; removed: string[]; gc: PruneGcResult | null }
  | { type: 'domain-end'; outcome: DomainOutcome };

export interface DomainOutcome {
  domain: string;
  ok: boolean;
  dest?: string;
  result?: BackupResult;
  /** A dry run's plan. */
  plan?: BackupPlan;
  error?: { code?: string; message: string };
  /**
   * Retention applied after the backup: sets removed (paths), sets kept, the destination's chunk
   * store collected after them (null without a store; 'busy' when another backup wrote into it);
   * error when pruning or the collection failed.
   */
  retention?: { kept: number; removed: string[]; gc?: PruneGcResult | null; error?: string };
  /** The cap on the read rate, and the rate measured (raw bytes per second of archiving). */
  bwlimit?: number;
  readBytesPerSecond?: number | null;
  /** Hooks that failed after the backup was decided (reported only). */
  hookWarnings: string[];
}

export interface BackupJobResult {
  /** Every domain backed up (and pruned) without error. */
  ok: boolean;
  outcomes: DomainOutcome[];
  /** Domains left out by `all` (not a failure). */
  skipped: SkippedDomain[];
  /** The metrics file written, if any. */
  metricsFile?: string;
}

const errorInfo = (e: unknown): { code?: string; message: string } => ({
  ...(isKvmbakError(e) ? { code: e.code } : {}),
  message: e instanceof Error ? e.message : String(e),
});

function retentionRules(s: DomainSettings): RetentionRules | null {
  const rules: RetentionRules = {
    ...(s.keepLast !== undefined ? { keepLast: s.keepLast } : {}),
    ...(s.keepDaily !== undefined ? { keepDaily: s.keepDaily } : {}),
    ...(s.keepWeekly !== undefined ? { keepWeekly: s.keepWeekly } : {}),
    ...(s.keepMonthly !== undefined ? { keepMonthly: s.keepMonthly } : {}),
  };
  return Object.values(rules).some((n) => n >= 1) ? rules : null;
}

/** The error a domain's outcome came from (not serialised). */
export function outcomeError(o: DomainOutcome): unknown {
  return (o as { [CAUSE]?: unknown })[CAUSE];
}
const CAUSE = Symbol('cause');

/** Backs up the selected domains one after another. See the module comment. */
export async function runBackupJob(options: BackupJobOptions): Promise<BackupJobResult> {
  const config = options.config ?? null;
  const emit = (e: JobEvent): void => {
    try {
      options.onEvent?.(e);
    } catch {
      // A listener must never break a run.
    }
  };
  const uri = options.uri ?? config?.global.uri;
  const metricsFile = options.metricsFile ?? config?.global.metricsFile;
  const named = options.domains ?? [];
  const all = options.all ?? (named.length === 0 && config?.global.all === true);
  const names = named.length > 0 ? named : (config?.global.domains ?? []);
  if (!all && names.length === 0) {
    throw new ConfigError(
      'no domain to back up: name domains, use all (every domain whose disks are LVs), or set domains or all in the configuration file',
      'domains',
    );
  }
  const settingsOf = (domain: string): DomainSettings => effectiveSettings(config, domain, options.settings).settings;

  const hv = await openHypervisor(uri);
  let selection: Selection;
  try {
    selection = await selectDomains(hv, {
      names,
      all,
      excludeDomains: [...(config?.global.excludeDomains ?? []), ...(options.excludeDomains ?? [])],
      excludeFor: (d) => settingsOf(d).exclude ?? [],
    });
    if (config !== null) checkDomainSections(config, selection.defined);
  } finally {
    hv.close();
  }
  for (const s of selection.skipped) emit({ type: 'skipped', domain: s.domain, reason: s.reason });

  // Everything a run needs is checked before any domain is touched.
  const plans = selection.domains.map((domain) => {
    const settings = { ...settingsOf(domain) };
    if (settings.dest === undefined) {
      throw new ConfigError(`no destination for ${domain}: give dest (--dest DIR, or dest in the configuration file)`, 'dest');
    }
    // An exclude rule from the top of the file or the command line applies to the domains that have the disk.
    const targets = selection.targets[domain];
    if (all && settings.exclude !== undefined && targets !== undefined) settings.exclude = settings.exclude.filter((t) => targets.includes(t));
    return { domain, settings, rules: retentionRules(settings) };
  });

  const result: BackupJobResult = { ok: true, outcomes: [], skipped: selection.skipped };
  const jobHook = options.settings?.hook ?? config?.global.hook;
  const jobHookTimeout = options.settings?.hookTimeoutSeconds ?? config?.global.hookTimeoutSeconds;
  const callHook = async (hook: string | undefined, timeout: number | undefined, phase: HookPhase, facts: HookFacts): Promise<void> => {
    if (hook === undefined || options.dryRun) return;
    await runHook(hook, phase, facts, {
      ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      onOutput: (line, stream) => emit({ type: 'hook', phase, ...(facts.domain !== undefined ? { domain: facts.domain } : {}), line, stream }),
    });
  };
  /** A hook whose failure changes nothing: reported as a warning. */
  const reportOnly = async (
    hook: string | undefined,
    timeout: number | undefined,
    phase: HookPhase,
    facts: HookFacts,
    o?: DomainOutcome,
  ): Promise<void> => {
    try {
      await callHook(hook, timeout, phase, facts);
    } catch (e) {
      const message = errorInfo(e).message;
      o?.hookWarnings.push(message);
      emit({ type: 'warning', ...(facts.domain !== undefined ? { domain: facts.domain } : {}), message });
    }
  };

  let jobError: unknown = null;
  try {
    await callHook(jobHook, jobHookTimeout, 'job-start', {});
  } catch (e) {
    jobError = e;
  }

  let stop: unknown = null;
  for (const [index, p] of plans.entries()) {
    if (options.signal?.aborted) break;
    const { domain, settings } = p;
    const dest = settings.dest!;
    const outcome: DomainOutcome = { domain, ok: false, dest, hookWarnings: [] };
    result.outcomes.push(outcome);
    emit({ type: 'domain-start', domain, index, count: plans.length, settings });
    const t0 = new Date();
    const facts: HookFacts = { domain, ...(settings.mode !== undefined ? { mode: settings.mode } : {}) };
    const hook = (phase: HookPhase, f: HookFacts): Promise<void> => callHook(settings.hook, settings.hookTimeoutSeconds, phase, f);
    let started = false;
    try {
      if (jobError !== null) throw jobError;
      const common = {
        domain,
        dest,
        ...(uri !== undefined ? { uri } : {}),
        ...(settings.mode !== undefined ? { mode: settings.mode } : {}),
        ...(settings.snapshotSize !== undefined ? { snapshotSize: settings.snapshotSize } : {}),
        ...(settings.exclude !== undefined ? { exclude: settings.exclude } : {}),
        ...(settings.format !== undefined ? { format: settings.format } : {}),
        ...(settings.full !== undefined ? { full: settings.full } : {}),
      };
      if (options.dryRun) {
        outcome.plan = await inspectBackup(common);
        outcome.ok = true;
        continue;
      }
      started = true;
      await hook('backup-start', facts);
      const backupOptions: BackupOptions = {
        ...common,
        ...(settings.level !== undefined ? { level: settings.level } : {}),
        ...(settings.threads !== undefined ? { threads: settings.threads } : {}),
        ...(settings.quiesceFallback !== undefined ? { quiesceFallback: settings.quiesceFallback } : {}),
        ...(settings.agentTimeoutSeconds !== undefined ? { agentTimeoutSeconds: settings.agentTimeoutSeconds } : {}),
        ...(settings.bwlimit !== undefined ? { bwlimit: settings.bwlimit } : {}),
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
        onProgress: (event) => emit({ type: 'backup', domain, event }),
        hooks: {
          beforeHold: async (c) => {
            facts.mode = c.mode;
            facts.set = c.setPath;
            await hook('pre-hold', facts);
          },
          afterResume: (c) => hook('post-resume', { ...facts, mode: c.mode, set: c.setPath }),
        },
      };
      const r = await backup(backupOptions);
      outcome.result = r;
      outcome.ok = true;
      facts.mode = r.mode;
      facts.set = r.setPath;
      const readSeconds = r.disks.reduce((n, d) => n + d.seconds, 0);
      outcome.readBytesPerSecond = readSeconds > 0 ? r.disks.reduce((n, d) => n + d.rawBytes, 0) / readSeconds : null;
      if (settings.bwlimit !== undefined) outcome.bwlimit = settings.bwlimit;
      // Retention only after this domain's backup succeeded.
      if (p.rules !== null) {
        try {
          const pruned = await pruneBackups(dest, domain, p.rules, options.signal !== undefined ? { signal: options.signal } : {});
          const d = pruned.domains[0]!;
          const gc = pruned.gc;
          outcome.retention = { kept: d.keep.length, removed: d.deleted, gc };
          // a set's damaged chunk list stops the collection: the run fails, so someone looks
          emit({ type: 'retention', domain, kept: d.keep.length, removed: d.deleted, gc });
          for (const message of pruned.bases.errors) emit({ type: 'warning', domain, message });
          if (gc?.status === 'failed') {
            outcome.retention.error = `retention after the backup: ${gc.error}`;
            emit({ type: 'warning', domain, message: outcome.retention.error });
          }
        } catch (e) {
          if (isAbortError(e)) throw e;
          const message = `retention after the backup failed: ${errorInfo(e).message}`;
          outcome.retention = { kept: 0, removed: [], error: message };
          emit({ type: 'warning', domain, message });
        }
      }
    } catch (e) {
      outcome.ok = false;
      outcome.error = errorInfo(e);
      Object.defineProperty(outcome, CAUSE, { value: e, enumerable: false });
      // Options that are wrong for every domain, and a cancel, stop the run.
      if (isAbortError(e) || (isKvmbakError(e) && e.code === 'KVMBAK_INVALID_ARGUMENT' && !(e instanceof HookError))) stop = e;
    } finally {
      if (started) {
        if (outcome.ok) await reportOnly(settings.hook, settings.hookTimeoutSeconds, 'backup-end', { ...facts, status: 'ok' }, outcome);
        else {
          await reportOnly(
            settings.hook,
            settings.hookTimeoutSeconds,
            'backup-abort',
            { ...facts, status: 'failed', error: outcome.error!.message },
            outcome,
          );
        }
      }
      if (!options.dryRun && stop === null) await record(outcome, t0, outcomeError(outcome));
      emit({ type: 'domain-end', outcome });
    }
    if (stop !== null) break;
  }

  // Cancelled while a hook ran (the hook was killed): the run ends as cancelled.
  if (stop === null && options.signal?.aborted) stop = new AbortError('backup cancelled');
  result.ok = result.outcomes.every((o) => o.ok && o.retention?.error === undefined) && jobError === null;
  if (!options.dryRun && metricsFile !== undefined) {
    try {
      await writeMetricsFile(
        metricsFile,
        await lastRuns(
          plans.map((p) => p.settings.dest!),
          selection.defined,
        ),
      );
      result.metricsFile = metricsFile;
    } catch (e) {
      result.ok = false;
      emit({ type: 'warning', message: `could not write the metrics file ${metricsFile}: ${errorInfo(e).message}` });
    }
  }
  const failed = result.outcomes.filter((o) => !o.ok);
  await reportOnly(jobHook, jobHookTimeout, 'job-end', {
    status: result.ok && stop === null ? 'ok' : 'failed',
    ...(failed.length > 0 ? { error: failed.map((o) => `${o.domain}: ${o.error!.message}`).join('; ') } : {}),
  });
  if (stop !== null) throw stop;
  return result;

  /**
   * The durable record of a domain's run. A failure is recorded once the
   * domain has a folder in the destination (it was backed up there before):
   * a first run that fails leaves the destination as it was, and status
   * reports that domain as having no complete set.
   */
  async function record(o: DomainOutcome, startedAt: Date, cause: unknown): Promise<void> {
    if (!selection.defined.includes(o.domain) || isLibvirtError(cause, 'NO_DOMAIN')) return;
    if (!o.ok && !(await isDir(join(o.dest!, o.domain)))) return;
    const r = o.result;
    const finishedAt = new Date();
    try {
      await writeLastRun(o.dest!, {
        domain: o.domain,
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        ok: o.ok,
        ...(o.error !== undefined ? { error: o.error } : {}),
        ...(r !== undefined ? { mode: r.mode, setPath: r.setPath } : {}),
        durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
        bytesRead: r?.disks.reduce((n, d) => n + d.rawBytes, 0) ?? 0,
        bytesWritten: r?.storedBytes ?? 0,
        downtimeSeconds: r?.downtimeMs != null ? r.downtimeMs / 1000 : null,
        readBytesPerSecond: o.readBytesPerSecond ?? null,
      });
    } catch (e) {
      emit({ type: 'warning', domain: o.domain, message: `could not record the result in ${o.dest}: ${errorInfo(e).message}` });
    }
  }
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/** The last-run records of the defined domains in these destinations. */
async function lastRuns(dests: readonly string[], domains: readonly string[]): Promise<{ dest: string; run: LastRun }[]> {
  const out: { dest: string; run: LastRun }[] = [];
  for (const dest of [...new Set(dests)]) {
    for (const domain of domains) {
      const run = await readLastRun(dest, domain).catch(() => null);
      if (run !== null) out.push({ dest, run });
    }
  }
  return out;
}
