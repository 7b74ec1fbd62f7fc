import type { Argv, CommandModule } from 'yargs';
import { type PruneResult, type RetentionRules, pruneSets } from '../../src/index.js';
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
  lines.push(
    r.dryRun
      ? `dry run: would remove ${removed} set${removed === 1 ? '' : 's'}, freeing ${formatBytes(freed)}; nothing was changed`
      : `removed ${removed} set${removed === 1 ? '' : 's'}, freed ${formatBytes(freed)}`,
  );
  return lines;
}

export const pruneCommand: CommandModule<GlobalArgs, PruneArgs> = {
  command: 'prune <dest> [domain]',
  describe: 'Delete backup sets that no retention rule keeps (never the newest complete set of a domain)',
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
    const r: PruneResult = await runCancellable((signal) => pruneSets(argv.dest, argv.domain, rules, { dryRun: argv['dry-run'] ?? false, signal }));
    const skipped = r.domains.filter((d) => d.error !== undefined);
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok: skipped.length === 0, command: 'prune', ...r }, null, 2)}\n`);
    else process.stdout.write(`${formatPrune(r).join('\n')}\n`);
    for (const d of skipped) process.stderr.write(`kvmbak: prune skipped ${d.domain}: ${d.error}\n`);
    if (skipped.length > 0) process.exitCode = 1;
  },
};
