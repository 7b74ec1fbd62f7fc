/** Smoke tests on test:///default (shared state: read-only use only). */
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { type Hypervisor, isLibvirtError, openHypervisor, parseDomainDisks } from '../../src/index.js';
import { loadNative } from '../../src/native.js';
import { expectNoHandles } from './helpers.js';

describe('test:///default', { timeout: 15_000 }, () => {
  let hv: Hypervisor | undefined;
  afterEach(() => {
    if (hv && !hv.closed) expect(hv.close()).toBe(0);
    hv = undefined;
    expectNoHandles();
  });

  it('opens, reports versions and the URI', async () => {
    hv = await openHypervisor('test:///default');
    expect(hv.uri).toBe('test:///default');
    const pkgVersion = execFileSync('pkg-config', ['--modversion', 'libvirt'], { encoding: 'utf8' }).trim();
    expect(await hv.libVersion()).toBe(pkgVersion);
    expect(await hv.hypervisorVersion()).toBe('0.0.2');
    expect(await hv.hostname()).toBeTypeOf('string');
    expect(loadNative().headerVersion).toBeGreaterThanOrEqual(8_000_000);
  });

  it('defaults to LIBVIRT_DEFAULT_URI', async () => {
    const saved = process.env.LIBVIRT_DEFAULT_URI;
    process.env.LIBVIRT_DEFAULT_URI = 'test:///default';
    try {
      hv = await openHypervisor();
      expect(hv.uri).toBe('test:///default');
    } finally {
      if (saved === undefined) delete process.env.LIBVIRT_DEFAULT_URI;
      else process.env.LIBVIRT_DEFAULT_URI = saved;
    }
  });

  it('lists and reads the built-in domain "test"', async () => {
    hv = await openHypervisor('test:///default');
    const list = await hv.listDomains();
    expect(list).toContainEqual({ name: 'test', uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f', state: 'running' });
    await using dom = await hv.lookupDomain('test');
    const xml = await dom.xml();
    expect(xml).toContain('<name>test</name>');
    const disks = parseDomainDisks(xml);
    expect(disks).toEqual([{ target: 'vda', device: 'disk', type: 'file', source: '/guest/diskimage1', readonly: false, bus: 'virtio' }]);
    expect(await dom.blockInfo('vda')).toEqual({
      capacity: 1099506450432,
      allocation: 1099511627776,
      physical: 1099511627776,
    });
  });

  it('rejects an unknown driver URI with a typed error', async () => {
    const e = await openHypervisor('test:///').catch((err: unknown) => err);
    expect(isLibvirtError(e, 'INVALID_ARG')).toBe(true);
    expect(e).toMatchObject({ operation: 'virConnectOpen', virCode: 8 });
  });

  it('rejects a missing node file with VIR_ERR_XML_ERROR', async () => {
    const e = await openHypervisor('test:///nonexistent/kvmbak/node.xml').catch((err: unknown) => err);
    expect(e).toMatchObject({ name: 'LibvirtError', code: 'VIR_ERR_XML_ERROR', virCode: 27, operation: 'virConnectOpen' });
  });
});
