/**
 * Helpers for the backup tests: a private copy of the test-driver node
 * (backup-node.xml) opened through the real addon, a fake lvm2 world whose LVs
 * are files (fake-lvm.ts), a destination folder, failure injection into
 * libvirt calls (a Proxy in front of the real Hypervisor/Domain), and the
 * checks that a backup left nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { type BackupContext, type BackupOptions, type Domain, type Hypervisor, LibvirtError, openHypervisor } from '../../../src/index.js';
import { FakeLvm, MiB } from './fake-lvm.js';
import type { WorldSpec } from './fake-lvm-world.js';

export const LIBVIRT_FIXTURES = fileURLToPath(new URL('../../fixtures/libvirt/', import.meta.url));

/** Disk content: text, a run of zeros (the zero-chunk path), random bytes; `size` bytes. */
export function diskContent(label: string, size: number): Buffer {
  const text = Buffer.from(`${label}: kvmbak test disk\n`.repeat(Math.ceil(size / 4 / 24)));
  const head = text.subarray(0, Math.floor(size / 4));
  const zeros = Buffer.alloc(Math.floor(size / 2));
  return Buffer.concat([head, zeros, randomBytes(size - head.length - zeros.length)]);
}

/** The LVs of backup-node.xml's domains, in VGs vg0 (64 MiB) and vg1 (16 MiB), 1 MiB extents. */
export function defaultWorld(): WorldSpec {
  return {
    vgs: [
      { name: 'vg0', size: 64 * MiB },
      { name: 'vg1', size: 16 * MiB },
    ],
    lvs: [
      { vg: 'vg0', lv: 'web-root', content: diskContent('web-root', 2 * MiB), tags: ['vm-web-01'] },
      { vg: 'vg0', lv: 'web-data', content: diskContent('web-data', MiB) },
      { vg: 'vg0', lv: 'app-root', content: diskContent('app-root', MiB) },
      { vg: 'vg0', lv: 'files-root', content: diskContent('files-root', MiB) },
      { vg: 'vg0', lv: 'vol-root', content: diskContent('vol-root', MiB) },
      { vg: 'vg1', lv: 'db-root', content: diskContent('db-root', MiB) },
    ],
  };
}

export interface Env {
  dir: string;
  uri: string;
  hv: Hypervisor;
  fake: FakeLvm;
  dest: string;
  /** Test knobs: no bypass-cache flag (the test driver rejects it), no retry pause. */
  ctx: BackupContext;
  /** Options every backup of the tests takes: 2 threads, fast polling (the default format). */
  opts(domain: string, more?: Partial<BackupOptions>): BackupOptions;
  /** Closes the connection (asserting nothing leaked: every Domain was freed) and removes the folder. */
  cleanup(): Promise<void>;
}

export async function setup(spec: WorldSpec = defaultWorld(), node = 'backup-node.xml'): Promise<Env> {
  const dir = await mkdtemp(join(tmpdir(), 'kvmbak-backup-'));
  const xml = join(dir, 'node.xml');
  await copyFile(join(LIBVIRT_FIXTURES, node), xml);
  const lvdir = join(dir, 'lv');
  const dest = join(dir, 'dest');
  await mkdir(lvdir);
  await mkdir(dest, { mode: 0o700 });
  const uri = `test://${xml}`;
  const hv = await openHypervisor(uri);
  const fake = new FakeLvm(lvdir, spec);
  const ctx: BackupContext = { hypervisor: hv, lvm: fake.lvm, bypassCache: false, retryDelayMs: 1 };
  return {
    dir,
    uri,
    hv,
    fake,
    dest,
    ctx,
    opts: (domain, more = {}) => ({ domain, dest, threads: 2, watchIntervalMs: 5, ...more }),
    async cleanup() {
      try {
        if (!hv.closed) expect(hv.close()).toBe(0);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** State of a domain now (a lookup of its own). */
export async function stateOf(hv: Hypervisor, name: string): Promise<string> {
  const d = await hv.lookupDomain(name);
  try {
    return (await d.state()).state;
  } finally {
    d.free();
  }
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Every entry under DEST/DOMAIN (names only). */
export async function domainDirEntries(dest: string, domain: string): Promise<string[]> {
  const dir = join(dest, domain);
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}

/** Nothing of a run is left: the domain in `state`, no snapshot, no set folder, no journal, no lock. */
export async function expectNothingLeft(env: Env, domain: string, state: string): Promise<void> {
  expect(await stateOf(env.hv, domain)).toBe(state);
  expect(env.fake.snapshots().map((s) => s.lv)).toEqual([]);
  expect(await domainDirEntries(env.dest, domain)).toEqual([]);
}

// ---- Failure injection into libvirt calls -----------------------------------------------------

/** Realistic libvirt errors (messages as QEMU's driver words them). */
export const LIBVIRT_ERRORS = {
  save: (): LibvirtError =>
    libvirtError('operation failed: domain save job: unexpectedly failed', 'VIR_ERR_OPERATION_FAILED', 9, 'virDomainSaveFlags'),
  restoreDomain: (): LibvirtError =>
    libvirtError('internal error: qemu unexpectedly closed the monitor', 'VIR_ERR_INTERNAL_ERROR', 1, 'virDomainRestoreFlags'),
  suspend: (): LibvirtError =>
    libvirtError("internal error: unable to execute QEMU command 'stop': not ready", 'VIR_ERR_INTERNAL_ERROR', 1, 'virDomainSuspend'),
  resume: (): LibvirtError =>
    libvirtError("internal error: unable to execute QEMU command 'cont': not ready", 'VIR_ERR_INTERNAL_ERROR', 1, 'virDomainResume'),
  fsFreeze: (): LibvirtError =>
    libvirtError('Guest agent is not responding: QEMU guest agent is not connected', 'VIR_ERR_AGENT_UNRESPONSIVE', 86, 'virDomainFSFreeze'),
  fsThaw: (): LibvirtError =>
    libvirtError('Guest agent is not responding: QEMU guest agent is not connected', 'VIR_ERR_AGENT_UNRESPONSIVE', 86, 'virDomainFSThaw'),
  info: (): LibvirtError => libvirtError('Cannot recv data: Connection reset by peer', 'VIR_ERR_SYSTEM_ERROR', 38, 'virDomainGetInfo'),
};

function libvirtError(message: string, code: string, virCode: number, operation: string): LibvirtError {
  return new LibvirtError(message, {
    code,
    virCode,
    virErrorDomain: 10,
    virErrorDomainName: 'VIR_FROM_QEMU',
    level: 2,
    operation,
  });
}

export type FaultyMethod = keyof typeof LIBVIRT_ERRORS;

export interface Fault {
  /** Which calls fail, 1-based (counted per method over the whole connection). */
  calls: number[];
  /** The real call runs first, then the error is thrown (the operation happened, its answer was lost). */
  after?: boolean;
}

/**
 * The Hypervisor `hv`, with the given methods (of it, or of the Domains it
 * returns) failing at the given calls. `counts` tells how often each ran.
 */
export function faulty(hv: Hypervisor, plan: Partial<Record<FaultyMethod, Fault>>): { hv: Hypervisor; counts: Record<string, number> } {
  const counts: Record<string, number> = {};
  const wrap = <T extends object>(target: T): T =>
    new Proxy(target, {
      get(t, prop) {
        const v = Reflect.get(t, prop, t) as unknown;
        if (typeof v !== 'function') return v;
        const fn = v as (...a: unknown[]) => unknown;
        const name = String(prop);
        if (name === 'lookupDomain') {
          return async (...a: unknown[]) => wrap((await fn.apply(t, a)) as Domain);
        }
        const fault = plan[name as FaultyMethod];
        if (fault === undefined) return fn.bind(t);
        return async (...a: unknown[]) => {
          const n = (counts[name] = (counts[name] ?? 0) + 1);
          if (!fault.calls.includes(n)) return fn.apply(t, a);
          if (fault.after) await fn.apply(t, a);
          throw LIBVIRT_ERRORS[name as FaultyMethod]();
        };
      },
    });
  return { hv: wrap(hv), counts };
}
