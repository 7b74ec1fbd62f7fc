/** scripts/preflight.mjs: a build without a library's -dev package stops with one line naming the package. */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../../scripts/preflight.mjs', import.meta.url));
const pcDir = spawnSync('pkg-config', ['--variable', 'pcfiledir', 'libvirt'], { encoding: 'utf8' }).stdout.trim();

/** Runs the preflight with pkg-config seeing only the .pc files given. */
function preflightWith(pcFiles: string[], extra: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'kvmbak-pc-'));
  dirs.push(dir);
  for (const f of pcFiles) copyFileSync(join(pcDir, f), join(dir, f));
  return spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, PKG_CONFIG_LIBDIR: dir, ...extra } });
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('build preflight', { timeout: 20_000 }, () => {
  it('passes on this machine', () => {
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('without libdeflate-dev: one line naming the package, exit 1', () => {
    const r = preflightWith(['libvirt.pc']);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      'kvmbak: libdeflate development files not found (pkg-config knows no "libdeflate"); fix: apt-get install -y libdeflate-dev\n',
    );
  });

  it('without libvirt-dev: one line naming the package, exit 1', () => {
    const r = preflightWith(['libdeflate.pc']);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('kvmbak: libvirt development files not found (pkg-config knows no "libvirt"); fix: apt-get install -y libvirt-dev\n');
  });

  it('a libdeflate older than the floor: says so, exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmbak-pc-'));
    dirs.push(dir);
    copyFileSync(join(pcDir, 'libvirt.pc'), join(dir, 'libvirt.pc'));
    writeFileSync(join(dir, 'libdeflate.pc'), 'Name: libdeflate\nDescription: old\nVersion: 1.6\nLibs: -ldeflate\nCflags:\n');
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, PKG_CONFIG_LIBDIR: dir } });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('kvmbak: libdeflate 1.6 is too old, kvmbak needs libdeflate >= 1.14; fix: apt-get install -y libdeflate-dev\n');
  });
});
