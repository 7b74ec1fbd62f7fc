/**
 * Issue 9's backup-side fixes, on libvirt's test driver with the fake lvm2
 * world: guest-agent timeouts set before every agent call and put back after
 * (window and recover), the next backup recovering a killed run before it
 * plans, the hooks around the window, the memory save's progress, and
 * recover's AbortSignal and progress.
 *
 * The test driver has no agent timeout call and no job statistics: where a
 * test needs them, a Proxy in front of the real Domain answers those two
 * calls as QEMU's driver would (everything else is the real test driver).
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BackupHookContext,
  type BackupProgress,
  type Domain,
  type Hypervisor,
  type JournalStep,
  type RecoverProgress,
  backup,
  currentBootId,
  readManifest,
  recover,
  runTagFor,
  snapshotNameFor,
} from '../../../src/index.js';
import { type Env, domainDirEntries, expectNothingLeft, setup, stateOf } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const WEB_UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';
const OLD = '20260101T000000Z';

/**
 * `hv` whose Domains record every agent call (and the timeouts set around
 * them) in `log`; setAgentTimeout succeeds as on QEMU's driver, jobStats
 * answers `stats()` when given, and save takes `saveDelayMs` longer.
 */
function recording(hv: Hypervisor, log: unknown[], more: { stats?: () => Record<string, unknown>; saveDelayMs?: number } = {}): Hypervisor {
  const wrapDomain = (d: Domain): Domain =>
    new Proxy(d, {
      get(t, prop) {
        const v = Reflect.get(t, prop, t) as unknown;
        if (typeof v !== 'function') return v;
        const fn = (v as (...a: unknown[]) => unknown).bind(t);
        if (prop === 'setAgentTimeout') {
          return async (x: unknown) => void log.push(['setAgentTimeout', x]);
        }
        if (prop === 'fsFreeze' || prop === 'fsThaw') {
          return async (...a: unknown[]) => {
            log.push([prop]);
            return fn(...a);
          };
        }
        if (prop === 'jobStats' && more.stats !== undefined) return async () => more.stats!();
        if (prop === 'save' && more.saveDelayMs !== undefined) {
          return async (...a: unknown[]) => {
            await fn(...a);
            await sleep(more.saveDelayMs!);
          };
        }
        return fn;
      },
    });
  return new Proxy(hv, {
    get(t, prop) {
      const v = Reflect.get(t, prop, t) as unknown;
      if (typeof v !== 'function') return v;
      const fn = (v as (...a: unknown[]) => unknown).bind(t);
      if (prop === 'lookupDomain') return async (name: string) => wrapDomain((await fn(name)) as Domain);
      return fn;
    },
  });
}

/** A dead process's pid. */
async function deadPid(): Promise<number> {
  const { spawnSync } = await import('node:child_process');
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

/** What a kvmbak killed in its window left of a backup of web-01 (see recover.test.ts). */
async function crashedRun(
  e: Env,
  steps: JournalStep[],
  mode: 'save' | 'quiesce' = 'save',
): Promise<{ setPath: string; memoryFile: string; journal: string }> {
  const setPath = join(e.dest, 'web-01', OLD);
  await mkdir(join(setPath, 'disks'), { recursive: true, mode: 0o700 });
  await writeFile(join(setPath, 'domain.xml'), '<domain/>', { mode: 0o600 });
  const at = new Date('2026-01-01T00:00:01Z').toISOString();
  const planned: JournalStep = {
    step: 'planned',
    domain: 'web-01',
    uuid: WEB_UUID,
    uri: e.uri,
    mode,
    stateBefore: 'running',
    setPath,
    snapshots: ['web-root', 'web-data'].map((lv) => ({ vg: 'vg0', lv, name: snapshotNameFor(lv, OLD) })),
    runTag: runTagFor(WEB_UUID, OLD),
  };
  const journal = join(e.dest, 'web-01', `.journal-${OLD}.json`);
  const doc = {
    format: 'kvmbak-journal/1',
    operation: 'backup',
    domain: 'web-01',
    setId: OLD,
    setPath,
    owner: { pid: await deadPid(), host: hostname(), bootId: currentBootId(), pidStart: 1, startedAt: at },
    entries: [planned, ...steps].map((s) => ({ ...s, at })),
  };
  await writeFile(journal, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
  return { setPath, memoryFile: join(setPath, 'memory.state'), journal };
}

// Defect 6 of issue 9: the window set the agent timeout and never put it back; recover thawed with no timeout.
describe('guest-agent timeouts', () => {
  it("the window sets the timeout before the freeze and before the thaw, and puts libvirt's default (block) back after each", async () => {
    env = await setup();
    const log: unknown[] = [];
    const r = await backup(env.opts('web-01', { mode: 'quiesce', agentTimeoutSeconds: 7 }), { ...env.ctx, hypervisor: recording(env.hv, log) });
    expect(r.mode).toBe('quiesce');
    expect(log).toEqual([
      ['setAgentTimeout', 7],
      ['fsFreeze'],
      ['setAgentTimeout', 'block'],
      ['setAgentTimeout', 7],
      ['fsThaw'],
      ['setAgentTimeout', 'block'],
    ]);
  });

  it('a freeze the agent refuses is thawed with the timeout set, and the setting is put back', async () => {
    env = await setup();
    const log: unknown[] = [];
    const hv = recording(env.hv, log);
    const failing = new Proxy(hv, {
      get(t, prop) {
        const v = Reflect.get(t, prop, t) as unknown;
        if (prop !== 'lookupDomain') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        return async (name: string) => {
          const d = (await (v as (n: string) => Promise<Domain>).call(t, name)) as Domain;
          return new Proxy(d, {
            get(dt, p) {
              if (p === 'fsFreeze') {
                return async () => {
                  log.push(['fsFreeze']);
                  throw new Error('Guest agent is not responding: Guest agent not available for now');
                };
              }
              const x = Reflect.get(dt, p, dt) as unknown;
              return typeof x === 'function' ? (x as (...a: unknown[]) => unknown).bind(dt) : x;
            },
          });
        };
      },
    });
    await expect(backup(env.opts('web-01', { mode: 'quiesce', agentTimeoutSeconds: 3 }), { ...env.ctx, hypervisor: failing })).rejects.toMatchObject({
      code: 'KVMBAK_QUIESCE',
    });
    expect(log).toEqual([
      ['setAgentTimeout', 3],
      ['fsFreeze'],
      ['setAgentTimeout', 'block'],
      ['setAgentTimeout', 3],
      ['fsThaw'],
      ['setAgentTimeout', 'block'],
    ]);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('recover thaws a domain left frozen with the agent timeout set, and puts it back', async () => {
    env = await setup();
    await crashedRun(env, [{ step: 'window-start', action: 'freeze', memoryFile: null }], 'quiesce');
    const d = await env.hv.lookupDomain('web-01');
    await d.fsFreeze();
    d.free();
    const log: unknown[] = [];
    const r = await recover({ dest: env.dest, agentTimeoutSeconds: 4 }, { hypervisor: recording(env.hv, log), lvm: env.fake.lvm, retryDelayMs: 1 });
    expect(r.errors).toEqual([]);
    expect(r.runs[0].actions[0]).toBe('thawed the filesystems of web-01 (2)');
    expect(log).toEqual([['setAgentTimeout', 4], ['fsThaw'], ['setAgentTimeout', 'block']]);
    await expectNothingLeft(env, 'web-01', 'running');
  });
});

// Defect 7 of issue 9: the next backup planned from the state a killed run left (shut off), then recovered.
describe('the next backup recovers first, then plans', () => {
  it('killed in the save window (VM saved, shut off): backup in mode pause restores the VM, then backs it up paused', async () => {
    env = await setup();
    const crash = await crashedRun(env, [{ step: 'window-start', action: 'save', memoryFile: join(env.dest, 'web-01', OLD, 'memory.state') }]);
    const d = await env.hv.lookupDomain('web-01');
    await d.save(crash.memoryFile);
    d.free();
    expect(await stateOf(env.hv, 'web-01')).toBe('shutoff');
    const warnings: string[] = [];
    const r = await backup(
      env.opts('web-01', { mode: 'pause', onProgress: (e) => void (e.type === 'warning' && warnings.push(e.message)) }),
      env.ctx,
    );
    expect(warnings[0]).toBe(`recovered an interrupted backup (${OLD}): restored web-01 from its saved memory ${crash.memoryFile}`);
    expect(r).toMatchObject({ mode: 'pause', stateBefore: 'running', stateAfter: 'running', memoryBytes: null });
    expect((await readManifest(r.setPath)).mode).toBe('pause');
    expect(existsSync(crash.setPath)).toBe(false);
    expect(existsSync(crash.journal)).toBe(false);
    expect(env.fake.snapshots()).toEqual([]);
  });
});

describe('hooks', () => {
  it('beforeHold runs after the set is made and before the VM is held; afterResume once it runs again, before archiving', async () => {
    env = await setup();
    const e = env;
    const seen: string[] = [];
    const ctxs: BackupHookContext[] = [];
    const r = await backup(
      env.opts('web-01', {
        mode: 'pause',
        onProgress: (p: BackupProgress) => void (p.type === 'phase' && seen.push(p.phase)),
        hooks: {
          beforeHold: async (c) => {
            ctxs.push(c);
            seen.push(`beforeHold:${existsSync(c.setPath)}:${await stateOf(e.hv, 'web-01')}`);
          },
          afterResume: async (c) => {
            ctxs.push(c);
            seen.push(`afterResume:${await stateOf(e.hv, 'web-01')}:${e.fake.snapshots().length}`);
          },
        },
      }),
      env.ctx,
    );
    expect(seen.slice(seen.indexOf('prepare'), seen.indexOf('archive') + 1)).toEqual([
      'prepare',
      'beforeHold:true:running',
      'suspend',
      'snapshot',
      'snapshot',
      'resume',
      'afterResume:running:2',
      'archive',
    ]);
    expect(ctxs).toEqual([
      { domain: 'web-01', mode: 'pause', setPath: r.setPath },
      { domain: 'web-01', mode: 'pause', setPath: r.setPath },
    ]);
  });

  it('a throw in beforeHold aborts cleanly: the VM never held, no set, no snapshot, no journal', async () => {
    env = await setup();
    const phases: string[] = [];
    await expect(
      backup(
        env.opts('web-01', {
          onProgress: (p) => void (p.type === 'phase' && phases.push(p.phase)),
          hooks: {
            beforeHold: async () => {
              throw new Error('the database did not flush');
            },
          },
        }),
        env.ctx,
      ),
    ).rejects.toThrow('the database did not flush');
    expect(phases).not.toContain('save');
    expect(env.fake.calls('lvcreate')).toEqual([]);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a throw in afterResume is a warning; the backup completes', async () => {
    env = await setup();
    const warnings: string[] = [];
    const r = await backup(
      env.opts('web-01', {
        onProgress: (p) => void (p.type === 'warning' && warnings.push(p.message)),
        hooks: {
          afterResume: async () => {
            throw new Error('could not restart the app');
          },
        },
      }),
      env.ctx,
    );
    await readManifest(r.setPath);
    expect(warnings).toContain('the afterResume hook failed: could not restart the app');
    expect(await domainDirEntries(env.dest, 'web-01')).toEqual([r.setPath.split('/').pop()]);
  });
});

describe('progress', () => {
  it('the memory save reports bytes from the job statistics while it runs', async () => {
    env = await setup();
    let n = 0;
    const stats = (): Record<string, unknown> => {
      n++;
      return { type: 'unbounded', operation: 'save', memoryTotal: 64 << 20, memoryProcessed: Math.min(n * (16 << 20), 64 << 20) };
    };
    const events: BackupProgress[] = [];
    await backup(env.opts('web-01', { onProgress: (e) => void (e.type === 'save' && events.push(e)) }), {
      ...env.ctx,
      hypervisor: recording(env.hv, [], { stats, saveDelayMs: 200 }),
      saveProgressIntervalMs: 20,
    });
    expect(events.length).toBeGreaterThan(1);
    expect(events[0]).toEqual({ type: 'save', domain: 'web-01', bytesDone: 16 << 20, bytesTotal: 64 << 20 });
  });

  it('recover reports what it does, and stops between runs when aborted', async () => {
    env = await setup();
    await crashedRun(env, [{ step: 'window-start', action: 'suspend', memoryFile: null }]);
    const d = await env.hv.lookupDomain('web-01');
    await d.suspend();
    d.free();
    const ac = new AbortController();
    ac.abort();
    await expect(recover({ dest: env.dest, signal: ac.signal }, { hypervisor: env.hv, lvm: env.fake.lvm })).rejects.toMatchObject({
      code: 'ABORT_ERR',
    });
    expect(await stateOf(env.hv, 'web-01')).toBe('paused');
    const events: RecoverProgress[] = [];
    const r = await recover({ dest: env.dest, onProgress: (e) => void events.push(e) }, { hypervisor: env.hv, lvm: env.fake.lvm, retryDelayMs: 1 });
    expect(r.errors).toEqual([]);
    expect(events.map((e) => e.message)).toEqual([
      `recovering the interrupted backup ${OLD} of web-01`,
      'looking for snapshots tagged kvmbak whose run is gone',
    ]);
    await expectNothingLeft(env, 'web-01', 'running');
  });
});
