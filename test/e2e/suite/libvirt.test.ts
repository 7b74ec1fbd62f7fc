// kvmbak's libvirt layer (native addon + typed API) against the real libvirtd and QEMU in the lab:
// what the test driver cannot show (real blockInfo of an LV, pool lookup, save/restore semantics,
// the guest-agent failure). Domains: lab-one (running, one LV disk), lab-agent (running, agent
// channel with nothing behind it), lab-qcow / lab-cdrom (defined only). lab-one is left running.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isLibvirtError, openHypervisor, type Domain, type Hypervisor } from '../../../src/index.js';
import { rejection, domState, lab, lvsReport, virsh, type LabFixture } from './lab.js';

describe('libvirt layer on qemu:///system', () => {
  let fx: LabFixture;
  let hv: Hypervisor;
  let work: string;
  const held: Domain[] = [];

  /** Looks a domain up and frees it after the test. */
  async function domain(name: string): Promise<Domain> {
    const d = await hv.lookupDomain(name);
    held.push(d);
    return d;
  }

  beforeAll(() => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-libvirt-');
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  beforeEach(async () => {
    hv = await openHypervisor(fx.uri);
  });
  afterEach(() => {
    for (const d of held.splice(0)) d.free();
    // Every handle obtained from the connection was freed: nothing keeps it alive.
    expect(hv.close()).toBe(0);
  });

  it('opens the system connection and reports the host', async () => {
    expect(hv.uri).toBe('qemu:///system');
    expect(await hv.hostname()).toBe('kvmbak-lab');
    const lib = (await virsh('version')).stdout.match(/Using library: libvirt (\d+\.\d+\.\d+)/)?.[1];
    expect(await hv.libVersion()).toBe(lib);
    const domains = await hv.listDomains();
    const byName = Object.fromEntries(domains.map((d) => [d.name, d.state]));
    expect(byName).toMatchObject({ 'lab-one': 'running', 'lab-agent': 'running', 'lab-qcow': 'shutoff', 'lab-cdrom': 'shutoff' });
  });

  it('looks domains up by name and UUID; a missing one is VIR_ERR_NO_DOMAIN', async () => {
    const d = await domain('lab-one');
    expect(d.name).toBe('lab-one');
    expect(d.uuid).toBe((await virsh('domuuid', 'lab-one')).stdout.trim());
    const again = await domain(d.uuid);
    expect(again.name).toBe('lab-one');
    const info = await d.info();
    expect(info).toMatchObject({ state: 'running', maxMemKiB: 64 * 1024, vcpus: 1 });
    expect(info.id).toBeGreaterThan(0);

    const e = await rejection(hv.lookupDomain('no-such-domain'));
    expect(isLibvirtError(e, 'NO_DOMAIN')).toBe(true);
    expect(e).toMatchObject({ operation: 'virDomainLookupByName', virErrorDomainName: 'VIR_FROM_QEMU' });
  });

  it('reads the XML and the disks of real domains (LV, qcow2 file, cdrom)', async () => {
    const one = await domain('lab-one');
    const lv = fx.lvs['lab-one-disk0'];
    expect(await one.xml()).toContain(`<source dev='${lv.path}'`);
    expect(await one.xml({ inactive: true, secure: true })).toContain('<name>lab-one</name>');
    expect(await one.disks()).toEqual([expect.objectContaining({ target: 'vda', device: 'disk', type: 'block', source: lv.path, format: 'raw' })]);

    const qcow = await (await domain('lab-qcow')).disks();
    expect(qcow).toEqual([
      expect.objectContaining({ target: 'vda', type: 'block', source: fx.lvs['lab-qcow-disk0'].path }),
      expect.objectContaining({ target: 'vdb', type: 'file', source: fx.files.qcow2, format: 'qcow2' }),
    ]);
    const cdrom = await (await domain('lab-cdrom')).disks();
    expect(cdrom).toEqual([
      expect.objectContaining({ target: 'vda', device: 'disk', source: fx.lvs['lab-cdrom-disk0'].path }),
      expect.objectContaining({ target: 'hdc', device: 'cdrom', type: 'file', source: fx.files.cdrom, readonly: true }),
    ]);
  });

  it('blockInfo of an LV disk: capacity = physical = LV size, allocation 0 (by target and by path)', async () => {
    const d = await domain('lab-one');
    const lv = fx.lvs['lab-one-disk0'];
    expect(await d.blockInfo('vda')).toEqual({ capacity: lv.bytes, allocation: 0, physical: lv.bytes });
    expect(await d.blockInfo(lv.path)).toEqual({ capacity: lv.bytes, allocation: 0, physical: lv.bytes });
    const e = await rejection(d.blockInfo('vdz'));
    expect(isLibvirtError(e)).toBe(true);
  });

  it('finds the volume and pool of an LV; a path outside any pool is VIR_ERR_NO_STORAGE_VOL', async () => {
    const lv = fx.lvs['lab-one-disk0'];
    const vol = await hv.lookupVolumeByPath(lv.path);
    const report = await lvsReport(lv.path, ['lv_uuid']);
    expect(vol).toEqual({
      name: 'lab-one-disk0',
      key: report.lv_uuid,
      path: lv.path,
      pool: fx.pool,
      type: 'block',
      capacity: lv.bytes,
      allocation: lv.bytes,
    });
    const pool = await hv.lookupStoragePool(fx.pool);
    expect(pool).toMatchObject({ name: fx.pool, state: 'running' });
    expect(pool.capacity).toBeGreaterThan(pool.available);

    const e = await rejection(hv.lookupVolumeByPath(fx.pv));
    expect(isLibvirtError(e, 'NO_STORAGE_VOL')).toBe(true);
  });

  it('suspends and resumes a running domain', async () => {
    const d = await domain('lab-one');
    await d.suspend();
    expect((await d.state()).state).toBe('paused');
    expect(await domState('lab-one')).toBe('paused');
    await d.resume();
    expect((await d.state()).state).toBe('running');
  });

  it('saves to a file (0600, domain stops) and restores it running; restoring over a running domain fails', async () => {
    const d = await domain('lab-one');
    const state = join(work, 'lab-one.state');
    await d.save(state);
    expect((await d.state()).state).toBe('shutoff');
    expect(statSync(state).mode & 0o777).toBe(0o600);
    expect(statSync(state).size).toBeGreaterThan(0);

    await hv.restoreDomain(state, { startMode: 'running' });
    expect((await d.state()).state).toBe('running');

    const e = await rejection(hv.restoreDomain(state, { startMode: 'running' }));
    expect(isLibvirtError(e)).toBe(true);
    expect((e as Error).message).toMatch(/already active/);
    expect((await d.state()).state).toBe('running');
    rmSync(state);
  });

  it('restores paused when asked (then resume runs it)', async () => {
    const d = await domain('lab-one');
    const state = join(work, 'lab-one-paused.state');
    await d.save(state, { bypassCache: true });
    await hv.restoreDomain(state, { startMode: 'paused', bypassCache: true });
    expect((await d.state()).state).toBe('paused');
    await d.resume();
    expect((await d.state()).state).toBe('running');
    rmSync(state);
  });

  it('reads the domain XML stored in a save image, then restores it running', async () => {
    const d = await domain('lab-one');
    const state = join(work, 'lab-one-xml.state');
    await d.save(state);
    const xml = await hv.saveImageXml(state, { secure: true });
    expect(xml).toMatch(/^<domain type='(kvm|qemu)'/);
    expect(xml).toContain('<name>lab-one</name>');
    expect(xml).toContain(`<uuid>${d.uuid}</uuid>`);
    await hv.restoreDomain(state, { startMode: 'running' });
    expect((await d.state()).state).toBe('running');
    rmSync(state);
  });

  it('defines and undefines a domain; bad XML is a libvirt XML error', async () => {
    const xml = (await virsh('dumpxml', '--inactive', 'lab-one')).stdout
      .replace(/<name>lab-one<\/name>/, '<name>lab-scratch</name>')
      .replace(/<uuid>[^<]*<\/uuid>/, '');
    const d = await hv.defineDomain(xml);
    held.push(d);
    expect(d.name).toBe('lab-scratch');
    expect((await d.state()).state).toBe('shutoff');
    await d.undefine();
    const e = await rejection(hv.lookupDomain('lab-scratch'));
    expect(isLibvirtError(e, 'NO_DOMAIN')).toBe(true);

    const bad = await rejection(hv.defineDomain('<domain type="kvm"><name>broken'));
    expect(isLibvirtError(bad)).toBe(true);
    expect((bad as { code: string }).code).toMatch(/^VIR_ERR_XML_/);
  });

  it('fsFreeze with an agent channel but no agent fails as unresponsive (short agent timeout)', async () => {
    const d = await domain('lab-agent');
    await d.setAgentTimeout(2);
    const e = await rejection(d.fsFreeze());
    expect(isLibvirtError(e, 'AGENT_UNRESPONSIVE')).toBe(true);
    expect((await d.state()).state).toBe('running');
  });

  it('fsFreeze on a domain without an agent channel fails: the agent is not configured', async () => {
    const d = await domain('lab-one');
    const e = await rejection(d.fsFreeze());
    expect(isLibvirtError(e)).toBe(true);
    expect((e as Error).message).toMatch(/agent/i);
  });
});
