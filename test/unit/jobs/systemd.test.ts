import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { installSystemdUnits, parseConfig, systemdUnits, systemdWord, uninstallSystemdUnits } from '../../../src/jobs/index.js';

const run = promisify(execFile);
let dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
});

const config = parseConfig('dest = "/backup"\n[domain.db]\ndest = "/mnt/other backups"\n', '/etc/kvmbak/kvmbak.toml');
const command = [process.execPath, '/opt/kvm bak/dist/cli.js'];

describe('systemd units', () => {
  it('run the configured backups on a persistent, randomized timer, and recover every destination at boot', () => {
    const units = Object.fromEntries(
      systemdUnits({ command, config, onCalendar: 'Mon..Fri 01:00', randomizedDelaySeconds: 600 }).map((u) => [u.name, u.text]),
    );
    expect(units['kvmbak.service']).toContain(`\nExecStart=${process.execPath} "/opt/kvm bak/dist/cli.js" backup --config /etc/kvmbak/kvmbak.toml\n`);
    expect(units['kvmbak.service']).toContain('\nRequiresMountsFor=/backup /mnt/other\\x20backups\n');
    expect(units['kvmbak.timer']).toContain('\nOnCalendar=Mon..Fri 01:00\nPersistent=true\nRandomizedDelaySec=600\nUnit=kvmbak.service\n');
    expect(units['kvmbak-recover.service']).toContain(
      `\nExecStart=${process.execPath} "/opt/kvm bak/dist/cli.js" recover --dest /backup\nExecStart=${process.execPath} "/opt/kvm bak/dist/cli.js" recover --dest "/mnt/other backups"\n`,
    );
    expect(units['kvmbak-recover.service']).toContain('\nWantedBy=multi-user.target\n');
  });

  it("recover at boot on the configuration file's libvirt connection, not the default one", () => {
    const remote = parseConfig('uri = "qemu+ssh://root@host2/system"\ndest = "/backup"\n', '/etc/kvmbak/kvmbak.toml');
    const units = Object.fromEntries(systemdUnits({ command, config: remote }).map((u) => [u.name, u.text]));
    expect(units['kvmbak-recover.service']).toContain(
      `\nExecStart=${process.execPath} "/opt/kvm bak/dist/cli.js" recover --dest /backup --uri qemu+ssh://root@host2/system\n`,
    );
    // The backup service reads the connection from the file itself.
    expect(units['kvmbak.service']).toContain(`\nExecStart=${process.execPath} "/opt/kvm bak/dist/cli.js" backup --config /etc/kvmbak/kvmbak.toml\n`);
  });

  it('quote and escape command words as systemd reads them', () => {
    expect(systemdWord('/usr/bin/node')).toBe('/usr/bin/node');
    expect(systemdWord('50%')).toBe('"50%%"');
    expect(systemdWord('$HOME "x"')).toBe('"$$HOME \\"x\\""');
    expect(() => systemdWord('a\nb')).toThrow('a unit command cannot hold a line break or NUL');
  });

  it("pass systemd-analyze verify, and install/uninstall touch only kvmbak's own files", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvmbak-units-'));
    dirs.push(dir);
    // verify checks that the command exists: point the units at this node and a real script.
    const script = join(dir, 'cli.js');
    await writeFile(script, '');
    const written = await installSystemdUnits({
      command: [process.execPath, script],
      config: parseConfig(`dest = "${dir}"\n`, join(dir, 'k.toml')),
      unitDir: dir,
      systemctl: false,
    });
    expect(written.map((p) => p.slice(dir.length + 1)).sort()).toEqual(['kvmbak-recover.service', 'kvmbak.service', 'kvmbak.timer']);
    expect((await stat(join(dir, 'kvmbak.timer'))).mode & 0o777).toBe(0o644);
    const v = await run('systemd-analyze', ['verify', ...written]).catch((e: { stdout: string; stderr: string; code: number }) => e);
    expect('code' in v ? `${v.code}: ${v.stderr}` : '').toBe('');
    expect(v.stderr).toBe('');

    await expect(installSystemdUnits({ command, config, unitDir: dir, systemctl: false, onCalendar: 'at 25 o clock' })).rejects.toThrow(
      /^onCalendar: "at 25 o clock" is not a calendar expression systemd accepts/,
    );
    await writeFile(join(dir, 'kvmbak.timer'), '[Timer]\nOnCalendar=daily\n');
    await expect(installSystemdUnits({ command, config, unitDir: dir, systemctl: false })).rejects.toThrow(
      `${join(dir, 'kvmbak.timer')} exists and was not written by kvmbak; move it away first`,
    );
    expect((await uninstallSystemdUnits({ unitDir: dir, systemctl: false })).length).toBe(2);
    expect((await readdir(dir)).sort()).toEqual(['cli.js', 'kvmbak.timer']);
    expect(await readFile(join(dir, 'kvmbak.timer'), 'utf8')).toBe('[Timer]\nOnCalendar=daily\n');
  });
});
