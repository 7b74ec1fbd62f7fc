/**
 * The configuration file (default /etc/kvmbak/kvmbak.toml): global defaults
 * for unattended backups and per-domain sections that override them. Keys
 * are the long command-line option names, so a setting reads the same in
 * the file and on the command line:
 *
 *   dest = "/backup"
 *   mode = "save"
 *   keep-daily = 7
 *   hook = "/etc/kvmbak/hook"
 *   metrics-file = "/var/lib/prometheus/node-exporter/kvmbak.prom"
 *   domains = ["web01", "db01"]        # or: all = true
 *
 *   [domain.db01]
 *   mode = "pause"
 *   keep-last = 3
 *
 * Every error names the file, the line and the key, in one line.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { TomlError, parse } from 'smol-toml';
import { ConfigError } from '../errors.js';
import { parseSnapshotSize } from '../backup/index.js';
import { BACKUP_MODES, STORAGE_FORMATS, type BackupMode, type StorageFormat } from '../manifest/index.js';
import { parseSize } from '../util/size.js';
import { parseDuration } from './duration.js';

export const DEFAULT_CONFIG_FILE = '/etc/kvmbak/kvmbak.toml';

/** Settings that may differ per domain (global defaults, a [domain.NAME] section, the command line). */
export interface DomainSettings {
  dest?: string;
  mode?: BackupMode;
  /** How disks and memory are stored: chunks (DEST/.chunks, the default) or image. */
  format?: StorageFormat;
  /** Format chunks: read every disk whole, even a thin disk whose base allows thin delta. */
  full?: boolean;
  level?: number;
  threads?: number;
  snapshotSize?: string;
  /** Disk targets left out. */
  exclude?: string[];
  quiesceFallback?: 'pause' | 'none';
  agentTimeoutSeconds?: number;
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  /** Executable called at each phase of a run. */
  hook?: string;
  hookTimeoutSeconds?: number;
  /** Read-rate cap of the snapshot, bytes per second. */
  bwlimit?: number;
}

/** Settings of a whole run (only at the top of the file, or on the command line). */
export interface JobSettings {
  uri?: string;
  metricsFile?: string;
  /** Domains backed up when none is named. */
  domains?: string[];
  /** Back up every domain whose disks are LVs when none is named. */
  all?: boolean;
  excludeDomains?: string[];
}

export interface KvmbakConfig {
  /** The file read. */
  file: string;
  global: DomainSettings & JobSettings;
  /** Per-domain sections, by domain name. */
  domains: Record<string, DomainSettings>;
  /** Line of each [domain.NAME] header (for errors found later, e.g. a domain that does not exist). */
  domainLines: Record<string, number>;
}

/** A bad configuration file: names the file, the line and the key. A usage error (exit 2). */
export class ConfigFileError extends ConfigError {
  readonly file: string;
  readonly line: number;
  readonly key: string;
  constructor(file: string, line: number, key: string, problem: string, options: { cause?: unknown } = {}) {
    super(`${file}:${line}: ${key}: ${problem}`, key, options);
    this.file = file;
    this.line = line;
    this.key = key;
  }
}
Object.defineProperty(ConfigFileError.prototype, 'name', { value: 'ConfigFileError', enumerable: false });

type Check = (value: unknown, fail: (problem: string) => never) => unknown;

const str: Check = (v, fail) => (typeof v === 'string' && v !== '' ? v : fail(`must be a non-empty string, got ${show(v)}`));
const absPath: Check = (v, fail) => {
  const s = str(v, fail) as string;
  return isAbsolute(s) ? s : fail(`must be an absolute path, got ${show(v)}`);
};
const int =
  (min: number, max = Number.MAX_SAFE_INTEGER): Check =>
  (v, fail) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
      ? v
      : fail(`must be a whole number ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, got ${show(v)}`);
const oneOf =
  (values: readonly string[]): Check =>
  (v, fail) =>
    typeof v === 'string' && values.includes(v) ? v : fail(`must be one of ${values.map((x) => `"${x}"`).join(', ')}, got ${show(v)}`);
const strList: Check = (v, fail) =>
  Array.isArray(v) && v.every((x) => typeof x === 'string' && x !== '')
    ? [...(v as string[])]
    : fail(`must be a list of names such as ["a", "b"], got ${show(v)}`);
const bool: Check = (v, fail) => (typeof v === 'boolean' ? v : fail(`must be true or false, got ${show(v)}`));
/** A read-rate cap: a size per second (`200M`), above 0. Throws a ConfigError naming `option`. */
export function parseBwlimit(v: string | number, option = 'bwlimit'): number {
  const n = parseSize(v, option);
  if (!(n > 0)) throw new ConfigError(`${option}: must be more than 0, e.g. 200M`, option);
  return n;
}

const size: Check = (v, fail) => {
  if (typeof v !== 'string' && typeof v !== 'number') return fail(`must be a size such as "200M", got ${show(v)}`);
  try {
    const n = parseSize(v);
    return n > 0 ? n : fail('must be more than 0');
  } catch (e) {
    return fail(`${show(v)} is not a size; write e.g. "200M" or "1G"`);
  }
};
const snapshotSize: Check = (v, fail) => {
  if (typeof v !== 'string' && typeof v !== 'number') return fail(`must be a size such as "2G" or a share such as "10%", got ${show(v)}`);
  try {
    parseSnapshotSize(v);
    return String(v);
  } catch {
    return fail(`${show(v)} is not a snapshot size; write e.g. "2G" or "10%"`);
  }
};
const duration: Check = (v, fail) => {
  if (typeof v !== 'string' && typeof v !== 'number') return fail(`must be a duration such as "5m", got ${show(v)}`);
  try {
    return parseDuration(v, 'duration');
  } catch {
    return fail(`${show(v)} is not a duration; write e.g. "90s", "5m" or "1h"`);
  }
};

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return v instanceof Date ? 'a date' : 'a table';
  return String(v);
}

interface KeySpec {
  field: keyof DomainSettings | keyof JobSettings;
  check: Check;
  /** Only at the top of the file. */
  globalOnly?: boolean;
}

/** Every key of the file: the long option name → the settings field and its check. */
export const CONFIG_KEYS: Record<string, KeySpec> = {
  dest: { field: 'dest', check: absPath },
  mode: { field: 'mode', check: oneOf(BACKUP_MODES) },
  format: { field: 'format', check: oneOf(STORAGE_FORMATS) },
  full: { field: 'full', check: bool },
  level: { field: 'level', check: int(1, 9) },
  threads: { field: 'threads', check: int(1, 1024) },
  'snapshot-size': { field: 'snapshotSize', check: snapshotSize },
  exclude: { field: 'exclude', check: strList },
  'quiesce-fallback': { field: 'quiesceFallback', check: oneOf(['pause', 'none']) },
  'agent-timeout': { field: 'agentTimeoutSeconds', check: int(1) },
  'keep-last': { field: 'keepLast', check: int(0) },
  'keep-daily': { field: 'keepDaily', check: int(0) },
  'keep-weekly': { field: 'keepWeekly', check: int(0) },
  'keep-monthly': { field: 'keepMonthly', check: int(0) },
  hook: { field: 'hook', check: absPath },
  'hook-timeout': { field: 'hookTimeoutSeconds', check: duration },
  bwlimit: { field: 'bwlimit', check: size },
  uri: { field: 'uri', check: str, globalOnly: true },
  'metrics-file': { field: 'metricsFile', check: absPath, globalOnly: true },
  domains: { field: 'domains', check: strList, globalOnly: true },
  all: { field: 'all', check: bool, globalOnly: true },
  'exclude-domain': { field: 'excludeDomains', check: strList, globalOnly: true },
};

/** The settings field → its key in the file (for messages and `kvmbak config`). */
export const KEY_OF_FIELD: Record<string, string> = Object.fromEntries(Object.entries(CONFIG_KEYS).map(([k, s]) => [s.field, k]));

/** Where keys and table headers are in the text (TOML values carry no positions). */
class LineIndex {
  readonly #keys = new Map<string, number>();
  readonly #tables = new Map<string, number>();

  constructor(text: string) {
    let table = '';
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      const header = /^\[\s*([^[\]]+?)\s*\](\s*#.*)?$/.exec(line);
      if (header) {
        table = splitKey(header[1]!).join('.');
        if (!this.#tables.has(table)) this.#tables.set(table, i + 1);
        return;
      }
      const key = /^((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=/.exec(line);
      if (key) {
        const path = [table, ...splitKey(key[1]!)].filter((p) => p !== '').join('.');
        if (!this.#keys.has(path)) this.#keys.set(path, i + 1);
        // A dotted key also opens its tables (domain.web01.mode = ...).
        const parts = path.split('.');
        for (let n = 1; n < parts.length; n++) {
          const t = parts.slice(0, n).join('.');
          if (!this.#tables.has(t)) this.#tables.set(t, i + 1);
        }
      }
    });
  }

  key(table: string, key: string): number {
    const path = table === '' ? key : `${table}.${key}`;
    return this.#keys.get(path) ?? this.#tables.get(path) ?? this.table(table);
  }

  table(table: string): number {
    return this.#tables.get(table) ?? this.#keys.get(table) ?? 1;
  }
}

function splitKey(key: string): string[] {
  const out: string[] = [];
  const re = /\s*(?:"([^"]*)"|'([^']*)'|([^.\s"']+))\s*(?:\.|$)/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(key)) !== null && m[0] !== '') out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date);
}

/** Parses and validates the text of a configuration file; `file` is named in errors. */
export function parseConfig(text: string, file: string): KvmbakConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
      throw new ConfigFileError(file, e.line, 'syntax', `${first}; the file is not valid TOML`, { cause: e });
    }
    throw e;
  }
  const lines = new LineIndex(text);
  const read = (table: string, entries: Record<string, unknown>, where: string, allowGlobal: boolean): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(entries)) {
      const line = lines.key(table, key);
      const fail = (problem: string): never => {
        throw new ConfigFileError(file, line, key, problem);
      };
      const spec = CONFIG_KEYS[key];
      if (spec === undefined) {
        const known = Object.keys(CONFIG_KEYS).filter((k) => allowGlobal || !CONFIG_KEYS[k]!.globalOnly);
        fail(`unknown key${where}; known keys: ${known.join(', ')}${allowGlobal ? ', and [domain.NAME] sections' : ''}`);
      }
      if (spec!.globalOnly && !allowGlobal) fail(`applies to the whole run: set it at the top of the file, not${where}`);
      out[spec!.field] = spec!.check(value, fail);
    }
    return out;
  };

  const { domain: domainTable, ...top } = doc;
  const global = read('', top, '', true) as DomainSettings & JobSettings;
  const domains: Record<string, DomainSettings> = {};
  const domainLines: Record<string, number> = {};
  if (domainTable !== undefined) {
    if (!isTable(domainTable)) {
      throw new ConfigFileError(file, lines.key('', 'domain'), 'domain', 'must hold sections such as [domain.web01], one per domain');
    }
    for (const [name, section] of Object.entries(domainTable)) {
      const line = lines.table(`domain.${name}`);
      if (!isTable(section)) {
        throw new ConfigFileError(file, line, `domain.${name}`, 'must be a section: write [domain.NAME] and its keys below it');
      }
      domainLines[name] = line;
      domains[name] = read(`domain.${name}`, section, ` in [domain.${name}]`, false) as DomainSettings;
    }
  }
  return { file, global, domains, domainLines };
}

/**
 * Reads a configuration file. Without `path`, the default file is read when
 * it exists (null when it does not); a named file must exist.
 */
export async function loadConfig(path?: string): Promise<KvmbakConfig | null> {
  const file = path ?? DEFAULT_CONFIG_FILE;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (path === undefined && code === 'ENOENT') return null;
    throw new ConfigError(
      code === 'ENOENT'
        ? `configuration file ${file} does not exist; check the path given to config`
        : `cannot read configuration file ${file}: ${(e as Error).message}`,
      'config',
      { cause: e },
    );
  }
  return parseConfig(text, file);
}

/**
 * Checks the [domain.NAME] sections against the domains that exist: a
 * section for an unknown domain is most likely a typo, and silently
 * ignoring it would back that domain up with the wrong settings.
 */
export function checkDomainSections(config: KvmbakConfig, defined: readonly string[]): void {
  for (const name of Object.keys(config.domains)) {
    if (!defined.includes(name)) {
      throw new ConfigFileError(
        config.file,
        config.domainLines[name] ?? 1,
        `domain.${name}`,
        `no domain named ${name} is defined (defined: ${defined.join(', ') || 'none'}); fix the name or remove the section`,
      );
    }
  }
}

/** Where an effective setting came from. */
export type SettingSource = 'file' | 'domain' | 'command line';

export interface EffectiveSettings {
  domain: string;
  settings: DomainSettings;
  /** Per settings field: where its value came from (absent: not set, kvmbak's default applies). */
  sources: Partial<Record<keyof DomainSettings, SettingSource>>;
}

const DOMAIN_FIELDS = Object.values(CONFIG_KEYS)
  .filter((s) => !s.globalOnly)
  .map((s) => s.field as keyof DomainSettings);

/** The settings for one domain: the command line over its [domain.NAME] section over the top of the file. */
export function effectiveSettings(config: KvmbakConfig | null, domain: string, commandLine: DomainSettings = {}): EffectiveSettings {
  const settings: Record<string, unknown> = {};
  const sources: Record<string, SettingSource> = {};
  const layers: [DomainSettings | undefined, SettingSource][] = [
    [config?.global, 'file'],
    [config?.domains[domain], 'domain'],
    [commandLine, 'command line'],
  ];
  for (const [layer, source] of layers) {
    if (layer === undefined) continue;
    for (const f of DOMAIN_FIELDS) {
      if (layer[f] !== undefined) {
        settings[f] = layer[f];
        sources[f] = source;
      }
    }
  }
  return { domain, settings: settings as DomainSettings, sources };
}
