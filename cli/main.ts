import yargs from 'yargs';
import { toolVersion } from '../src/index.js';
import { commands } from './commands/index.js';
import { reportError, UsageError } from './errors.js';

/** What yargs knows of the options (its getOptions()), as far as rejectRepeated needs it. */
interface RepeatCheckOptions {
  key: Record<string, unknown>;
  array: string[];
  alias: Record<string, string[]>;
}

/**
 * A single-value option given more than once is a usage error (yargs would
 * pass an array on, which no command expects): one line naming it.
 */
function rejectRepeated(args: Record<string, unknown>, options: RepeatCheckOptions): void {
  const aliases = new Set(Object.values(options.alias).flat());
  for (const key of Object.keys(options.key)) {
    if (aliases.has(key) || options.array.includes(key)) continue;
    const v = args[key];
    if (Array.isArray(v)) throw new UsageError(`${key.length === 1 ? '-' : '--'}${key} was given ${v.length} times; give it once`);
  }
}

/** Runs the kvmbak command line; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  // The options yargs knows at the time (the command's included): read from the parser once it exists.
  let optionsNow = (): RepeatCheckOptions => ({ key: {}, array: [], alias: {} });
  const parser = yargs(argv)
    .scriptName('kvmbak')
    .usage('$0 <command> [options]\n\nLive backup and restore of KVM/libvirt VMs on LVM.')
    .version(toolVersion())
    .option('uri', {
      alias: ['c', 'connect'],
      type: 'string',
      describe: "libvirt connection URI (default: LIBVIRT_DEFAULT_URI, then libvirt's default)",
      global: true,
    })
    .option('json', { type: 'boolean', describe: 'print one machine-readable JSON document', global: true })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'no progress output', global: true })
    .option('debug', { type: 'boolean', describe: 'show stack traces on errors', global: true })
    .strict()
    .demandCommand(1, 'Name a command; see kvmbak --help.')
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .middleware((args) => rejectRepeated(args, optionsNow()), true)
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(msg, { multiline: true });
    });
  optionsNow = () => (parser as unknown as { getOptions(): RepeatCheckOptions }).getOptions();
  for (const c of commands) parser.command(c);
  try {
    await parser.parseAsync();
    exitCode = typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    exitCode = reportError(err, argv.includes('--debug'), argv.includes('--json'));
  }
  return exitCode;
}
