import type { Argv, CommandModule } from 'yargs';
import { type PruneBackupsResult, type PruneResult, type RetentionRules, pruneBackups } from '../../src/index.js';
import { UsageError } from '../errors.js';
import { formatBytes } from '../render/index.js';
import { type GlobalArgs } from './restore.js';
import { runCancellable } from '../signals.js';

interface PruneArgs extends GlobalArgs {
  dest: string;
  domain?: string;
  'keep-last'?: number;
  'keep-daily'?: number;
  'keep-weekly'?: number;
  'keep-monthly'?: number;
  'dry-run'?: boolean;
}

const RULES = [
  ['keep-last', 'keepLast'],
  ['keep-daily', 'keepDaily'],
  ['keep-weekly', 'keepWeekly'],
  ['keep-monthly', 'keepMonthly'],
] as const;

/** The retention rules from the flags; UsageError for a bad or missing one. */
function rulesFrom(argv: PruneArgs): RetentionRules {
  const rules: RetentionRules = {};
  for (const [flag, key] of RULES) {
    const v = argv[flag];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`--${flag} must be a whole number >= 0, got ${String(v)}`);
    rules[key] = v;
  }
  if (!RULES.some(([, key]) => (rules[key] ?? 0) >= 1)) {
    throw new UsageError('say what to keep: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly (>= 1)');
  }
  return rules;
}

export function formatPrune(r: PruneResult): string[] {
  const lines: string[] = [];
  let removed = 0;
  let freed = 0;
  for (const d of r.domains) {
    if (d.error !== undefined) {
      lines.push(`${d.domain}: skipped: ${d.error}`);
      continue;
    }
    const gone = r.dryRun ? d.remove.length : d.deleted.length;
    removed += gone;
    freed += d.freedBytes;
    lines.push(`${d.domain}: keep ${d.keep.length}, ${r.dryRun ? 'would remove' : 'removed'} ${gone} (${formatBytes(d.freedBytes)})`);
    const all = [...d.keep.map((s) => ({ s, keep: true })), ...d.remove.map((s) => ({ s, keep: false }))].sort(
      (a, b) => a.s.time.getTime() - b.s.time.getTime() || a.s.seq - b.s.seq,
    );
    for (const { s, keep } of all) {
      const verb = keep ? 'keep' : r.dryRun ? 'would remove' : d.deleted.includes(s.path) ? 'removed' : 'not removed';
      lines.push(`  ${verb.padEnd(12)} ${s.id}  ${(d.reasons[s.path] ?? []).join('; ')}`);
    }
  }
  const sets = `${removed} set${removed === 1 ? '' : 's'}`;
  const gc = r.gc;
  if (gc?.status === 'collected') {
    freed += gc.bytesFreed;
    lines.push(
      `chunk store: removed ${gc.chunksRemoved} chunk${gc.chunksRemoved === 1 ? '' : 's'} no set uses (${formatBytes(gc.bytesFreed)}), ${gc.chunksKept} kept`,
    );
  } else if (gc?.status === 'busy') {
    lines.push(`chunk store busy (a backup is running): ${sets} removed, their chunks will be collected by the next prune`);
  } else if (gc?.status === 'failed') {
    lines.push('chunk store not collected (the error is below)');
  } else if (gc?.status === 'estimated') {
    freed += gc.bytesFreed;
    lines.push(
      `chunk store: would remove ${gc.chunksRemoved} chunk${gc.chunksRemoved === 1 ? '' : 's'} only these sets use (${formatBytes(gc.bytesFreed)}), and any no set uses`,
    );
  } else if (gc?.status === 'not-collected') {
    lines.push(
      r.dryRun
        ? 'dry run: the chunk store is not counted (the sets to remove use too many chunks); prune frees the chunks no remaining set uses'
        : 'chunk store not collected',
    );
  }
  lines.push(
    r.dryRun ? `dry run: would remove ${sets}, freeing ${formatBytes(freed)}; nothing was changed` : `removed ${sets}, freed ${formatBytes(freed)}`,
  );
  return lines;
}

/** Warnings for stderr: chunks that remaining sets use and the store lacks, the store not collected. */
export function pruneWarnings(r: PruneResult): string[] {
  const gc = r.gc;
  if (gc?.status === 'failed') return [`kvmbak: ${gc.error}`];
  if (gc?.status === 'collected' && gc.missingCount > 0) {
    const first = gc.missing[0];
    return [
      `kvmbak: warning: ${gc.missingCount} chunk${gc.missingCount === 1 ? '' : 's'} that remaining sets use ${gc.missingCount === 1 ? 'is' : 'are'} missing from ${gc.store}` +
        `${first !== undefined ? ` (first: ${first.id}, in ${first.list})` : ''}: those sets cannot be restored in full; kvmbak verify names them`,
    ];
  }
  return [];
}

export const pruneCommand: CommandModule<GlobalArgs, PruneArgs> = {
  command: 'prune <dest> [domain]',
  describe: 'Delete backup sets that no retention rule keeps (never the newest complete set of a domain), then the chunks no remaining set uses',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('dest', { type: 'string', demandOption: true, describe: 'the backup destination folder' })
      .positional('domain', { type: 'string', describe: 'only this domain (default: every domain in DEST)' })
      .option('keep-last', { type: 'number', describe: 'keep the N newest sets' })
      .option('keep-daily', { type: 'number', describe: 'keep the newest set of each of the last N days with sets' })
      .option('keep-weekly', { type: 'number', describe: 'keep the newest set of each of the last N ISO weeks with sets' })
      .option('keep-monthly', { type: 'number', describe: 'keep the newest set of each of the last N months with sets' })
      .option('dry-run', { alias: 'n', type: 'boolean', describe: 'show what would be removed, remove nothing' }) as unknown as Argv<PruneArgs>,
  handler: async (argv) => {
    const rules = rulesFrom(argv);
    const r: PruneBackupsResult = await runCancellable((signal) =>
      pruneBackups(argv.dest, argv.domain, rules, { dryRun: argv['dry-run'] ?? false, signal }),
    );
    const skipped = r.domains.filter((d) => d.error !== undefined);
    const failed = skipped.length > 0 || r.gc?.status === 'failed' || r.bases.errors.length > 0;
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok: !failed, command: 'prune', ...r }, null, 2)}\n`);
    else
      process.stdout.write(
        `${[...formatPrune(r), ...r.bases.removed.map((b) => `removed the thin_delta base ${b} (no remaining set uses it)`)].join('\n')}\n`,
      );
    for (const e of r.bases.errors) process.stderr.write(`kvmbak: ${e}\n`);
    for (const d of skipped) process.stderr.write(`kvmbak: prune skipped ${d.domain}: ${d.error}\n`);
    for (const w of pruneWarnings(r)) process.stderr.write(`${w}\n`);
    if (failed) process.exitCode = 1;
  },
};
