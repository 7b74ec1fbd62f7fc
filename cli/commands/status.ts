import type { Argv, CommandModule } from 'yargs';
import { type StatusResult, backupStatus, formatAge, parseDuration } from '../../src/index.js';
import { UsageError, asUsage } from '../errors.js';
import { type ConfigArgs, configOption, readConfig, reportConfigError } from './config.js';

interface StatusArgs extends ConfigArgs {
  dest?: string;
  domain?: string;
  'max-age'?: string;
}

/** One line per domain: newest complete set, its age, the last run's result. */
export function statusLines(r: StatusResult): string[] {
  if (r.domains.length === 0) return [`no backups in ${r.dest}`];
  const rows = r.domains.map((d) => [
    d.domain,
    d.newest?.id ?? '-',
    d.ageSeconds === null ? '-' : formatAge(d.ageSeconds),
    d.lastRun === null ? '-' : `${d.lastRun.ok ? 'ok' : 'FAILED'} ${d.lastRun.finishedAt.replace(/\.\d{3}Z$/, 'Z')}`,
    d.ok ? 'ok' : d.problems.join('; '),
  ]);
  const head = ['DOMAIN', 'NEWEST SET', 'AGE', 'LAST RUN', 'STATUS'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (row: string[]): string => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)];
}

export const statusCommand: CommandModule<ConfigArgs, StatusArgs> = {
  command: 'status [dest] [domain]',
  describe: "Newest backup set per domain, its age and the last run's result; exit 1 when a run failed or a set is too old",
  builder: (y: Argv<ConfigArgs>) =>
    y
      .positional('dest', { type: 'string', describe: 'backup destination (default: dest in the configuration file)' })
      .positional('domain', { type: 'string', describe: 'only this domain' })
      .option('max-age', { type: 'string', describe: 'a newest complete set older than this is a problem, e.g. 26h or 2d' })
      .option('config', configOption) as unknown as Argv<StatusArgs>,
  handler: async (argv) => {
    let dest = argv.dest;
    if (dest === undefined) {
      try {
        dest = (await readConfig(argv))?.global.dest;
      } catch (e) {
        if (reportConfigError(e, argv)) return;
        throw e;
      }
      if (dest === undefined) throw new UsageError('name the backup destination (kvmbak status DEST), or set dest in the configuration file');
    }
    let r: StatusResult;
    try {
      const maxAgeSeconds = argv['max-age'] !== undefined ? parseDuration(argv['max-age'], '--max-age') : undefined;
      r = await backupStatus(dest, {
        ...(argv.domain !== undefined ? { domain: argv.domain } : {}),
        ...(maxAgeSeconds !== undefined ? { maxAgeSeconds } : {}),
      });
    } catch (e) {
      throw asUsage(e);
    }
    if (argv.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    else process.stdout.write(`${statusLines(r).join('\n')}\n`);
    if (!r.ok) process.exitCode = 1;
  },
};
