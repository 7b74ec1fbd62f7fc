import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseDomainDisks } from '../../../src/libvirt/index.js';
import { domainXmlIdentity, randomMac, rewriteDomainXml } from '../../../src/restore/index.js';

const fx = (name: string): string => readFileSync(fileURLToPath(new URL(`../../fixtures/libvirt/${name}`, import.meta.url)), 'utf8');

const UEFI = `<domain type='kvm'>
  <name>web01</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <genid>43dc0cf8-809b-4adb-9bea-a9abb5f3d90d</genid>
  <memory unit='KiB'>262144</memory>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>ACME</entry>
      <entry name='uuid'>6695eb01-f6a4-8304-79aa-97f2502e193f</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web01_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source pool='vg0' volume='web01-root'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web01-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:6b:3c:58'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
    </interface>
  </devices>
</domain>
`;

describe('rewriteDomainXml', () => {
  it('points block disks at their target LVs and turns volume disks into block disks', () => {
    const { xml } = rewriteDomainXml(UEFI, { diskPaths: { vda: '/dev/vg1/web01-root', vdb: '/dev/vg1/web01-data' } });
    const disks = parseDomainDisks(xml);
    expect(disks.map((d) => [d.target, d.type, d.source, d.format])).toEqual([
      ['vda', 'block', '/dev/vg1/web01-root', 'raw'],
      ['vdb', 'block', '/dev/vg1/web01-data', 'raw'],
    ]);
    // no pool/volume attributes left on the former volume disk, the rest untouched
    expect(xml).not.toContain('pool=');
    expect(xml).toContain('cache="none"');
    expect(domainXmlIdentity(xml)).toEqual({ name: 'web01', uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f' });
    expect(xml).toContain('52:54:00:6b:3c:58');
  });

  it('makes a copy: name, uuid (also in sysinfo), empty genid, new MACs (added where missing), fresh NVRAM', () => {
    const macs = ['52:54:00:00:00:01', '52:54:00:00:00:02'];
    const r = rewriteDomainXml(UEFI, {
      name: 'web01-copy',
      uuid: '11111111-2222-4333-8444-555555555555',
      newMac: () => macs.shift()!,
      freshNvram: true,
    });
    expect(domainXmlIdentity(r.xml)).toEqual({ name: 'web01-copy', uuid: '11111111-2222-4333-8444-555555555555' });
    expect(r.xml).toContain('<entry name="uuid">11111111-2222-4333-8444-555555555555</entry>');
    expect(r.xml).not.toContain('6695eb01');
    expect(r.xml).toMatch(/<genid\/>|<genid><\/genid>/);
    expect(r.macs).toEqual([
      { from: '52:54:00:6b:3c:58', to: '52:54:00:00:00:01' },
      { from: null, to: '52:54:00:00:00:02' },
    ]);
    expect(r.xml.match(/<mac address="[^"]+"\/>/g)).toEqual(['<mac address="52:54:00:00:00:01"/>', '<mac address="52:54:00:00:00:02"/>']);
    expect(r.xml).toMatch(/<nvram template="\/usr\/share\/OVMF\/OVMF_VARS_4M.fd"\/>/);
    expect(r.xml).not.toContain('web01_VARS');
    // the rest of the document survives
    expect(r.xml).toContain('<loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>');
  });

  it('removes disks, and works on real test-driver and QEMU XML', () => {
    const mixed = rewriteDomainXml(fx('domain-mixed-disks.xml'), { removeDisks: ['vdb', 'vdc'], diskPaths: { vdd: '/dev/vg-new/swap' } });
    expect(parseDomainDisks(mixed.xml).map((d) => `${d.target}:${d.type}:${d.source ?? ''}`)).toEqual([
      'vda:block:/dev/vg-prod/app-01-root',
      'vdd:block:/dev/vg-new/swap',
      'sda:file:',
      'sdb:block:/dev/disk/by-id/scsi-36001405abcdef',
      'fda:file:/srv/floppy/drivers.img',
    ]);
    // live QEMU XML: the source's index attribute goes with the old source
    const qemu = rewriteDomainXml(fx('domain-qemu-lvm.xml'), { diskPaths: { vdb: '/dev/vg2/spool' } }).xml;
    expect(qemu).toContain('<source dev="/dev/vg2/spool"/>');
    expect(qemu).toContain('<source dev="/dev/vg-mail/mail-02-root" index="3"/>');
  });

  it('adds a <source> to a disk that had none, before its target', () => {
    const xml = `<domain><name>x</name><devices><disk type='file' device='disk'><target dev='vda'/></disk></devices></domain>`;
    expect(rewriteDomainXml(xml, { diskPaths: { vda: '/dev/vg/x' } }).xml).toContain(
      '<disk type="block" device="disk"><source dev="/dev/vg/x"/><target dev="vda"/></disk>',
    );
  });

  it('refuses XML that is not a domain, and disks it does not have', () => {
    expect(() => rewriteDomainXml('<network/>', {})).toThrow(/root element is <network>, not <domain>/);
    expect(() => rewriteDomainXml('<domain><name>x', {})).toThrow(/not well-formed/);
    expect(() => rewriteDomainXml(UEFI, { diskPaths: { vdz: '/dev/a/b' } })).toThrow('the domain XML has no disk vdz (its disks: vda, vdb)');
    expect(() => rewriteDomainXml(UEFI, { removeDisks: ['sdq'] })).toThrow('the domain XML has no disk sdq to remove');
    expect(() => domainXmlIdentity('<domain><uuid>x</uuid></domain>')).toThrow('the domain XML has no <name>');
    try {
      rewriteDomainXml('<network/>', {});
    } catch (e) {
      expect(e).toMatchObject({ code: 'KVMBAK_RESTORE_XML' });
    }
  });

  it('randomMac gives locally administered QEMU-range addresses', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const m = randomMac();
      expect(m).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
      seen.add(m);
    }
    expect(seen.size).toBeGreaterThan(45);
  });
});
