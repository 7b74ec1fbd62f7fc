/**
 * Conversion of addon errors into LibvirtError / ClosedHandleError. The input
 * objects have the exact shape the addon produced for real test-driver
 * failures (captured from build/Release/kvmbak.node).
 */
import { describe, expect, it } from 'vitest';
import { ClosedHandleError, LibvirtError, isKvmbakError, isLibvirtError } from '../../../src/index.js';
import { convertNativeError, nativeCall, nativeCallSync, virErrorDomainName, virErrorName } from '../../../src/libvirt/call.js';

function nativeError(message: string, fields: Record<string, unknown>): Error {
  return Object.assign(new Error(message), fields);
}

// Captured: virStorageVolLookupByPath('/dev/vg0/nope') on test:///…/node.xml
const NO_VOL = (): Error =>
  nativeError("Storage volume not found: no storage vol with matching path '/dev/vg0/nope'", {
    virCode: 50,
    virErrorDomain: 12,
    level: 2,
    operation: 'virStorageVolLookupByPath',
    str1: 'Storage volume not found: %s',
    str2: "no storage vol with matching path '/dev/vg0/nope'",
  });

// Captured: virDomainSaveFlags(dom, '/tmp/lvx/s1', NULL, VIR_DOMAIN_SAVE_RUNNING)
const BAD_FLAGS = (): Error =>
  nativeError('unsupported flags (0x2) in function testDomainSaveFlags', {
    virCode: 8,
    virErrorDomain: 12,
    level: 2,
    operation: 'virDomainSaveFlags',
    str1: 'testDomainSaveFlags',
    str2: 'flags',
    int1: 0,
    int2: 0,
  });

describe('libvirt error names', () => {
  it('names codes and error domains from the generated table', () => {
    expect(virErrorName(42)).toBe('VIR_ERR_NO_DOMAIN');
    expect(virErrorName(0)).toBe('VIR_ERR_OK');
    expect(virErrorName(41)).toBe('VIR_WAR_NO_NETWORK');
    expect(virErrorName(110)).toBe('VIR_ERR_MULTIPLE_DOMAINS');
    expect(virErrorName(999)).toBe('VIR_ERR_UNKNOWN_999');
    expect(virErrorDomainName(12)).toBe('VIR_FROM_TEST');
    expect(virErrorDomainName(10)).toBe('VIR_FROM_QEMU');
    expect(virErrorDomainName(72)).toBe('VIR_FROM_CH');
    expect(virErrorDomainName(500)).toBe('VIR_FROM_UNKNOWN_500');
  });
});

describe('convertNativeError', () => {
  it('builds a LibvirtError with every field', () => {
    const e = convertNativeError(NO_VOL(), '    at caller (x.ts:1:1)');
    expect(e).toBeInstanceOf(LibvirtError);
    expect(isKvmbakError(e)).toBe(true);
    expect(isLibvirtError(e, 'NO_STORAGE_VOL')).toBe(true);
    expect(isLibvirtError(e, 'NO_DOMAIN')).toBe(false);
    expect(e).toMatchObject({
      name: 'LibvirtError',
      message: "Storage volume not found: no storage vol with matching path '/dev/vg0/nope'",
      code: 'VIR_ERR_NO_STORAGE_VOL',
      virCode: 50,
      virErrorDomain: 12,
      virErrorDomainName: 'VIR_FROM_TEST',
      level: 2,
      operation: 'virStorageVolLookupByPath',
      str1: 'Storage volume not found: %s',
      str2: "no storage vol with matching path '/dev/vg0/nope'",
    });
    expect((e as LibvirtError).int1).toBeUndefined();
    expect((e as LibvirtError).str3).toBeUndefined();
    expect((e as Error).stack).toBe(
      "LibvirtError: Storage volume not found: no storage vol with matching path '/dev/vg0/nope'\n    at caller (x.ts:1:1)",
    );
  });

  it('keeps int1/int2 when libvirt set them', () => {
    expect(convertNativeError(BAD_FLAGS(), undefined)).toMatchObject({ code: 'VIR_ERR_INVALID_ARG', int1: 0, int2: 0 });
  });

  it('maps the closed-handle error and passes other errors through', () => {
    const closed = Object.assign(new Error('kvmbak: this Domain was already released'), { code: 'KVMBAK_CLOSED_HANDLE' });
    expect(convertNativeError(closed, undefined)).toBeInstanceOf(ClosedHandleError);
    const type = new TypeError('name must be a string');
    expect(convertNativeError(type, undefined)).toBe(type);
  });
});

describe('nativeCall', () => {
  it('reattaches the stack of the caller to an async native error', async () => {
    async function callerOfTheBoundary(): Promise<unknown> {
      return nativeCall(() => new Promise((_, reject) => setImmediate(() => reject(NO_VOL()))));
    }
    const e = (await callerOfTheBoundary().catch((err: unknown) => err)) as Error;
    expect(e).toBeInstanceOf(LibvirtError);
    expect(e.stack?.split('\n')[1]).toContain('callerOfTheBoundary');
    expect(e.stack).toContain('errors.test.ts');
  });

  it('converts synchronous native errors too', () => {
    expect(() =>
      nativeCallSync(() => {
        throw BAD_FLAGS();
      }),
    ).toThrow(LibvirtError);
  });
});
