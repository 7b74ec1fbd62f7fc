/**
 * Helpers for the native suite: per-test copies of the test-driver node
 * fixtures (each test:///<file> connection has private state) and a check
 * that no libvirt handle leaked.
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { type Hypervisor, libvirtCounters, openHypervisor } from '../../src/index.js';

export { rejection } from '../support/rejection.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/libvirt/', import.meta.url));

export interface NodeCopy {
  dir: string;
  uri: string;
  cleanup(): Promise<void>;
}

/** Copies test/fixtures/libvirt/<name> into a fresh temp dir; returns its test:/// URI. */
export async function nodeCopy(name = 'node.xml'): Promise<NodeCopy> {
  const dir = await mkdtemp(join(tmpdir(), 'kvmbak-native-'));
  const file = join(dir, 'node.xml');
  await copyFile(join(FIXTURES, name), file);
  return { dir, uri: `test://${file}`, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Opens a private copy of the node fixture. */
export async function openFixture(name = 'node.xml'): Promise<{ hv: Hypervisor; node: NodeCopy }> {
  const node = await nodeCopy(name);
  const hv = await openHypervisor(node.uri);
  return { hv, node };
}

/**
 * Closes `hv` (asserting libvirt reports 0 remaining references: nothing
 * obtained from it leaked) and removes its temp dir.
 */
export async function closeAndCheck(hv: Hypervisor | undefined, node: NodeCopy | undefined): Promise<void> {
  try {
    if (hv !== undefined && !hv.closed) expect(hv.close()).toBe(0);
  } finally {
    await node?.cleanup();
  }
}

/** Asserts the addon holds no libvirt handle and runs no call. */
export function expectNoHandles(): void {
  const c = libvirtCounters();
  expect({ connections: c.connections, domains: c.domains, storagePools: c.storagePools, storageVols: c.storageVols, workers: c.workers }).toEqual({
    connections: 0,
    domains: 0,
    storagePools: 0,
    storageVols: 0,
    workers: 0,
  });
}
