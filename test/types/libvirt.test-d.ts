/**
 * Type expectations for the public libvirt API. Checked by `tsc --noEmit`
 * (npm run typecheck): a wrong type here is a compile error.
 */
import { expectTypeOf } from 'vitest';
import {
  type BlockInfo,
  type Domain,
  type DomainDisk,
  type DomainInfo,
  type DomainJobStats,
  DomainSaveImageXMLFlags,
  DomainSaveRestoreFlags,
  type DomainStateName,
  type Hypervisor,
  LibvirtError,
  type StorageVolumeInfo,
  isLibvirtError,
  openHypervisor,
  parseDomainDisks,
} from '../../src/index.js';

expectTypeOf(openHypervisor).parameters.toEqualTypeOf<[uri?: string]>();
expectTypeOf(openHypervisor).returns.resolves.toEqualTypeOf<Hypervisor>();

declare const hv: Hypervisor;
expectTypeOf(hv.uri).toEqualTypeOf<string>();
expectTypeOf(hv.close()).toEqualTypeOf<number>();
expectTypeOf(hv.libVersion()).resolves.toEqualTypeOf<string>();
expectTypeOf(hv.hypervisorVersion()).resolves.toEqualTypeOf<string>();
expectTypeOf(hv.listDomains()).resolves.toEqualTypeOf<{ name: string; uuid: string; state: DomainStateName }[]>();
expectTypeOf(hv.lookupDomain('web-01')).resolves.toEqualTypeOf<Domain>();
expectTypeOf(hv.defineDomain).parameters.toEqualTypeOf<[xml: string]>();
expectTypeOf(hv.lookupVolumeByPath('/dev/vg0/lv')).resolves.toEqualTypeOf<StorageVolumeInfo>();
expectTypeOf<StorageVolumeInfo['pool']>().toEqualTypeOf<string>();
expectTypeOf(hv.restoreDomain).toBeCallableWith('/backup/state', { startMode: 'paused', bypassCache: true });
// @ts-expect-error startMode is 'running' | 'paused'
hv.restoreDomain('/backup/state', { startMode: 'stopped' });
expectTypeOf(hv.saveImageXml('/backup/state', { secure: true })).resolves.toEqualTypeOf<string>();
expectTypeOf(hv[Symbol.asyncDispose]).returns.resolves.toBeVoid();

declare const dom: Domain;
expectTypeOf(dom.name).toEqualTypeOf<string>();
expectTypeOf(dom.uuid).toEqualTypeOf<string>();
expectTypeOf(dom.info()).resolves.toEqualTypeOf<DomainInfo>();
expectTypeOf<DomainInfo['state']>().toEqualTypeOf<
  'nostate' | 'running' | 'blocked' | 'paused' | 'shutdown' | 'shutoff' | 'crashed' | 'pmsuspended'
>();
expectTypeOf(dom.blockInfo('vda')).resolves.toEqualTypeOf<BlockInfo>();
expectTypeOf(dom.disks()).resolves.toEqualTypeOf<DomainDisk[]>();
expectTypeOf(dom.fsFreeze()).resolves.toEqualTypeOf<number>();
expectTypeOf(dom.setAgentTimeout).toBeCallableWith('nowait');
expectTypeOf(dom.setAgentTimeout).toBeCallableWith(10);
expectTypeOf(dom.jobStats()).resolves.toEqualTypeOf<DomainJobStats>();
expectTypeOf<DomainJobStats['dataProcessed']>().toEqualTypeOf<number | undefined>();
expectTypeOf(dom.free()).toBeVoid();

expectTypeOf(parseDomainDisks).returns.toEqualTypeOf<DomainDisk[]>();
expectTypeOf<DomainDisk['device']>().toEqualTypeOf<'disk' | 'cdrom' | 'floppy' | 'lun'>();
expectTypeOf(DomainSaveRestoreFlags.RUNNING).toEqualTypeOf<number>();
expectTypeOf(DomainSaveImageXMLFlags.SECURE).toEqualTypeOf<number>();

declare const e: unknown;
if (isLibvirtError(e, 'NO_DOMAIN')) {
  expectTypeOf(e).toEqualTypeOf<LibvirtError>();
  expectTypeOf(e.virCode).toEqualTypeOf<number>();
  expectTypeOf(e.virErrorDomainName).toEqualTypeOf<string>();
}
