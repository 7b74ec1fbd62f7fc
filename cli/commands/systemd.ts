import { realpathSync } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import {
  DEFAULT_ON_CALENDAR,
  DEFAULT_RANDOMIZED_DELAY_SECONDS,
  SYSTEMD_UNIT_DIR,
  installSystemdUnits,
  parseDuration,
  uninstallSystemdUnits,
} from '../../src/index.js';
import { UsageError, asUsage } from '../errors.js';
import { type ConfigArgs, configOption, readConfig, reportConfigError } from './config.js';

interface SystemdArgs extends ConfigArgs {
  action: 'install' | 'uninstall';
  'on-calendar'?: string;
  'randomized-delay'?: string;
  'unit-dir'?: string;
  systemctl: boolean;
}

/** This kvmbak, as a command line a unit can run: node and the real path of the CLI script. */
function selfCommand(): string[] {
  return [process.execPath, realpathSync(process.argv[1]!)];
}

export const systemdCommand: CommandModule<ConfigArgs, SystemdArgs> = {
  command: 'systemd <action>',
  describe: 'Install (or uninstall) kvmbak.service + kvmbak.timer (scheduled backups) and kvmbak-recover.service (boot-time recovery)',
  builder: (y: Argv<ConfigArgs>) =>
    y
      .positional('action', { choices: ['install', 'uninstall'] as const, demandOption: true })
      .option('config', configOption)
      .option('on-calendar', { type: 'string', describe: `when the backups run, a systemd calendar expression (default "${DEFAULT_ON_CALENDAR}")` })
      .option('randomized-delay', {
        type: 'string',
        describe: `random delay added to each start, e.g. 30m (default ${DEFAULT_RANDOMIZED_DELAY_SECONDS / 60}m)`,
      })
      .option('unit-dir', { type: 'string', describe: `where the units go (default ${SYSTEMD_UNIT_DIR})` })
      .option('systemctl', {
        type: 'boolean',
        default: true,
        describe: 'run systemctl daemon-reload and enable/disable the units (--no-systemctl: only write the files)',
      }) as unknown as Argv<SystemdArgs>,
  handler: async (argv) => {
    const unitDir = argv['unit-dir'] ?? SYSTEMD_UNIT_DIR;
    if (argv.action === 'uninstall') {
      const removed = await uninstallSystemdUnits({ unitDir, systemctl: argv.systemctl });
      if (argv.json) process.stdout.write(`${JSON.stringify({ ok: true, removed }, null, 2)}\n`);
      else process.stdout.write(`${removed.length > 0 ? removed.map((p) => `removed ${p}`).join('\n') : 'no kvmbak units installed'}\n`);
      return;
    }
    let config;
    try {
      config = await readConfig(argv);
    } catch (e) {
      if (reportConfigError(e, argv)) return;
      throw e;
    }
    if (config === null)
      throw new UsageError('the units run the backups of a configuration file: create /etc/kvmbak/kvmbak.toml or give --config PATH');
    let written: string[];
    try {
      written = await installSystemdUnits({
        command: selfCommand(),
        config,
        ...(argv['on-calendar'] !== undefined ? { onCalendar: argv['on-calendar'] } : {}),
        ...(argv['randomized-delay'] !== undefined
          ? { randomizedDelaySeconds: Math.round(parseDuration(argv['randomized-delay'], '--randomized-delay')) }
          : {}),
        unitDir,
        systemctl: argv.systemctl,
      });
    } catch (e) {
      throw asUsage(e);
    }
    if (argv.json) process.stdout.write(`${JSON.stringify({ ok: true, written }, null, 2)}\n`);
    else process.stdout.write(`${written.map((p) => `wrote ${p}`).join('\n')}\n`);
  },
};
