import type { Argv, CommandModule } from 'yargs';
import { resolve } from 'node:path';
import {
  BACKUP_MODES,
  STORAGE_FORMATS,
  inspectBackup,
  outcomeError,
  parseBwlimit,
  parseDuration,
  runBackupJob,
  type BackupJobResult,
  type BackupMode,
  type BackupPlan,
  type BackupProgress,
  type BackupResult,
  type DomainSettings,
  type StorageFormat,
  type JobEvent,
} from '../../src/index.js';
import { UsageError, asUsage, errLine, escapeControl, flagsIn, withFlags } from '../errors.js';
import { configOption, readConfig, reportConfigError } from './config.js';
import { createLabelledProgress, formatBytes, formatRate } from '../render/index.js';
import { abortOnSignals } from '../signals.js';

/** BackupOptions field → the flag that sets it (library messages name the fields). */
export const BACKUP_FLAGS: Readonly<Record<string, string>> = {
  dest: '--dest',
  uri: '--uri',
  mode: '--mode',
  quiesceFallback: '--quiesce-fallback',
  agentTimeoutSeconds: '--agent-timeout',
  snapshotSize: '--snapshot-size',
  format: '--format',
  full: '--full',
  level: '--level',
  threads: '--threads',
  exclude: '--exclude',
  dryRun: '--dry-run',
};

/** A library error as the CLI reports it: flags instead of fields, ConfigError → usage error. */
function cliError(e: unknown): unknown {
  return asUsage(withFlags(e, BACKUP_FLAGS));
}

interface GlobalArgs {
  uri?: string;
  json?: boolean;
  quiet?: boolean;
  debug?: boolean;
}

interface BackupArgs extends GlobalArgs, JobArgs {
  domain: string[];
  dest?: string;
  mode?: BackupMode;
  'snapshot-size'?: string;
  format?: StorageFormat;
  full?: boolean;
  level?: number;
  threads?: number;
  exclude?: string[];
  'quiesce-fallback'?: 'pause' | 'none';
  'agent-timeout'?: number;
  'dry-run'?: boolean;
}

/** How each disk will be read, as inspect and --dry-run say it. */
const READ_PATHS: Record<BackupPlan['disks'][number]['readPath'], string> = {
  image: 'full read into an image',
  first: 'first backup into the chunk store (full read)',
  full: 'full read, only new chunks stored',
  'thin-delta': 'thin delta: only changed chunks read',
};

/** Human lines describing a plan (inspect, --dry-run). */
export function planLines(p: BackupPlan): string[] {
  const lines = [
    `domain ${p.domain} (${p.uuid}) on ${p.uri}: ${p.stateBefore}`,
    `  mode          ${p.mode}${p.mode === 'save' ? ` (memory up to ${formatBytes(p.memoryBytes)})` : ''}`,
    `  format        ${p.format}${p.format === 'chunks' ? ' (deduplicated into DEST/.chunks)' : ' (disks/TARGET.img.gz)'}`,
  ];
  if (p.dest !== null) lines.push(`  destination   ${p.dest} (${formatBytes(p.destFree ?? 0)} free)`);
  for (const d of p.disks) {
    const snap = d.thin ? 'thin snapshot' : `snapshot ${formatBytes(d.snapshotSize ?? 0)}`;
    lines.push(
      `  disk ${d.target.padEnd(8)} ${d.source} → ${d.vg}/${d.lv} ${formatBytes(d.lvSize)}${d.pool ? ` pool ${d.pool}` : ''}, ${snap} ${d.vg}/${d.snapshotName}; ${READ_PATHS[d.readPath]}`,
    );
    if (d.readNote !== undefined) lines.push(`    ${d.readNote}`);
  }
  for (const s of p.skipped) lines.push(`  skip ${s.target.padEnd(8)} ${s.reason}`);
  for (const v of p.volumeGroups) {
    lines.push(`  vg ${v.vg}: ${formatBytes(v.free)} free, snapshots need ${formatBytes(v.needed)}`);
  }
  return lines;
}

function resultLines(r: BackupResult): string[] {
  const lines = [
    `backed up ${r.domain} (${r.mode}) to ${r.setPath}`,
    `  downtime      ${r.downtimeMs === null ? 'none' : `${r.downtimeMs} ms`}; state ${r.stateBefore} → ${r.stateAfter}`,
  ];
  if (r.memoryBytes !== null) lines.push(`  memory        ${formatBytes(r.memoryBytes)}`);
  for (const d of r.disks) {
    const snap =
      d.snapshotPeakPercent === null
        ? 'thin snapshot'
        : `snapshot peak ${d.snapshotPeakPercent.toFixed(1)}%${d.snapshotExtendedTo !== null ? ` (extended to ${formatBytes(d.snapshotExtendedTo)})` : ''}`;
    const stored =
      d.chunks === undefined
        ? formatBytes(d.storedBytes)
        : `${d.chunks.new} new of ${d.chunks.total} chunks (${formatBytes(d.storedBytes)} added${d.chunks.method === 'thin-delta' ? `, ${d.chunks.read} read by thin delta` : ''})`;
    lines.push(
      `  ${d.target.padEnd(12)}  ${formatBytes(d.rawBytes)} → ${stored} in ${d.seconds.toFixed(1)} s (${formatRate(d.rawBytes / Math.max(d.seconds, 1e-6))}), ${snap}`,
    );
  }
  for (const s of r.skipped) lines.push(`  skipped ${s.target}: ${s.reason}`);
  return lines;
}

/** Shows backup progress on stderr: phase lines, and a bar while archiving. */
function progressFor(domain: string, argv: GlobalArgs, bwlimit?: number): { onProgress: (e: BackupProgress) => void; done: () => void } {
  const bar = createLabelledProgress({ quiet: argv.quiet ?? false });
  const line = (text: string): void => {
    if (argv.quiet) return;
    bar.done();
    errLine(text);
  };
  return {
    onProgress: (e) => {
      if (argv.json) {
        // Messages say flags here too: the library's `field` names mean nothing to a CLI user.
        const shown = 'message' in e ? { ...e, message: flagsIn(e.message, BACKUP_FLAGS) } : e;
        if (!argv.quiet) process.stderr.write(`${JSON.stringify({ event: 'backup', ...shown })}\n`);
        return;
      }
      switch (e.type) {
        case 'phase':
          line(`kvmbak: ${domain}: ${flagsIn(e.message, BACKUP_FLAGS)}`);
          break;
        case 'warning':
          line(`kvmbak: ${domain}: warning: ${flagsIn(e.message, BACKUP_FLAGS)}`);
          break;
        case 'snapshot-extended':
          line(
            `kvmbak: ${domain}: snapshot of ${e.target} was ${e.percent.toFixed(1)}% full: extended from ${formatBytes(e.fromBytes)} to ${formatBytes(e.toBytes)}`,
          );
          break;
        case 'save':
          bar.update(`${escapeControl(domain)} memory`, {
            phase: 'save',
            bytesDone: e.bytesDone,
            ...(e.bytesTotal !== undefined ? { bytesTotal: e.bytesTotal } : {}),
          });
          break;
        case 'archive':
          bar.update(`${escapeControl(domain)} ${escapeControl(e.target)}`, {
            phase: 'archive',
            bytesDone: e.bytesDone,
            ...(e.bytesTotal !== undefined ? { bytesTotal: e.bytesTotal } : {}),
            rate: e.rate,
            ...(e.snapshotPercent !== undefined || bwlimit !== undefined
              ? {
                  note: [
                    ...(e.snapshotPercent !== undefined ? [`snapshot ${e.snapshotPercent.toFixed(0)}% used`] : []),
                    ...(bwlimit !== undefined ? [`limit ${formatRate(bwlimit)}`] : []),
                  ].join(', '),
                }
              : {}),
          });
          break;
      }
    },
    done: bar.done,
  };
}

export const backupCommand: CommandModule<GlobalArgs, BackupArgs> = {
  command: 'backup [domain..]',
  describe: 'Back up running (or shut-off) domains whose disks are LVM logical volumes',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('domain', { type: 'string', array: true, describe: "domain names or UUIDs (default: the configuration file's domains)" })
      .option('dest', { alias: 'd', type: 'string', describe: 'backup destination folder (default: dest in the configuration file)' })
      .option('mode', {
        alias: 'm',
        choices: BACKUP_MODES,
        describe: 'save (default: RAM + disks), pause, quiesce (guest agent), offline (shut-off domain)',
      })
      .option('snapshot-size', { type: 'string', describe: 'COW size per snapshot: 2G, or 10% of each LV (default: 10%, at least 1 GiB)' })
      .option('format', {
        choices: STORAGE_FORMATS,
        describe:
          'chunks (default): deduplicated into DEST/.chunks, only new chunks written; image: self-contained disks/TARGET.img.gz, for a set that must travel as plain files',
      })
      .option('full', {
        type: 'boolean',
        describe: 'format chunks: read every disk whole, even a thin disk whose previous run kept a base for thin_delta',
      })
      .option('level', { type: 'number', describe: 'gzip level 1-9 (default 3)' })
      .option('threads', { type: 'number', describe: 'compression threads (default: one per CPU)' })
      .option('exclude', { alias: 'x', type: 'string', array: true, describe: 'leave disk TARGET (vdb…) out; repeatable' })
      .option('quiesce-fallback', { choices: ['pause', 'none'] as const, describe: 'with --mode quiesce: pause when the agent does not answer' })
      .option('agent-timeout', { type: 'number', describe: 'seconds to wait for the guest agent (default 10)' })
      .option('dry-run', { alias: 'n', type: 'boolean', describe: 'check and print the plan; touch nothing' })
      .options(JOB_OPTIONS) as unknown as Argv<BackupArgs>,
  handler: (argv) => runBackupJobCommand(argv),
};

export const inspectCommand: CommandModule<GlobalArgs, BackupArgs> = {
  command: 'inspect <domain>',
  describe: 'Show what a backup of DOMAIN would do, checking every precondition; touches nothing',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('domain', { type: 'string', demandOption: true, describe: 'domain name or UUID' })
      .option('dest', { alias: 'd', type: 'string', describe: 'backup destination to check as well' })
      .option('mode', { alias: 'm', choices: BACKUP_MODES, describe: 'backup mode to plan for' })
      .option('snapshot-size', { type: 'string', describe: 'COW size per snapshot' })
      .option('format', { choices: STORAGE_FORMATS, describe: 'storage format to plan for: chunks (default) or image' })
      .option('full', { type: 'boolean', describe: 'plan a full read of every disk (no thin delta)' })
      .option('exclude', { alias: 'x', type: 'string', array: true, describe: 'leave disk TARGET out' }) as unknown as Argv<BackupArgs>,
  handler: async (argv) => {
    const domain = Array.isArray(argv.domain) ? argv.domain[0]! : (argv.domain as unknown as string);
    let plan: BackupPlan;
    try {
      plan = await inspectBackup({
        domain,
        ...(argv.dest !== undefined ? { dest: argv.dest } : {}),
        ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
        ...(argv.mode !== undefined ? { mode: argv.mode } : {}),
        ...(argv['snapshot-size'] !== undefined ? { snapshotSize: argv['snapshot-size'] } : {}),
        ...(argv.exclude !== undefined ? { exclude: argv.exclude } : {}),
        ...(argv.format !== undefined ? { format: argv.format } : {}),
        ...(argv.full !== undefined ? { full: argv.full } : {}),
      });
    } catch (e) {
      throw cliError(e);
    }
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok: true, plan }, null, 2)}\n`);
    else
      process.stdout.write(
        `${planLines(plan)
          .map((l) => escapeControl(l))
          .join('\n')}\n`,
      );
  },
};

// ---------------------------------------------------------------------------
// Unattended runs (issue 12): the configuration file, --all, hooks, retention
// after backup, metrics and the read-rate cap. The library's runBackupJob does
// the work; this block only maps flags onto it and renders what it reports.
// ---------------------------------------------------------------------------

interface JobArgs {
  config?: string;
  all?: boolean;
  'exclude-domain'?: string[];
  'keep-last'?: number;
  'keep-daily'?: number;
  'keep-weekly'?: number;
  'keep-monthly'?: number;
  hook?: string;
  'hook-timeout'?: string;
  'metrics-file'?: string;
  bwlimit?: string;
}

const JOB_OPTIONS = {
  config: configOption,
  all: { type: 'boolean', describe: 'every defined domain whose disks are LVs (others are skipped with a warning)' },
  'exclude-domain': { type: 'string', array: true, describe: 'leave domain NAME out; repeatable' },
  'keep-last': { type: 'number', describe: 'after a successful backup, keep the N newest sets of that domain' },
  'keep-daily': { type: 'number', describe: 'after a successful backup, keep one set per day for N days' },
  'keep-weekly': { type: 'number', describe: 'after a successful backup, keep one set per ISO week for N weeks' },
  'keep-monthly': { type: 'number', describe: 'after a successful backup, keep one set per month for N months' },
  hook: { type: 'string', describe: 'executable called (no shell) at each phase, the phase as argument, facts in KVMBAK_* variables' },
  'hook-timeout': { type: 'string', describe: 'time limit of each hook call (default 5m)' },
  'metrics-file': { type: 'string', describe: 'Prometheus textfile-collector file, rewritten after the run' },
  bwlimit: { type: 'string', describe: 'read each snapshot at most this fast, e.g. 200M (per second)' },
} as const;

/** The settings given on the command line (they override the configuration file's). */
function commandLineSettings(argv: BackupArgs): DomainSettings {
  const s: DomainSettings = {};
  if (argv.dest !== undefined) s.dest = resolve(argv.dest);
  if (argv.mode !== undefined) s.mode = argv.mode;
  if (argv.format !== undefined) s.format = argv.format;
  if (argv.full !== undefined) s.full = argv.full;
  if (argv.level !== undefined) s.level = argv.level;
  if (argv.threads !== undefined) s.threads = argv.threads;
  if (argv['snapshot-size'] !== undefined) s.snapshotSize = argv['snapshot-size'];
  if (argv.exclude !== undefined) s.exclude = argv.exclude;
  if (argv['quiesce-fallback'] !== undefined) s.quiesceFallback = argv['quiesce-fallback'];
  if (argv['agent-timeout'] !== undefined) s.agentTimeoutSeconds = argv['agent-timeout'];
  for (const [flag, field] of [
    ['keep-last', 'keepLast'],
    ['keep-daily', 'keepDaily'],
    ['keep-weekly', 'keepWeekly'],
    ['keep-monthly', 'keepMonthly'],
  ] as const) {
    const v = argv[flag];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`--${flag} must be a whole number >= 0, got ${String(v)}`);
    s[field] = v;
  }
  if (argv.hook !== undefined) s.hook = resolve(argv.hook);
  try {
    if (argv['hook-timeout'] !== undefined) s.hookTimeoutSeconds = parseDuration(argv['hook-timeout'], '--hook-timeout');
    if (argv.bwlimit !== undefined) s.bwlimit = parseBwlimit(argv.bwlimit, '--bwlimit');
  } catch (e) {
    throw asUsage(e);
  }
  return s;
}

async function runBackupJobCommand(argv: BackupArgs): Promise<void> {
  const settings = commandLineSettings(argv);
  const config = await readConfig(argv).catch((e: unknown) => {
    if (reportConfigError(e, argv)) return undefined;
    throw e;
  });
  if (config === undefined) return;
  const sig = abortOnSignals();
  const say = (text: string): void => {
    if (!argv.quiet || /warning|failed/.test(text)) errLine(text);
  };
  let progress: ReturnType<typeof progressFor> | null = null;
  // One domain named: its failure is the command's error, reported once at the end.
  const single = argv.domain?.length === 1 && !argv.all;
  const onEvent = (e: JobEvent): void => {
    if (argv.json && e.type !== 'backup' && e.type !== 'domain-start' && e.type !== 'domain-end') {
      if (!argv.quiet || e.type === 'skipped' || e.type === 'warning') process.stderr.write(`${JSON.stringify({ event: 'job', ...e })}\n`);
      return;
    }
    switch (e.type) {
      case 'skipped':
        errLine(`kvmbak: warning: skipping ${e.domain}: ${flagsIn(e.reason, BACKUP_FLAGS)}`);
        break;
      case 'domain-start':
        progress = progressFor(e.domain, argv, e.settings.bwlimit);
        break;
      case 'backup':
        progress?.onProgress(e.event);
        break;
      case 'hook':
        progress?.done();
        say(`kvmbak: hook ${e.phase}${e.domain !== undefined ? ` (${e.domain})` : ''}: ${e.line}`);
        break;
      case 'warning':
        progress?.done();
        errLine(`kvmbak: ${e.domain !== undefined ? `${e.domain}: ` : ''}warning: ${flagsIn(e.message, BACKUP_FLAGS)}`);
        break;
      case 'retention':
        say(`kvmbak: ${e.domain}: retention kept ${e.kept} set${e.kept === 1 ? '' : 's'}, removed ${e.removed.length}`);
        break;
      case 'domain-end':
        progress?.done();
        progress = null;
        if (!single && !e.outcome.ok && e.outcome.error !== undefined) {
          const cause = outcomeError(e.outcome);
          errLine(`kvmbak: ${e.outcome.domain}: ${cause instanceof Error ? (cliError(cause) as Error).message : e.outcome.error.message}`);
        }
        break;
    }
  };
  let r: BackupJobResult;
  try {
    r = await runBackupJob({
      config,
      domains: argv.domain ?? [],
      ...(argv.all !== undefined ? { all: argv.all } : {}),
      ...(argv['exclude-domain'] !== undefined ? { excludeDomains: argv['exclude-domain'] } : {}),
      settings,
      ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
      ...(argv['metrics-file'] !== undefined ? { metricsFile: resolve(argv['metrics-file']) } : {}),
      ...(argv['dry-run'] ? { dryRun: true } : {}),
      signal: sig.signal,
      onEvent,
    });
  } catch (e) {
    if (reportConfigError(e, argv)) return;
    throw cliError(e);
  } finally {
    (progress as ReturnType<typeof progressFor> | null)?.done();
    sig.dispose();
  }
  if (single && r.outcomes.length === 1 && !r.outcomes[0]!.ok) throw cliError(outcomeError(r.outcomes[0]!));
  const results = r.outcomes.map(({ hookWarnings, ...o }) => ({ ...o, ...(hookWarnings.length > 0 ? { hookWarnings } : {}) }));
  if (argv.json) {
    process.stdout.write(
      `${JSON.stringify({ ok: r.ok, results, skipped: r.skipped, ...(r.metricsFile !== undefined ? { metricsFile: r.metricsFile } : {}) }, null, 2)}\n`,
    );
  } else {
    const lines: string[] = [];
    for (const o of r.outcomes) {
      if (o.plan !== undefined) lines.push('(dry run: nothing was touched)', ...planLines(o.plan));
      else if (o.result !== undefined) {
        lines.push(...resultLines(o.result));
        if (o.bwlimit !== undefined) lines.push(`  read rate     ${formatRate(o.readBytesPerSecond ?? 0)} (limit ${formatRate(o.bwlimit)})`);
        if (o.retention !== undefined && o.retention.error === undefined)
          lines.push(`  retention     kept ${o.retention.kept}, removed ${o.retention.removed.length}`);
      }
    }
    if (lines.length > 0) process.stdout.write(`${lines.map((l) => escapeControl(l)).join('\n')}\n`);
  }
  const failed = r.outcomes.filter((o) => !o.ok).map((o) => o.domain);
  if (failed.length > 0) errLine(`kvmbak: ${failed.length} of ${r.outcomes.length} backups failed: ${failed.join(', ')}`);
  else if (r.outcomes.length + r.skipped.length > 1 && !argv.json && !argv.quiet) {
    process.stderr.write(`kvmbak: ${r.outcomes.length} backed up, ${r.skipped.length} skipped\n`);
  }
  if (!r.ok) process.exitCode = 1;
}
