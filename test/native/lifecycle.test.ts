/**
 * Handle lifetimes: explicit, idempotent free()/close(), use after release,
 * calls in flight while their object is released, and finalizers as the
 * safety net for leaked wrappers (this project runs with --expose-gc).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ClosedHandleError, type Domain, type Hypervisor, libvirtCounters, openHypervisor } from '../../src/index.js';
import { loadNative } from '../../src/native.js';
import { type NodeCopy, expectNoHandles, nodeCopy } from './helpers.js';

async function collectUntil(done: () => boolean): Promise<boolean> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc (vitest.config.ts native project: execArgv)');
  for (let i = 0; i < 50 && !done(); i++) {
    gc();
    // N-API finalizers run after the GC, from the event loop.
    await new Promise((r) => setTimeout(r, 10));
  }
  return done();
}

describe('handle lifetimes', { timeout: 20_000 }, () => {
  let node: NodeCopy | undefined;
  afterEach(async () => {
    await node?.cleanup();
    node = undefined;
    expectNoHandles();
  });

  it('free() and close() are idempotent; close() returns 0 when nothing leaked', async () => {
    node = await nodeCopy();
    const hv = await openHypervisor(node.uri);
    const dom = await hv.lookupDomain('web-01');
    expect(dom.freed).toBe(false);
    dom.free();
    dom.free();
    expect(dom.freed).toBe(true);
    expect(hv.close()).toBe(0);
    expect(hv.close()).toBe(0);
    expect(hv.closed).toBe(true);
  });

  it('close() reports that live domains still hold the connection', async () => {
    node = await nodeCopy();
    const hv = await openHypervisor(node.uri);
    const a = await hv.lookupDomain('web-01');
    const b = await hv.lookupDomain('db-01');
    try {
      expect(hv.close()).toBe(1); // virConnectClose: "references remain"
      // libvirt keeps the connection alive for them: they still work.
      expect((await a.state()).state).toBe('running');
    } finally {
      a.free();
      b.free();
    }
    expect(libvirtCounters().connections).toBe(0);
  });

  it('throws ClosedHandleError on use after free/close', async () => {
    node = await nodeCopy();
    const hv = await openHypervisor(node.uri);
    const dom = await hv.lookupDomain('web-01');
    dom.free();
    await expect(dom.info()).rejects.toBeInstanceOf(ClosedHandleError);
    await expect(dom.save('/tmp/never')).rejects.toThrow(/Domain 'web-01' was already freed/);
    expect(hv.close()).toBe(0);
    const e = await hv.lookupDomain('web-01').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ClosedHandleError);
    expect(e).toMatchObject({ code: 'KVMBAK_CLOSED_HANDLE' });
    expect((e as Error).message).toContain(`the connection to ${node.uri} was already closed`);
  });

  it('the raw addon throws (never crashes) on use after free/close and refuses construction from JS', async () => {
    node = await nodeCopy();
    const binding = loadNative() as unknown as {
      Connection: { open(uri: string): Promise<Record<string, (...a: unknown[]) => unknown>> };
      Domain: new (...a: unknown[]) => unknown;
    };
    const c = await binding.Connection.open(node.uri);
    const d = (await c.lookupDomainByName!('web-01')) as Record<string, (...a: unknown[]) => unknown>;
    d.free!();
    expect(d.isFreed!()).toBe(true);
    expect(() => d.getName!()).toThrow('kvmbak: this Domain was already released (free()/close()); get a new one');
    expect(() => d.getXMLDesc!(0)).toThrow(expect.objectContaining({ code: 'KVMBAK_CLOSED_HANDLE' }));
    expect(() => c.lookupDomainByName!(42)).toThrow(TypeError);
    expect(() => c.listAllDomains!(-1)).toThrow('flags must be an integer in range');
    expect(() => c.saveImageGetXMLDesc!(7, 0)).toThrow('path must be a string');
    expect(() => c.saveImageGetXMLDesc!('/tmp/x.state', 0.5)).toThrow('flags must be an integer in range');
    expect(c.close!()).toBe(0);
    expect(c.close!()).toBe(0);
    expect(() => c.getURI!()).toThrow('kvmbak: this Connection was already released');
    expect(() => new binding.Domain()).toThrow('Domain objects come from Connection methods');
  });

  it('keeps an object valid for a call in flight when it is released meanwhile', async () => {
    node = await nodeCopy();
    const hv = await openHypervisor(node.uri);
    const dom = await hv.lookupDomain('web-01');
    const xml = dom.xml();
    const state = dom.state();
    dom.free();
    const lookup = hv.lookupDomain('db-01');
    expect(hv.close()).toBe(1); // the calls in flight hold it
    expect(await xml).toContain('<name>web-01</name>');
    expect((await state).state).toBe('running');
    (await lookup).free();
    expect(libvirtCounters().connections).toBe(0);
  });

  it('runs many calls in parallel on one connection', async () => {
    node = await nodeCopy();
    await using hv = await openHypervisor(node.uri);
    const doms = await Promise.all(Array.from({ length: 40 }, (_, i) => hv.lookupDomain(i % 2 ? 'web-01' : 'db-01')));
    expect(libvirtCounters().domains).toBe(40);
    const states = await Promise.all(doms.map((d) => d.state()));
    expect(new Set(states.map((s) => s.state))).toEqual(new Set(['running', 'shutoff']));
    for (const d of doms) d.free();
  });

  it('releases a leaked Domain through its finalizer', async () => {
    node = await nodeCopy();
    const hv = await openHypervisor(node.uri);
    await (async () => {
      let leaked: Domain | undefined = await hv.lookupDomain('web-01');
      expect(leaked.name).toBe('web-01');
      leaked = undefined; // never freed
    })();
    expect(libvirtCounters().domains).toBe(1);
    expect(await collectUntil(() => libvirtCounters().domains === 0)).toBe(true);
    expect(hv.close()).toBe(0);
  });

  it('closes a leaked Hypervisor through its finalizer', async () => {
    node = await nodeCopy();
    const uri = node.uri;
    await (async () => {
      let leaked: Hypervisor | undefined = await openHypervisor(uri);
      expect(leaked.uri).toBe(uri);
      leaked = undefined; // never closed
    })();
    expect(libvirtCounters().connections).toBe(1);
    expect(await collectUntil(() => libvirtCounters().connections === 0)).toBe(true);
  });
});
