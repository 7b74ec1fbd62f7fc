/** Domain calls against private copies of test/fixtures/libvirt/node.xml. */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, type Hypervisor, LibvirtError, isLibvirtError } from '../../src/index.js';
import { type NodeCopy, closeAndCheck, expectNoHandles, openFixture, rejection } from './helpers.js';

const WEB01_UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';

describe('Domain', { timeout: 15_000 }, () => {
  let hv: Hypervisor;
  let node: NodeCopy;

  beforeEach(async () => {
    ({ hv, node } = await openFixture());
  });
  afterEach(async () => {
    await closeAndCheck(hv, node);
    expectNoHandles();
  });

  describe('lookup', () => {
    it('finds a domain by name and by UUID', async () => {
      await using byName = await hv.lookupDomain('web-01');
      expect(byName.name).toBe('web-01');
      expect(byName.uuid).toBe(WEB01_UUID);
      await using byUuid = await hv.lookupDomain(WEB01_UUID);
      expect(byUuid.name).toBe('web-01');
      await using byBareUuid = await hv.lookupDomain(WEB01_UUID.replaceAll('-', '').toUpperCase());
      expect(byBareUuid.name).toBe('web-01');
    });

    it('rejects a missing name with VIR_ERR_NO_DOMAIN (42)', async () => {
      const e = await rejection(hv.lookupDomain('no-such-vm'));
      expect(e).toBeInstanceOf(LibvirtError);
      expect(isLibvirtError(e, 'NO_DOMAIN')).toBe(true);
      expect(e).toMatchObject({
        name: 'LibvirtError',
        code: 'VIR_ERR_NO_DOMAIN',
        virCode: 42,
        virErrorDomain: 12,
        virErrorDomainName: 'VIR_FROM_TEST',
        level: 2,
        operation: 'virDomainLookupByName',
        message: 'Domain not found',
      });
    });

    it('rejects a missing UUID with VIR_ERR_NO_DOMAIN (42)', async () => {
      const e = await rejection(hv.lookupDomain('00000000-0000-0000-0000-000000000001'));
      expect(e).toMatchObject({ code: 'VIR_ERR_NO_DOMAIN', operation: 'virDomainLookupByUUIDString' });
    });

    it('rejects an empty name before calling libvirt', async () => {
      const e = await rejection(hv.lookupDomain(''));
      expect(e).toBeInstanceOf(ConfigError);
    });

    it('lists all domains with their state, by name', async () => {
      expect(await hv.listDomains()).toEqual([
        { name: 'db-01', uuid: '3c7a1f8e-2b4d-4e6f-8a9b-0c1d2e3f4a5b', state: 'shutoff' },
        { name: 'web-01', uuid: WEB01_UUID, state: 'running' },
      ]);
    });

    it('reattaches the caller stack to native errors', async () => {
      const e = (await rejection(hv.lookupDomain('no-such-vm'))) as Error;
      expect(e.stack).toMatch(/^LibvirtError: Domain not found\n/);
      expect(e.stack).toContain('domain.test.ts');
      expect(e.stack).toContain('lookupDomain');
    });
  });

  describe('info, state, xml, disks, block info', () => {
    it('reports info of a running domain', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const info = await dom.info();
      expect(info).toMatchObject({ state: 'running', id: 1, maxMemKiB: 262144, memKiB: 131072, vcpus: 2 });
      expect(typeof info.cpuTimeNs).toBe('bigint');
      expect(await dom.state()).toEqual({ state: 'running', reason: 0 });
    });

    it('reports a shut-off domain', async () => {
      await using dom = await hv.lookupDomain('db-01');
      expect((await dom.info()).state).toBe('shutoff');
      expect((await dom.info()).id).toBe(-1);
    });

    it('reads the XML with flags passed through', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const live = await dom.xml();
      expect(live).toMatch(/^<domain type='test' id='1'>/);
      const inactive = await dom.xml({ inactive: true });
      expect(inactive).toMatch(/^<domain type='test'>/);
      // SECURE and MIGRATABLE are accepted by the test driver.
      expect(await dom.xml({ inactive: true, secure: true, migratable: true })).toContain('<name>web-01</name>');
    });

    it('parses the disks', async () => {
      await using dom = await hv.lookupDomain('web-01');
      expect(await dom.disks()).toEqual([
        { target: 'vda', device: 'disk', type: 'block', source: '/dev/vg0/web-root', format: 'raw', readonly: false, bus: 'virtio' },
        { target: 'vdb', device: 'disk', type: 'block', source: '/dev/vg0/web-data-01', format: 'raw', readonly: false, bus: 'virtio' },
        {
          target: 'vdc',
          device: 'disk',
          type: 'file',
          source: '/var/lib/libvirt/images/web-01-scratch.qcow2',
          format: 'qcow2',
          readonly: false,
          bus: 'virtio',
        },
        { target: 'sda', device: 'cdrom', type: 'file', format: 'raw', readonly: true, bus: 'sata' },
      ]);
    });

    it('returns the block info of a disk (canned by the test driver)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      expect(await dom.blockInfo('vda')).toEqual({ capacity: 1099506450432, allocation: 1099511627776, physical: 1099511627776 });
    });

    it('rejects an unknown disk target with VIR_ERR_INVALID_ARG (8)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const e = await rejection(dom.blockInfo('vdz'));
      expect(e).toMatchObject({
        code: 'VIR_ERR_INVALID_ARG',
        virCode: 8,
        operation: 'virDomainGetBlockInfo',
        message: 'invalid argument: invalid path vdz not assigned to domain',
        str2: 'invalid path vdz not assigned to domain',
      });
    });
  });

  describe('suspend, resume, start, shutdown, destroy', () => {
    it('suspends and resumes', async () => {
      await using dom = await hv.lookupDomain('web-01');
      await dom.suspend();
      expect((await dom.state()).state).toBe('paused');
      await dom.resume();
      expect((await dom.state()).state).toBe('running');
    });

    it('rejects resume of a running domain (test driver: VIR_ERR_INTERNAL_ERROR)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const e = await rejection(dom.resume());
      expect(e).toMatchObject({ code: 'VIR_ERR_INTERNAL_ERROR', operation: 'virDomainResume' });
    });

    it('shuts down, starts and destroys', async () => {
      await using dom = await hv.lookupDomain('web-01');
      await dom.shutdown();
      expect((await dom.state()).state).toBe('shutoff');
      await dom.start();
      expect((await dom.state()).state).toBe('running');
      await dom.destroy();
      expect((await dom.state()).state).toBe('shutoff');
      const e = await rejection(dom.destroy());
      expect(e).toMatchObject({ code: 'VIR_ERR_OPERATION_INVALID', virCode: 55, operation: 'virDomainDestroy' });
    });
  });

  describe('save and restore', () => {
    it('round-trips through a state file', async () => {
      const file = join(node.dir, 'web-01.state');
      {
        await using dom = await hv.lookupDomain('web-01');
        await dom.save(file);
        expect((await dom.state()).state).toBe('shutoff');
      }
      expect(existsSync(file)).toBe(true);
      const head = (await readFile(file)).subarray(0, 14).toString('latin1');
      expect(head).toBe('TestGuestMagic');
      await hv.restoreDomain(file);
      await using dom = await hv.lookupDomain('web-01');
      expect(await dom.state()).toEqual({ state: 'running', reason: 3 }); // VIR_DOMAIN_RUNNING_RESTORED
    });

    it('restores a paused save as running (test driver behaviour)', async () => {
      const file = join(node.dir, 'paused.state');
      await using dom = await hv.lookupDomain('web-01');
      await dom.suspend();
      await dom.save(file);
      await hv.restoreDomain(file);
      expect((await dom.state()).state).toBe('running');
    });

    it('rejects a save to a missing folder with VIR_ERR_SYSTEM_ERROR (38)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const e = await rejection(dom.save(join(node.dir, 'missing', 'x.state')));
      expect(e).toMatchObject({ code: 'VIR_ERR_SYSTEM_ERROR', virCode: 38, operation: 'virDomainSaveFlags', int1: 2 });
      expect((e as Error).message).toContain('No such file or directory');
      expect((await dom.state()).state).toBe('running');
    });

    it('rejects a save of a shut-off domain with VIR_ERR_OPERATION_INVALID (55)', async () => {
      await using dom = await hv.lookupDomain('db-01');
      const e = await rejection(dom.save(join(node.dir, 'db.state')));
      expect(e).toMatchObject({ code: 'VIR_ERR_OPERATION_INVALID', virCode: 55, message: 'Requested operation is not valid: domain is not running' });
    });

    it('rejects a restore of a missing file with VIR_ERR_SYSTEM_ERROR (38)', async () => {
      const e = await rejection(hv.restoreDomain(join(node.dir, 'nothing.state')));
      expect(e).toMatchObject({ code: 'VIR_ERR_SYSTEM_ERROR', virCode: 38, operation: 'virDomainRestoreFlags' });
    });

    it('rejects a restore of a file that is not a save image', async () => {
      const { writeFile } = await import('node:fs/promises');
      const file = join(node.dir, 'garbage.state');
      await writeFile(file, 'not a save image');
      const e = await rejection(hv.restoreDomain(file));
      expect(e).toMatchObject({
        code: 'VIR_ERR_INTERNAL_ERROR',
        operation: 'virDomainRestoreFlags',
        message: 'internal error: mismatched header magic',
      });
    });

    it('passes save/restore flags through (the test driver rejects them all)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const file = join(node.dir, 'f.state');
      const running = await rejection(dom.save(file, { startMode: 'running' }));
      expect(running).toMatchObject({ code: 'VIR_ERR_INVALID_ARG', message: 'unsupported flags (0x2) in function testDomainSaveFlags' });
      const bypass = await rejection(dom.save(file, { bypassCache: true, startMode: 'paused' }));
      expect(bypass).toMatchObject({ message: 'unsupported flags (0x5) in function testDomainSaveFlags' });
      await dom.save(file);
      const paused = await rejection(hv.restoreDomain(file, { startMode: 'paused' }));
      expect(paused).toMatchObject({ code: 'VIR_ERR_INVALID_ARG', message: 'unsupported flags (0x4) in function testDomainRestoreFlags' });
      await hv.restoreDomain(file);
    });

    it('passes replacement XML through (the test driver refuses it: VIR_ERR_ARGUMENT_UNSUPPORTED)', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const xml = await dom.xml({ inactive: true });
      const e = await rejection(dom.save(join(node.dir, 'x.state'), { xml }));
      expect(e).toMatchObject({ code: 'VIR_ERR_ARGUMENT_UNSUPPORTED', virCode: 74, message: 'argument unsupported: xml modification unsupported' });
    });

    it('reads the domain XML stored in a save image (with and without secure)', async () => {
      const file = join(node.dir, 'xml.state');
      {
        await using dom = await hv.lookupDomain('web-01');
        await dom.save(file);
      }
      for (const options of [{}, { secure: true }]) {
        const xml = await hv.saveImageXml(file, options);
        expect(xml).toMatch(/^<domain type='test'>/);
        expect(xml).toContain('<name>web-01</name>');
        expect(xml).toContain(`<uuid>${WEB01_UUID}</uuid>`);
      }
      await hv.restoreDomain(file); // the image is still usable after reading its XML
      await using dom = await hv.lookupDomain('web-01');
      expect((await dom.state()).state).toBe('running');
    });

    it('rejects a save image that is missing (VIR_ERR_SYSTEM_ERROR 38) or not a save image (VIR_ERR_INTERNAL_ERROR)', async () => {
      const missing = join(node.dir, 'nothing.state');
      const e = await rejection(hv.saveImageXml(missing));
      expect(isLibvirtError(e, 'SYSTEM_ERROR')).toBe(true);
      expect(e).toMatchObject({
        virCode: 38,
        int1: 2, // ENOENT
        operation: 'virDomainSaveImageGetXMLDesc',
        message: `cannot read domain image '${missing}': No such file or directory`,
      });
      const { writeFile } = await import('node:fs/promises');
      const garbage = join(node.dir, 'garbage.state');
      await writeFile(garbage, 'not a save image');
      const bad = await rejection(hv.saveImageXml(garbage, { secure: true }));
      expect(bad).toMatchObject({
        code: 'VIR_ERR_INTERNAL_ERROR',
        virCode: 1,
        operation: 'virDomainSaveImageGetXMLDesc',
        message: 'internal error: mismatched header magic',
      });
    });

    it('validates the saveImageXml path before calling libvirt', async () => {
      await expect(hv.saveImageXml('')).rejects.toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'path' });
      await expect(hv.saveImageXml(42 as unknown as string)).rejects.toBeInstanceOf(ConfigError);
    });

    it('validates options before calling libvirt', async () => {
      await using dom = await hv.lookupDomain('web-01');
      await expect(dom.save('')).rejects.toBeInstanceOf(ConfigError);
      await expect(dom.save('/tmp/x', { startMode: 'stopped' as 'running' })).rejects.toMatchObject({ option: 'startMode' });
      const ac = new AbortController();
      ac.abort();
      await expect(dom.save(join(node.dir, 'a.state'), { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
      expect((await dom.state()).state).toBe('running');
    });
  });

  describe('define and undefine', () => {
    const XML = `<domain type='test'><name>new-vm-01</name><memory unit='KiB'>65536</memory><os><type>hvm</type></os></domain>`;

    it('defines a new shut-off domain and undefines it', async () => {
      {
        await using dom = await hv.defineDomain(XML);
        expect(dom.name).toBe('new-vm-01');
        expect((await dom.state()).state).toBe('shutoff');
        await dom.undefine();
      }
      expect(await rejection(hv.lookupDomain('new-vm-01'))).toMatchObject({ code: 'VIR_ERR_NO_DOMAIN' });
    });

    it('rejects malformed XML with VIR_ERR_XML_DETAIL (35)', async () => {
      const e = await rejection(hv.defineDomain('<domain'));
      expect(e).toMatchObject({
        code: 'VIR_ERR_XML_DETAIL',
        virCode: 35,
        virErrorDomain: 20,
        virErrorDomainName: 'VIR_FROM_DOMAIN',
        operation: 'virDomainDefineXML',
      });
    });

    it('rejects incomplete XML with VIR_ERR_XML_ERROR (27)', async () => {
      const e = await rejection(hv.defineDomain(`<domain type='test'><name>x</name></domain>`));
      expect(e).toMatchObject({ code: 'VIR_ERR_XML_ERROR', virCode: 27, message: 'XML error: an os <type> must be specified' });
    });

    it('passes undefine flags through', async () => {
      await using dom = await hv.defineDomain(XML);
      const e = await rejection(dom.undefine({ nvram: true }));
      expect(e).toMatchObject({ code: 'VIR_ERR_INVALID_ARG', message: 'unsupported flags (0x4) in function testDomainUndefineFlags' });
      await dom.undefine({ managedSave: true, snapshotsMetadata: true });
      expect(await rejection(dom.state())).toMatchObject({ code: 'VIR_ERR_NO_DOMAIN', operation: 'virDomainGetState' });
    });
  });

  describe('guest agent', () => {
    it('freezes and thaws filesystems, counting them', async () => {
      await using dom = await hv.lookupDomain('web-01');
      expect(await dom.fsFreeze()).toBe(2); // the test driver's "/" and "/boot"
      expect(await dom.fsFreeze()).toBe(0);
      expect(await dom.fsThaw(['/'])).toBe(1);
      expect(await dom.fsThaw()).toBe(1);
      expect(await dom.fsThaw()).toBe(0);
      expect(await dom.fsFreeze(['/boot'])).toBe(1);
      expect(await dom.fsThaw([])).toBe(1);
    });

    it('rejects an unknown mountpoint with VIR_ERR_OPERATION_INVALID', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const e = await rejection(dom.fsFreeze(['/nope']));
      expect(e).toMatchObject({
        code: 'VIR_ERR_OPERATION_INVALID',
        operation: 'virDomainFSFreeze',
        message: 'Requested operation is not valid: mount point not found: /nope',
      });
    });

    it('surfaces the missing agent timeout support as VIR_ERR_NO_SUPPORT', async () => {
      await using dom = await hv.lookupDomain('web-01');
      for (const t of [5, 'block', 'default', 'nowait'] as const) {
        const e = await rejection(dom.setAgentTimeout(t));
        expect(isLibvirtError(e, 'NO_SUPPORT')).toBe(true);
        expect(e).toMatchObject({ operation: 'virDomainAgentSetResponseTimeout', virCode: 3 });
      }
      await expect(dom.setAgentTimeout(0)).rejects.toBeInstanceOf(ConfigError);
      await expect(dom.setAgentTimeout(1.5)).rejects.toBeInstanceOf(ConfigError);
    });
  });

  describe('job stats', () => {
    it('surfaces the missing job statistics as a typed VIR_ERR_NO_SUPPORT', async () => {
      await using dom = await hv.lookupDomain('web-01');
      const e = await rejection(dom.jobStats());
      expect(e).toBeInstanceOf(LibvirtError);
      expect(isLibvirtError(e, 'NO_SUPPORT')).toBe(true);
      expect(isLibvirtError(e, 'VIR_ERR_NO_SUPPORT')).toBe(true);
      expect(e).toMatchObject({
        virCode: 3,
        virErrorDomainName: 'VIR_FROM_DOMAIN',
        operation: 'virDomainGetJobStats',
        message: 'this function is not supported by the connection driver: virDomainGetJobStats',
      });
    });
  });
});
