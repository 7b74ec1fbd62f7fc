import type { Argv, CommandModule } from 'yargs';
import {
  BACKUP_MODES,
  backup,
  inspectBackup,
  isKvmbakError,
  type BackupMode,
  type BackupPlan,
  type BackupProgress,
  type BackupResult,
} from '../../src/index.js';
import { UsageError, asUsage, errLine, escapeControl, withFlags } from '../errors.js';
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

interface BackupArgs extends GlobalArgs {
  domain: string[];
  dest: string;
  mode?: BackupMode;
  'snapshot-size'?: string;
  level?: number;
  threads?: number;
  exclude?: string[];
  'quiesce-fallback'?: 'pause' | 'none';
  'agent-timeout'?: number;
  'dry-run'?: boolean;
}

/** Human lines describing a plan (inspect, --dry-run). */
export function planLines(p: BackupPlan): string[] {
  const lines = [
    `domain ${p.domain} (${p.uuid}) on ${p.uri}: ${p.stateBefore}`,
    `  mode          ${p.mode}${p.mode === 'save' ? ` (memory up to ${formatBytes(p.memoryBytes)})` : ''}`,
  ];
  if (p.dest !== null) lines.push(`  destination   ${p.dest} (${formatBytes(p.destFree ?? 0)} free)`);
  for (const d of p.disks) {
    const snap = d.thin ? 'thin snapshot' : `snapshot ${formatBytes(d.snapshotSize ?? 0)}`;
    lines.push(
      `  disk ${d.target.padEnd(8)} ${d.source} → ${d.vg}/${d.lv} ${formatBytes(d.lvSize)}${d.pool ? ` pool ${d.pool}` : ''}, ${snap} ${d.vg}/${d.snapshotName}`,
    );
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
      d.snapshotPeakPercent === null ? 'thin snapshot' : `snapshot peak ${d.snapshotPeakPercent.toFixed(1)}%${d.snapshotExtendedTo !== null ? ` (extended to ${formatBytes(d.snapshotExtendedTo)})` : ''}`;
    lines.push(
      `  ${d.target.padEnd(12)}  ${formatBytes(d.rawBytes)} → ${formatBytes(d.storedBytes)} in ${d.seconds.toFixed(1)} s (${formatRate(d.rawBytes / Math.max(d.seconds, 1e-6))}), ${snap}`,
    );
  }
  for (const s of r.skipped) lines.push(`  skipped ${s.target}: ${s.reason}`);
  return lines;
}

/** Shows backup progress on stderr: phase lines, and a bar while archiving. */
function progressFor(domain: string, argv: GlobalArgs): { onProgress: (e: BackupProgress) => void; done: () => void } {
  const bar = createLabelledProgress({ quiet: argv.quiet ?? false });
  const line = (text: string): void => {
    if (argv.quiet) return;
    bar.done();
    errLine(text);
  };
  return {
    onProgress: (e) => {
      if (argv.json) {
        if (!argv.quiet) process.stderr.write(`${JSON.stringify({ event: 'backup', ...e })}\n`);
        return;
      }
      switch (e.type) {
        case 'phase':
          line(`kvmbak: ${domain}: ${e.message}`);
          break;
        case 'warning':
          line(`kvmbak: ${domain}: warning: ${e.message}`);
          break;
        case 'snapshot-extended':
          line(`kvmbak: ${domain}: snapshot of ${e.target} was ${e.percent.toFixed(1)}% full: extended from ${formatBytes(e.fromBytes)} to ${formatBytes(e.toBytes)}`);
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
            ...(e.snapshotPercent !== undefined ? { note: `snapshot ${e.snapshotPercent.toFixed(0)}% used` } : {}),
          });
          break;
      }
    },
    done: bar.done,
  };
}

export const backupCommand: CommandModule<GlobalArgs, BackupArgs> = {
  command: 'backup <domain..>',
  describe: 'Back up running (or shut-off) domains whose disks are LVM logical volumes',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('domain', { type: 'string', array: true, demandOption: true, describe: 'domain names or UUIDs' })
      .option('dest', { alias: 'd', type: 'string', demandOption: true, describe: 'backup destination folder' })
      .option('mode', {
        alias: 'm',
        choices: BACKUP_MODES,
        describe: 'save (default: RAM + disks), pause, quiesce (guest agent), offline (shut-off domain)',
      })
      .option('snapshot-size', { type: 'string', describe: 'COW size per snapshot: 2G, or 10% of each LV (default: 10%, at least 1 GiB)' })
      .option('level', { type: 'number', describe: 'gzip level 1-9 (default 3)' })
      .option('threads', { type: 'number', describe: 'compression threads (default: one per CPU)' })
      .option('exclude', { alias: 'x', type: 'string', array: true, describe: 'leave disk TARGET (vdb…) out; repeatable' })
      .option('quiesce-fallback', { choices: ['pause', 'none'] as const, describe: 'with --mode quiesce: pause when the agent does not answer' })
      .option('agent-timeout', { type: 'number', describe: 'seconds to wait for the guest agent (default 10)' })
      .option('dry-run', { alias: 'n', type: 'boolean', describe: 'check and print the plan; touch nothing' }) as unknown as Argv<BackupArgs>,
  handler: async (argv) => {
    const sig = abortOnSignals();
    const outcomes: { domain: string; ok: boolean; result?: BackupResult; plan?: BackupPlan; error?: { code?: string; message: string } }[] = [];
    try {
      for (const name of argv.domain) {
        if (sig.signal.aborted) break;
        const progress = progressFor(name, argv);
        const common = {
          domain: name,
          dest: argv.dest,
          ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
          ...(argv.mode !== undefined ? { mode: argv.mode } : {}),
          ...(argv['snapshot-size'] !== undefined ? { snapshotSize: argv['snapshot-size'] } : {}),
          ...(argv.exclude !== undefined ? { exclude: argv.exclude } : {}),
        };
        try {
          if (argv['dry-run']) {
            const plan = await inspectBackup(common);
            outcomes.push({ domain: name, ok: true, plan });
            if (!argv.json) process.stdout.write(`${['(dry run: nothing was touched)', ...planLines(plan)].map((l) => escapeControl(l)).join('\n')}\n`);
            continue;
          }
          const result = await backup({
            ...common,
            ...(argv.level !== undefined ? { level: argv.level } : {}),
            ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
            ...(argv['quiesce-fallback'] !== undefined ? { quiesceFallback: argv['quiesce-fallback'] } : {}),
            ...(argv['agent-timeout'] !== undefined ? { agentTimeoutSeconds: argv['agent-timeout'] } : {}),
            signal: sig.signal,
            onProgress: progress.onProgress,
          });
          progress.done();
          outcomes.push({ domain: name, ok: true, result });
          if (!argv.json) process.stdout.write(`${resultLines(result).map((l) => escapeControl(l)).join('\n')}\n`);
        } catch (e) {
          progress.done();
          const err = cliError(e);
          // A usage error or a cancel stops everything; any other failure only this domain.
          if (err instanceof UsageError || sig.signal.aborted || argv.domain.length === 1) throw err;
          const message = (err as Error).message;
          outcomes.push({ domain: name, ok: false, error: { ...(isKvmbakError(err) ? { code: err.code } : {}), message } });
          if (argv.debug && (err as Error).stack) process.stderr.write(`kvmbak: ${escapeControl(name)}: ${(err as Error).stack}\n`);
          else errLine(`kvmbak: ${name}: ${message}`);
        }
      }
    } finally {
      sig.dispose();
    }
    const ok = outcomes.every((o) => o.ok);
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok, results: outcomes }, null, 2)}\n`);
    if (!ok) {
      const failed = outcomes.filter((o) => !o.ok).map((o) => o.domain);
      errLine(`kvmbak: ${failed.length} of ${outcomes.length} backups failed: ${failed.join(', ')}`);
      process.exitCode = 1;
    }
  },
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
      });
    } catch (e) {
      throw cliError(e);
    }
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok: true, plan }, null, 2)}\n`);
    else process.stdout.write(`${planLines(plan).map((l) => escapeControl(l)).join('\n')}\n`);
  },
};
