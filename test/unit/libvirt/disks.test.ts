/** parseDomainDisks on domain XML written by libvirt (test/fixtures/libvirt/domain-*.xml). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseDomainDisks } from '../../../src/index.js';

const fixture = (name: string): string => readFileSync(new URL(`../../fixtures/libvirt/${name}`, import.meta.url), 'utf8');

describe('parseDomainDisks', () => {
  it('reads every disk kind libvirt formats (test driver dumpxml of a mixed domain)', () => {
    expect(parseDomainDisks(fixture('domain-mixed-disks.xml'))).toEqual([
      { target: 'vda', device: 'disk', type: 'block', source: '/dev/vg-prod/app-01-root', format: 'raw', readonly: false, bus: 'virtio' },
      {
        target: 'vdb',
        device: 'disk',
        type: 'file',
        source: '/var/lib/libvirt/images/app-01-data.qcow2',
        format: 'qcow2',
        readonly: false,
        bus: 'virtio',
      },
      {
        target: 'vdc',
        device: 'disk',
        type: 'network',
        protocol: 'rbd',
        source: 'rbd:rbd-pool/app-01-logs',
        format: 'raw',
        readonly: false,
        bus: 'virtio',
      },
      {
        target: 'vdd',
        device: 'disk',
        type: 'volume',
        pool: 'vg-prod',
        volume: 'app-01-swap',
        source: 'vg-prod/app-01-swap',
        format: 'raw',
        readonly: false,
        bus: 'virtio',
      },
      { target: 'sda', device: 'cdrom', type: 'file', format: 'raw', readonly: true, bus: 'sata' },
      { target: 'sdb', device: 'lun', type: 'block', source: '/dev/disk/by-id/scsi-36001405abcdef', format: 'raw', readonly: false, bus: 'scsi' },
      { target: 'fda', device: 'floppy', type: 'file', source: '/srv/floppy/drivers.img', readonly: false, bus: 'fdc' },
    ]);
  });

  it('reads LVM block disks of a live QEMU domain (aliases, addresses, backingStore)', () => {
    expect(parseDomainDisks(fixture('domain-qemu-lvm.xml'))).toEqual([
      { target: 'vda', device: 'disk', type: 'block', source: '/dev/vg-mail/mail-02-root', format: 'raw', readonly: false, bus: 'virtio' },
      { target: 'vdb', device: 'disk', type: 'block', source: '/dev/vg-mail/mail-02-spool', format: 'raw', readonly: false, bus: 'virtio' },
      { target: 'sda', device: 'cdrom', type: 'file', readonly: true, bus: 'sata' },
    ]);
  });

  it('reads the node fixture domain as the test driver formats it', () => {
    const disks = parseDomainDisks(fixture('domain-web-01.xml'));
    expect(disks.map((d) => [d.target, d.type, d.source ?? null])).toEqual([
      ['vda', 'block', '/dev/vg0/web-root'],
      ['vdb', 'block', '/dev/vg0/web-data-01'],
      ['vdc', 'file', '/var/lib/libvirt/images/web-01-scratch.qcow2'],
      ['sda', 'file', null],
    ]);
  });

  it('ignores disks outside <devices> and other devices', () => {
    const xml = `<domain type='kvm'><name>x</name><devices><interface type='network'/><disk type='dir' device='disk'>
      <source dir='/srv/share'/><target dev='hdb' bus='ide'/></disk></devices><disk type='block'><target dev='zz'/></disk></domain>`;
    expect(parseDomainDisks(xml)).toEqual([{ target: 'hdb', device: 'disk', type: 'dir', source: '/srv/share', readonly: false, bus: 'ide' }]);
  });

  it('returns [] for a domain without devices', () => {
    expect(parseDomainDisks(`<domain type='test'><name>empty</name></domain>`)).toEqual([]);
  });

  it('rejects XML that is not well-formed, with a one-line reason', () => {
    const e = (() => {
      try {
        parseDomainDisks('<domain><devices>');
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(ConfigError);
    expect(e).toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'xml' });
    expect((e as Error).message).toMatch(/^domain XML is not well-formed: /);
  });

  it('rejects a document that is not a domain', () => {
    expect(() => parseDomainDisks(`<pool type='logical'><name>vg0</name></pool>`)).toThrow(
      'not a libvirt domain description: the root element is <pool>, not <domain>',
    );
  });

  it('rejects a disk without a target, and unknown disk types', () => {
    expect(() => parseDomainDisks(`<domain><devices><disk type='block'><source dev='/dev/x'/></disk></devices></domain>`)).toThrow(
      'disk #1 has no <target dev=...>',
    );
    expect(() => parseDomainDisks(`<domain><devices><disk type='tape'><target dev='st0'/></disk></devices></domain>`)).toThrow(
      "disk st0: unknown type 'tape'",
    );
  });
});
