/**
 * The layering rule, enforced: the CLI reaches the library only through its
 * public entry (src/index.ts); lvm/, libvirt/ and archive/ never import each
 * other (each can be used, tested and replaced alone); and the lower modules
 * never import the orchestration (backup/, restore/) above them.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.(ts|mts)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative import specifiers of a file, resolved to paths relative to the repository. */
function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found: string[] = [];
  const re = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of text.matchAll(re)) {
    const spec = m[1] ?? m[2];
    if (!spec || !spec.startsWith('.')) continue;
    found.push(
      relative(root, resolve(dirname(file), spec))
        .split(sep)
        .join('/'),
    );
  }
  return found;
}

/** The top module of a path under src/ (`src/lvm/report.js` → `lvm`), or the file name for top-level files. */
function moduleOf(path: string): string {
  const parts = path.split('/');
  return parts.length > 2 ? parts[1]! : parts[1]!.replace(/\.(js|ts)$/, '');
}

describe('layering', () => {
  it('the CLI imports the library only through its package entry (src/index)', () => {
    const bad: string[] = [];
    for (const file of sources(join(root, 'cli'))) {
      for (const target of imports(file)) {
        if (target.startsWith('src/') && target !== 'src/index.js') bad.push(`${relative(root, file)} → ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('lvm, libvirt and archive never import each other', () => {
    const isolated = new Set(['lvm', 'libvirt', 'archive']);
    const bad: string[] = [];
    for (const file of sources(join(root, 'src'))) {
      const from = moduleOf(relative(root, file));
      if (!isolated.has(from)) continue;
      for (const target of imports(file)) {
        const to = moduleOf(target);
        if (target.startsWith('src/') && isolated.has(to) && to !== from) bad.push(`${relative(root, file)} → ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no module below the orchestration imports backup/ or restore/', () => {
    const orchestration = new Set(['backup', 'restore']);
    // jobs/ (unattended runs: selection, config, hooks) sits above the orchestration and may use it.
    const above = new Set(['jobs']);
    const bad: string[] = [];
    for (const file of sources(join(root, 'src'))) {
      const rel = relative(root, file);
      const from = moduleOf(rel);
      if (orchestration.has(from) || above.has(from) || rel === 'src/index.ts') continue;
      for (const target of imports(file)) {
        if (target.startsWith('src/') && orchestration.has(moduleOf(target)) && moduleOf(target) !== from) {
          bad.push(`${rel} → ${target}`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it('the checks see real imports (the scan is not vacuous)', () => {
    const cliImports = sources(join(root, 'cli')).flatMap(imports);
    expect(cliImports).toContain('src/index.js');
    const backupImports = sources(join(root, 'src', 'backup')).flatMap(imports);
    expect(backupImports.some((t) => t.startsWith('src/lvm/'))).toBe(true);
  });
});
