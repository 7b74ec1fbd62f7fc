import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigFileError, checkDomainSections, effectiveSettings, loadConfig, parseConfig } from '../../../src/jobs/index.js';

const FILE = '/etc/kvmbak/kvmbak.toml';

const GOOD = `# nightly backups
dest = "/backup"
mode = "save"
level = 4
threads = 2
snapshot-size = "10%"
keep-daily = 7
hook = "/etc/kvmbak/hook"
hook-timeout = "2m"
metrics-file = "/var/lib/node-exporter/kvmbak.prom"
bwlimit = "200M"
domains = ["web01", "db01"]

[domain.db01]
mode = "pause"
keep-last = 3
exclude = ["vdb"]

[domain."web.02"]
dest = "/other"
`;

function errorOf(text: string): ConfigFileError {
  try {
    parseConfig(text, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigFileError);
    return e as ConfigFileError;
  }
  throw new Error('no error');
}

describe('parseConfig', () => {
  it('reads global defaults and per-domain sections', () => {
    const c = parseConfig(GOOD, FILE);
    expect(c.global).toEqual({
      dest: '/backup',
      mode: 'save',
      level: 4,
      threads: 2,
      snapshotSize: '10%',
      keepDaily: 7,
      hook: '/etc/kvmbak/hook',
      hookTimeoutSeconds: 120,
      metricsFile: '/var/lib/node-exporter/kvmbak.prom',
      bwlimit: 200 * 1024 ** 2,
      domains: ['web01', 'db01'],
    });
    expect(c.domains).toEqual({ db01: { mode: 'pause', keepLast: 3, exclude: ['vdb'] }, 'web.02': { dest: '/other' } });
    expect(c.domainLines).toEqual({ db01: 14, 'web.02': 19 });
  });

  it('gives one line naming file, line and key for each kind of mistake', () => {
    expect(errorOf('dest = "/b"\nlevle = 3\n').message).toBe(
      `${FILE}:2: levle: unknown key; known keys: dest, mode, format, full, level, threads, snapshot-size, exclude, quiesce-fallback, agent-timeout, keep-last, keep-daily, keep-weekly, keep-monthly, hook, hook-timeout, bwlimit, uri, metrics-file, domains, all, exclude-domain, and [domain.NAME] sections`,
    );
    expect(errorOf('level = "3"\n').message).toBe(`${FILE}:1: level: must be a whole number from 1 to 9, got "3"`);
    expect(errorOf('\n\nlevel = 12\n').message).toBe(`${FILE}:3: level: must be a whole number from 1 to 9, got 12`);
    expect(errorOf('bwlimit = "200X"\n').message).toBe(`${FILE}:1: bwlimit: "200X" is not a size; write e.g. "200M" or "1G"`);
    expect(errorOf('snapshot-size = "150%"\n').message).toBe(`${FILE}:1: snapshot-size: "150%" is not a snapshot size; write e.g. "2G" or "10%"`);
    expect(errorOf('dest = "backup"\n').message).toBe(`${FILE}:1: dest: must be an absolute path, got "backup"`);
    expect(errorOf('mode = "fast"\n').message).toMatch(/^\/etc\/kvmbak\/kvmbak.toml:1: mode: must be one of "save", /);
    expect(errorOf('[domain.web01]\nmode = "save"\nkeep-lats = 2\n').message).toMatch(
      new RegExp(`^${FILE}:3: keep-lats: unknown key in \\[domain.web01\\]; known keys: dest, mode,`),
    );
    expect(errorOf('[domain.web01]\nmetrics-file = "/x"\n').message).toBe(
      `${FILE}:2: metrics-file: applies to the whole run: set it at the top of the file, not in [domain.web01]`,
    );
    expect(errorOf('dest = "/b"\n[retention]\nkeep = 1\n').message).toMatch(new RegExp(`^${FILE}:2: retention: unknown key;`));
    expect(errorOf('domain = "web01"\n').message).toBe(`${FILE}:1: domain: must hold sections such as [domain.web01], one per domain`);
    const syntax = errorOf('dest = "/b"\nlevel = = 3\n');
    expect(syntax.line).toBe(2);
    expect(syntax.message.split('\n')).toHaveLength(1);
    expect(syntax.message).toMatch(new RegExp(`^${FILE}:2: syntax: .*the file is not valid TOML$`));
  });

  it('flags a section naming a domain that is not defined', () => {
    const c = parseConfig(GOOD, FILE);
    expect(() => checkDomainSections(c, ['db01', 'web.02', 'web01'])).not.toThrow();
    expect(() => checkDomainSections(c, ['db01', 'web01'])).toThrow(
      `${FILE}:19: domain.web.02: no domain named web.02 is defined (defined: db01, web01); fix the name or remove the section`,
    );
  });
});

describe('effectiveSettings', () => {
  it('layers the command line over the domain section over the file', () => {
    const c = parseConfig(GOOD, FILE);
    const db = effectiveSettings(c, 'db01', { level: 9 });
    expect(db.settings).toMatchObject({ dest: '/backup', mode: 'pause', level: 9, keepDaily: 7, keepLast: 3, exclude: ['vdb'] });
    expect(db.sources).toMatchObject({ dest: 'file', mode: 'domain', level: 'command line', keepLast: 'domain' });
    const web = effectiveSettings(c, 'web01');
    expect(web.settings.mode).toBe('save');
    expect(web.settings.keepLast).toBeUndefined();
    expect(effectiveSettings(null, 'x', { mode: 'pause' }).settings).toEqual({ mode: 'pause' });
  });
});

describe('loadConfig', () => {
  it('reads a named file, says so when it is missing, and treats a missing default file as none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvmbak-config-'));
    try {
      await writeFile(join(dir, 'k.toml'), 'dest = "/b"\n');
      expect((await loadConfig(join(dir, 'k.toml')))!.global.dest).toBe('/b');
      await expect(loadConfig(join(dir, 'nope.toml'))).rejects.toThrow(`configuration file ${join(dir, 'nope.toml')} does not exist`);
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});
