/** Small pure helpers of the libvirt layer, the generated error table and the addon loader. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { NativeLoadError, VIR_ERROR_DOMAIN_NAMES, VIR_ERROR_NUMBER_NAMES, formatLibvirtVersion } from '../../../src/index.js';
import { isUuid } from '../../../src/libvirt/hypervisor.js';
import { saveRestoreFlags } from '../../../src/libvirt/domain.js';
import { loadNativeFrom } from '../../../src/native.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

describe('helpers', () => {
  it('formats libvirt version numbers', () => {
    expect(formatLibvirtVersion(9000000)).toBe('9.0.0');
    expect(formatLibvirtVersion(10010003)).toBe('10.10.3');
    expect(formatLibvirtVersion(2)).toBe('0.0.2');
  });

  it('recognises UUIDs the way libvirt parses them', () => {
    expect(isUuid('6695eb01-f6a4-8304-79aa-97f2502e193f')).toBe(true);
    expect(isUuid('6695EB01F6A4830479AA97F2502E193F')).toBe(true);
    expect(isUuid('web-01')).toBe(false);
    expect(isUuid('6695eb01-f6a4-8304-79aa-97f2502e193')).toBe(false);
  });

  it('maps save/restore options to libvirt flags', () => {
    expect(saveRestoreFlags({})).toBe(0);
    expect(saveRestoreFlags({ startMode: 'running' })).toBe(2);
    expect(saveRestoreFlags({ startMode: 'paused', bypassCache: true })).toBe(5);
  });
});

describe('generated libvirt error table', () => {
  it('covers virErrorNumber 0..110 and virErrorDomain 0..72 without gaps', () => {
    expect(Object.keys(VIR_ERROR_NUMBER_NAMES).map(Number)).toEqual(Array.from({ length: 111 }, (_, i) => i));
    expect(Object.keys(VIR_ERROR_DOMAIN_NAMES).map(Number)).toEqual(Array.from({ length: 73 }, (_, i) => i));
    expect(VIR_ERROR_NUMBER_NAMES[42]).toBe('VIR_ERR_NO_DOMAIN');
    expect(VIR_ERROR_NUMBER_NAMES[55]).toBe('VIR_ERR_OPERATION_INVALID');
    expect(VIR_ERROR_DOMAIN_NAMES[18]).toBe('VIR_FROM_STORAGE');
  });

  it('matches the installed virterror.h (scripts/gen-virterror.mjs --check)', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [join(root, 'scripts/gen-virterror.mjs'), '--check']);
    expect(stdout).toContain('matches');
  });
});

describe('addon loader', () => {
  it('lists every path tried and the fix when no addon exists', () => {
    const tried = ['/nonexistent/kvmbak/Release/kvmbak.node', '/nonexistent/kvmbak/Debug/kvmbak.node'];
    let e: unknown;
    try {
      loadNativeFrom(tried);
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(NativeLoadError);
    expect(e).toMatchObject({ code: 'KVMBAK_NATIVE_LOAD', tried });
    const message = (e as Error).message;
    expect(message).toContain(tried.join(', '));
    expect(message).toContain('npm rebuild kvmbak');
    expect(message).toContain('apt-get install');
    expect(message).not.toContain('\n');
  });

  it('reports the dlopen message of a file that is not a loadable addon', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvmbak-load-'));
    try {
      const bogus = join(dir, 'kvmbak.node');
      await writeFile(bogus, 'not an ELF file\n'.repeat(512));
      expect(() => loadNativeFrom([join(dir, 'missing.node'), bogus])).toThrow(
        /kvmbak\.node: .*invalid ELF header.*Fix: rebuild it for this machine: npm rebuild kvmbak/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
