/** Storage volume and pool lookups against private copies of the node fixture. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, type Hypervisor, isLibvirtError, libvirtCounters } from '../../src/index.js';
import { type NativeStorageVol, loadNative } from '../../src/native.js';
import { type NodeCopy, closeAndCheck, expectNoHandles, nodeCopy, openFixture, rejection } from './helpers.js';

describe('storage', { timeout: 15_000 }, () => {
  let hv: Hypervisor;
  let node: NodeCopy;

  beforeEach(async () => {
    ({ hv, node } = await openFixture());
  });
  afterEach(async () => {
    await closeAndCheck(hv, node);
    expectNoHandles();
  });

  it('finds the logical volume behind a disk path, with its pool', async () => {
    expect(await hv.lookupVolumeByPath('/dev/vg0/web-root')).toEqual({
      name: 'web-root',
      key: 'Xq3v2c-0ZLw-wC1T-Jd8u-N9Bd-eQ7a-web001',
      path: '/dev/vg0/web-root',
      pool: 'vg0',
      type: 'block',
      capacity: 1073741824,
      allocation: 1073741824,
    });
  });

  it('derives path and key of volumes declared without them', async () => {
    expect(await hv.lookupVolumeByPath('/dev/vm-ssd/db-01-root')).toEqual({
      name: 'db-01-root',
      key: '/dev/vm-ssd/db-01-root',
      path: '/dev/vm-ssd/db-01-root',
      pool: 'vm-ssd',
      type: 'block',
      capacity: 2147483648,
      allocation: 2147483648,
    });
  });

  it('maps every block disk of a domain to its volume', async () => {
    await using dom = await hv.lookupDomain('web-01');
    const block = (await dom.disks()).filter((d) => d.type === 'block');
    const vols = await Promise.all(block.map((d) => hv.lookupVolumeByPath(d.source as string)));
    expect(vols.map((v) => `${v.pool}/${v.name}`)).toEqual(['vg0/web-root', 'vg0/web-data-01']);
  });

  it('rejects a path no pool covers with VIR_ERR_NO_STORAGE_VOL (50)', async () => {
    const e = await rejection(hv.lookupVolumeByPath('/dev/vg0/missing-lv'));
    expect(isLibvirtError(e, 'NO_STORAGE_VOL')).toBe(true);
    expect(e).toMatchObject({
      virCode: 50,
      operation: 'virStorageVolLookupByPath',
      message: "Storage volume not found: no storage vol with matching path '/dev/vg0/missing-lv'",
    });
  });

  it('looks up a pool by name', async () => {
    const pool = await hv.lookupStoragePool('vg0');
    expect(pool).toMatchObject({ name: 'vg0', state: 'running', allocation: 1610612736 });
    expect(pool.capacity).toBe(pool.allocation + pool.available);
  });

  it('refreshes the pool whose target is a path (a logical pool: /dev/VG); none when no pool has it', async () => {
    expect(await hv.refreshStoragePoolsAt('/dev/vg0')).toEqual(['vg0']);
    expect(await hv.refreshStoragePoolsAt('/dev/vm-ssd/')).toEqual(['vm-ssd']);
    expect(await hv.refreshStoragePoolsAt('/dev/no-such-vg')).toEqual([]);
    // The pool still answers afterwards, and every handle was released.
    expect((await hv.lookupVolumeByPath('/dev/vg0/web-root')).pool).toBe('vg0');
    expect(libvirtCounters()).toMatchObject({ storagePools: 0, storageVols: 0, workers: 0 });
    await expect(hv.refreshStoragePoolsAt('')).rejects.toBeInstanceOf(ConfigError);
  });

  it('rejects a missing pool with VIR_ERR_NO_STORAGE_POOL (49)', async () => {
    const e = await rejection(hv.lookupStoragePool('no-such-vg'));
    expect(e).toMatchObject({
      code: 'VIR_ERR_NO_STORAGE_POOL',
      virCode: 49,
      operation: 'virStoragePoolLookupByName',
      message: "Storage pool not found: no storage pool with matching name 'no-such-vg'",
    });
  });

  it('validates paths before calling libvirt', async () => {
    await expect(hv.lookupVolumeByPath('')).rejects.toBeInstanceOf(ConfigError);
  });

  it('finds a volume by pool and name, as a volume disk names it', async () => {
    expect(await hv.lookupVolume('vg0', 'web-data-01')).toEqual(await hv.lookupVolumeByPath('/dev/vg0/web-data-01'));
    expect(await hv.lookupVolume('vm-ssd', 'db-01-root')).toEqual({
      name: 'db-01-root',
      key: '/dev/vm-ssd/db-01-root',
      path: '/dev/vm-ssd/db-01-root',
      pool: 'vm-ssd',
      type: 'block',
      capacity: 2147483648,
      allocation: 2147483648,
    });
    // Every pool and volume handle it used was released.
    expect(libvirtCounters()).toMatchObject({ storagePools: 0, storageVols: 0, workers: 0 });
  });

  it('rejects a volume its pool does not hold with VIR_ERR_NO_STORAGE_VOL (50)', async () => {
    const e = await rejection(hv.lookupVolume('vg0', 'db-01-root'));
    expect(isLibvirtError(e, 'NO_STORAGE_VOL')).toBe(true);
    expect(e).toMatchObject({
      code: 'VIR_ERR_NO_STORAGE_VOL',
      virCode: 50,
      operation: 'virStorageVolLookupByName',
      message: "Storage volume not found: no storage vol with matching name 'db-01-root'",
    });
    expect(libvirtCounters()).toMatchObject({ storagePools: 0, storageVols: 0, workers: 0 });
  });

  it('rejects a volume of a missing pool with VIR_ERR_NO_STORAGE_POOL (49)', async () => {
    const e = await rejection(hv.lookupVolume('no-such-vg', 'web-root'));
    expect(isLibvirtError(e, 'NO_STORAGE_POOL')).toBe(true);
    expect(e).toMatchObject({
      virCode: 49,
      operation: 'virStoragePoolLookupByName',
      message: "Storage pool not found: no storage pool with matching name 'no-such-vg'",
    });
  });

  it('validates pool and volume names before calling libvirt', async () => {
    await expect(hv.lookupVolume('', 'web-root')).rejects.toMatchObject({ option: 'pool' });
    await expect(hv.lookupVolume('vg0', '')).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('raw StoragePool.lookupVolumeByName', { timeout: 15_000 }, () => {
  let node: NodeCopy | undefined;
  afterEach(async () => {
    await node?.cleanup();
    node = undefined;
    expectNoHandles();
  });

  it('returns a volume that stays valid when its pool is freed during the call', async () => {
    node = await nodeCopy();
    const c = await loadNative().Connection.open(node.uri);
    const pool = await c.lookupStoragePoolByName('vg0');
    const pending = pool.lookupVolumeByName('web-root');
    pool.free();
    expect(c.close()).toBe(1); // the call in flight holds the connection
    const vol: NativeStorageVol = await pending;
    try {
      expect(vol.getName()).toBe('web-root');
      expect(await vol.getPath()).toBe('/dev/vg0/web-root');
      const owner = await vol.lookupPoolByVolume();
      expect(owner.getName()).toBe('vg0');
      owner.free();
    } finally {
      vol.free();
    }
    expect(libvirtCounters().connections).toBe(0);
  });

  it('rejects non-string names with a TypeError', async () => {
    node = await nodeCopy();
    const c = await loadNative().Connection.open(node.uri);
    const pool = await c.lookupStoragePoolByName('vg0');
    try {
      expect(() => (pool.lookupVolumeByName as (n: unknown) => unknown)(42)).toThrow('name must be a string');
    } finally {
      pool.free();
    }
    expect(c.close()).toBe(0);
  });
});
