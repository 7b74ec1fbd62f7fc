import type { Argv, CommandModule } from 'yargs';
import {
  CONFIG_KEYS,
  ConfigFileError,
  DEFAULT_CONFIG_FILE,
  type DomainSettings,
  type KvmbakConfig,
  checkDomainSections,
  effectiveSettings,
  loadConfig,
  openHypervisor,
} from '../../src/index.js';
import { UsageError, asUsage } from '../errors.js';
import { formatRate } from '../render/index.js';
import { type GlobalArgs } from './restore.js';

export interface ConfigArgs extends GlobalArgs {
  config?: string;
}

/** The --config option, shared by every command that reads the file. */
export const configOption = {
  type: 'string',
  describe: `configuration file (default ${DEFAULT_CONFIG_FILE} when it exists)`,
} as const;

/**
 * A configuration file error is reported as its own single line (file, line,
 * key) with exit status 2 — no usage hint, the file is what needs fixing.
 * Returns true when `e` was one.
 */
export function reportConfigError(e: unknown, argv: GlobalArgs): boolean {
  if (!(e instanceof ConfigFileError)) return false;
  if (argv.json) {
    const error = { name: e.name, code: e.code, message: e.message, file: e.file, line: e.line, key: e.key };
    process.stdout.write(`${JSON.stringify({ ok: false, error }, null, 2)}\n`);
  }
  process.stderr.write(`kvmbak: ${e.message}\n`);
  process.exitCode = 2;
  return true;
}

/** Reads --config (or the default file when present); a missing named file is a usage error. */
export async function readConfig(argv: ConfigArgs): Promise<KvmbakConfig | null> {
  try {
    return await loadConfig(argv.config);
  } catch (e) {
    throw e instanceof ConfigFileError ? e : asUsage(e);
  }
}

/** `key = value` lines of settings, in the file's key order, with where each came from. */
export function settingLines(settings: DomainSettings | KvmbakConfig['global'], sources: Partial<Record<string, string>> = {}): string[] {
  const lines: string[] = [];
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    const v = (settings as Record<string, unknown>)[spec.field];
    if (v === undefined) continue;
    const shown = key === 'bwlimit' ? `"${formatRate(v as number)}"` : key === 'hook-timeout' ? `"${String(v)}s"` : JSON.stringify(v);
    const from = sources[spec.field];
    lines.push(`${key} = ${shown}${from !== undefined ? `    # ${from}` : ''}`);
  }
  return lines;
}

interface ConfigCmdArgs extends ConfigArgs {
  domain?: string;
}

export const configCommand: CommandModule<GlobalArgs, ConfigCmdArgs> = {
  command: 'config [domain]',
  describe: 'Check the configuration file and print the effective settings (for DOMAIN: its section over the defaults)',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('domain', { type: 'string', describe: 'show the settings a backup of this domain gets' })
      .option('config', configOption) as unknown as Argv<ConfigCmdArgs>,
  handler: async (argv) => {
    let config: KvmbakConfig | null;
    try {
      config = await readConfig(argv);
      if (config === null) {
        throw new UsageError(`no configuration file: ${DEFAULT_CONFIG_FILE} does not exist; create it or give --config PATH`);
      }
      // Sections must name defined domains (a typo would silently back a domain up with the defaults).
      const hv = await openHypervisor(argv.uri ?? config.global.uri);
      try {
        const defined = (await hv.listDomains()).map((d) => d.name);
        checkDomainSections(config, defined);
      } finally {
        hv.close();
      }
    } catch (e) {
      if (reportConfigError(e, argv)) return;
      throw e;
    }
    if (argv.domain !== undefined) {
      const eff = effectiveSettings(config, argv.domain);
      if (argv.json) {
        process.stdout.write(
          `${JSON.stringify({ ok: true, file: config.file, domain: argv.domain, settings: eff.settings, sources: eff.sources }, null, 2)}\n`,
        );
        return;
      }
      const sources = Object.fromEntries(
        Object.entries(eff.sources).map(([k, s]) => [k, s === 'domain' ? `[domain.${argv.domain}]` : 'top of the file']),
      );
      process.stdout.write(`${[`# ${config.file}: settings for ${argv.domain}`, ...settingLines(eff.settings, sources)].join('\n')}\n`);
      return;
    }
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, ...config }, null, 2)}\n`);
      return;
    }
    const lines = [`# ${config.file}: OK`, ...settingLines(config.global)];
    for (const [name, s] of Object.entries(config.domains)) {
      lines.push('', `[domain.${/^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name)}]`, ...settingLines(s));
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
