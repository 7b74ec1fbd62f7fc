import { readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type LockOwner, acquireLock, currentBootId, isLockError, ownerStatus, processOwner, readLock } from '../../../src/store/index.js';
import { type Child, buildChildModules, removeChildModules, spawnChild, tempDir } from './helpers.js';

let dest: string;
const children: Child[] = [];

beforeAll(async () => {
  await buildChildModules();
}, 60_000);
afterAll(async () => {
  await removeChildModules();
});
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.proc.stdin.end();
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exited;
  }
  await rm(dest, { recursive: true, force: true });
});

async function lockingChild(then: 'hold' | 'exit' | 'kill', extra: Record<string, unknown> = {}): Promise<Child> {
  const c = await spawnChild('lock', { dest, domain: 'web01', then, ...extra });
  children.push(c);
  expect((await c.next()).event).toBe('ready');
  return c;
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; holder?: LockOwner | null }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

function staleOwner(overrides: Partial<LockOwner>): LockOwner {
  return {
    ...processOwner(new Date('2026-11-26T03:15:00Z')),
    domain: 'web01',
    operation: 'backup',
    nonce: 'f'.repeat(32),
    ...overrides,
  };
}

describe('acquireLock', () => {
  it('writes the holder as JSON in DEST/DOMAIN/.lock (0600) and removes it on release', async () => {
    const lock = await acquireLock(dest, 'web01', 'backup');
    expect(lock.path).toBe(join(dest, 'web01', '.lock'));
    const content = JSON.parse(await readFile(lock.path, 'utf8')) as LockOwner;
    expect(content).toEqual(lock.owner);
    expect(content).toMatchObject({ pid: process.pid, host: hostname(), domain: 'web01', operation: 'backup' });
    expect(content.bootId).toBe(currentBootId());
    expect(typeof content.pidStart).toBe('number');
    expect((await stat(lock.path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dest, 'web01'))).mode & 0o777).toBe(0o700);
    expect((await readLock(dest, 'web01'))?.status).toBe('alive');
    await lock.release();
    await lock.release();
    expect(await readdir(join(dest, 'web01'))).toEqual([]);
    expect(await readLock(dest, 'web01')).toBeNull();
  });

  it('is released by `await using`, and can then be taken again', async () => {
    {
      await using lock = await acquireLock(dest, 'web01', 'backup');
      expect(lock.owner.operation).toBe('backup');
    }
    const again = await acquireLock(dest, 'web01', 'prune');
    again.releaseSync();
    expect(await readdir(join(dest, 'web01'))).toEqual([]);
  });

  it('is per domain', async () => {
    const a = await acquireLock(dest, 'web01', 'backup');
    const b = await acquireLock(dest, 'db01', 'backup');
    await a.release();
    await b.release();
  });

  it('refuses a second holder in the same process', async () => {
    const lock = await acquireLock(dest, 'web01', 'backup');
    const e = await rejection(acquireLock(dest, 'web01', 'restore'));
    expect(isLockError(e)).toBe(true);
    expect(e.code).toBe('KVMBAK_LOCKED');
    expect(e.message).toBe(
      `domain web01 is being backed up by kvmbak pid ${process.pid} since ${lock.owner.startedAt}; ` +
        'wait for it or, if that process is gone, run kvmbak recover',
    );
    await lock.release();
  });

  it('refuses while a live child process holds it', async () => {
    const c = await lockingChild('hold');
    const { event, owner } = await c.next();
    expect(event).toBe('acquired');
    const e = await rejection(acquireLock(dest, 'web01', 'backup'));
    expect(isLockError(e)).toBe(true);
    expect(e.message).toContain(`domain web01 is being backed up by kvmbak pid ${c.proc.pid} since ${owner.startedAt}`);
    expect(e.holder).toEqual(owner);
    // The child releases on request; then the lock is free.
    c.proc.stdin.end();
    expect((await c.next()).event).toBe('released');
    await (await acquireLock(dest, 'web01', 'backup')).release();
  });

  it.each(['kill', 'exit'] as const)('takes over the lock of a child that died (%s) without releasing', async (then) => {
    const c = await lockingChild(then);
    const { owner } = await c.next();
    await c.exited;
    expect(JSON.parse(await readFile(join(dest, 'web01', '.lock'), 'utf8'))).toEqual(owner);
    expect((await readLock(dest, 'web01'))?.status).toBe('dead');
    const lock = await acquireLock(dest, 'web01', 'backup');
    expect(JSON.parse(await readFile(lock.path, 'utf8')).pid).toBe(process.pid);
    await lock.release();
    expect(await readdir(join(dest, 'web01'))).toEqual([]);
  });

  it('exactly one of several racing processes takes over a stale lock', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release(); // creates DEST/web01
    await writeFile(join(dest, 'web01', '.lock'), JSON.stringify(staleOwner({ bootId: 'previous-boot' })));
    const racers = [];
    for (let i = 0; i < 4; i++) racers.push(await lockingChild('hold', { waitForGo: true }));
    for (const r of racers) r.proc.stdin.write('go\n');
    const results = await Promise.all(racers.map((r) => r.next()));
    const winners = results.filter((r) => r.event === 'acquired');
    expect(winners).toHaveLength(1);
    for (const r of results.filter((x) => x.event !== 'acquired')) {
      expect(r).toMatchObject({ event: 'error', code: 'KVMBAK_LOCKED' });
      expect(r.holder.nonce).toBe(winners[0].owner.nonce);
    }
    const onDisk = JSON.parse(await readFile(join(dest, 'web01', '.lock'), 'utf8'));
    expect(onDisk.nonce).toBe(winners[0].owner.nonce);
    expect((await readdir(join(dest, 'web01'))).sort()).toEqual(['.lock']);
  });

  it('concurrent acquires over a stale lock in one process: exactly one wins', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    await writeFile(join(dest, 'web01', '.lock'), JSON.stringify(staleOwner({ bootId: 'previous-boot' })));
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => acquireLock(dest, 'web01', 'backup')));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(isLockError(r.reason)).toBe(true);
    const lock = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof acquireLock>>>).value;
    expect(JSON.parse(await readFile(lock.path, 'utf8')).nonce).toBe(lock.owner.nonce);
    await lock.release();
    expect(await readdir(join(dest, 'web01'))).toEqual([]);
  });

  it('an interrupted takeover (marker left behind) blocks with instructions instead of guessing', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    const lockPath = join(dest, 'web01', '.lock');
    await writeFile(lockPath, JSON.stringify(staleOwner({ bootId: 'previous-boot' })));
    const marker = `${lockPath}.takeover-${'f'.repeat(32)}`;
    await writeFile(marker, '{}');
    const e = await rejection(acquireLock(dest, 'web01', 'backup'));
    expect(e.message).toBe(
      `domain web01: the stale lock ${lockPath} is being taken over by another process that does not finish; ` +
        `if no kvmbak is running for web01, delete ${marker} and ${lockPath}`,
    );
    await rm(marker);
    await (await acquireLock(dest, 'web01', 'backup')).release();
  });

  it('takes over a lock from a previous boot', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    await writeFile(join(dest, 'web01', '.lock'), JSON.stringify(staleOwner({ bootId: 'previous-boot', pid: process.pid })));
    const lock = await acquireLock(dest, 'web01', 'backup');
    await lock.release();
  });

  it('takes over a lock whose pid now belongs to another process (pid reuse)', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    const me = processOwner();
    await writeFile(join(dest, 'web01', '.lock'), JSON.stringify(staleOwner({ pidStart: (me.pidStart ?? 0) + 1 })));
    await (await acquireLock(dest, 'web01', 'backup')).release();
  });

  it('never takes over a lock held on another host', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    await writeFile(
      join(dest, 'web01', '.lock'),
      JSON.stringify(staleOwner({ host: 'other-host', pid: 999_999, bootId: 'x', operation: 'restore' })),
    );
    const e = await rejection(acquireLock(dest, 'web01', 'backup'));
    expect(e.message).toBe(
      'domain web01 is being restored by kvmbak pid 999999 on host other-host since 2026-11-26T03:15:00.000Z; ' +
        `wait for it or, if that process is gone, run kvmbak recover on other-host (or delete ${join(dest, 'web01', '.lock')})`,
    );
    expect((await readLock(dest, 'web01'))?.status).toBe('unknown');
  });

  it('treats an unreadable lock as held, unless it predates this boot', async () => {
    await (await acquireLock(dest, 'web01', 'backup')).release();
    const lockPath = join(dest, 'web01', '.lock');
    await writeFile(lockPath, '{"pid": 12');
    const e = await rejection(acquireLock(dest, 'web01', 'backup'));
    expect(e.message).toBe(`domain web01 is locked by ${lockPath}, which is unreadable; if no kvmbak is running for web01, delete that file`);
    const old = new Date('2000-01-01T00:00:00Z');
    await utimes(lockPath, old, old);
    await (await acquireLock(dest, 'web01', 'backup')).release();
  });

  it('release leaves a lock that is no longer ours alone', async () => {
    const lock = await acquireLock(dest, 'web01', 'backup');
    const other = JSON.stringify(staleOwner({ nonce: 'e'.repeat(32) }));
    await writeFile(lock.path, other);
    await lock.release();
    expect(await readFile(lock.path, 'utf8')).toBe(other);
  });

  it('needs an existing destination and a valid domain name', async () => {
    await expect(acquireLock(join(dest, 'gone'), 'web01', 'backup')).rejects.toThrow('does not exist');
    await expect(acquireLock(dest, '../x', 'backup')).rejects.toThrow("contains '/'");
  });
});

describe('ownerStatus', () => {
  it('judges this process alive and a finished child dead', async () => {
    expect(ownerStatus(processOwner())).toBe('alive');
    const c = await lockingChild('exit');
    const { owner } = await c.next();
    await c.exited;
    expect(ownerStatus(owner)).toBe('dead');
  });
  it('cannot judge another host', () => {
    expect(ownerStatus({ ...processOwner(), host: 'elsewhere' })).toBe('unknown');
  });
});
