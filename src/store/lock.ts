/**
 * One kvmbak at a time per domain: the lock file DEST/DOMAIN/.lock.
 *
 * Acquire: the lock's JSON (a LockOwner, with a random nonce) is written to a
 * temporary file and hard-linked to `.lock`; link() fails with EEXIST when the
 * lock is held, so the lock file is never seen empty or half-written. (On a
 * file system without hard links, `.lock` is created with O_EXCL instead.)
 *
 * Stale locks: a holder on this host whose boot id differs, whose pid is gone
 * (or a zombie), or whose pid now belongs to a younger process is dead, and
 * its lock is taken over. The takeover is race-safe: the contender must first
 * create `.lock.takeover-<nonce of the stale lock>` with O_EXCL — only one
 * process can — then checks that `.lock` still holds that nonce and renames its
 * own lock over it (atomic: `.lock` never disappears in between). A holder on
 * another host cannot be checked and is always treated as alive.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { link, readFile, rename, stat, unlink } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode, readRegularFile, tempPathFor, writeNewFile } from '../util/fs.js';
import { LockError } from './errors.js';
import { LOCK_FILE, assertDomainName } from './naming.js';
import { type LockOwner, type OwnerStatus, type ProcessOwner, isProcessOwner, ownerStatus, processOwner } from './owner.js';
import { assertDest, ensureDomainDir } from './set.js';

/** A held domain lock. */
export interface DomainLock extends AsyncDisposable {
  readonly domain: string;
  /** DEST/DOMAIN/.lock */
  readonly path: string;
  /** What the lock file says (this process). */
  readonly owner: LockOwner;
  /** Removes the lock if it is still ours. Idempotent. */
  release(): Promise<void>;
  /** The same, synchronously (for exit handlers). */
  releaseSync(): void;
}

/** How many times acquireLock re-reads a lock that changed under it before giving up. */
const MAX_ATTEMPTS = 20;
/** How long a contender waits for another process's takeover to finish. */
const TAKEOVER_WAIT_MS = 2000;

/** Parses a lock file's text; null when it is not a complete LockOwner. */
export function parseLockOwner(text: string): LockOwner | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isProcessOwner(v)) return null;
  const o = v as ProcessOwner & Record<string, unknown>;
  if (typeof o.domain !== 'string' || typeof o.operation !== 'string' || typeof o.nonce !== 'string') return null;
  return o as unknown as LockOwner;
}

interface FoundLock {
  owner: LockOwner | null;
  /** Identifies this lock instance: its nonce, or a hash of a damaged file's bytes. */
  key: string;
  mtimeMs: number;
}

/** Reads `.lock`; null when there is none. A damaged file is re-read a few times (it may be mid-write). */
async function readLockFile(lockPath: string): Promise<FoundLock | null> {
  for (let i = 0; ; i++) {
    let text: string;
    let mtimeMs: number;
    try {
      text = (await readRegularFile(lockPath, 64 * 1024)).toString('utf8');
      mtimeMs = (await stat(lockPath)).mtimeMs;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return null;
      throw e;
    }
    const owner = parseLockOwner(text);
    if (owner !== null) return { owner, key: owner.nonce, mtimeMs };
    if (i >= 3) return { owner: null, key: createHash('sha256').update(text).digest('hex').slice(0, 32), mtimeMs };
    await sleep(50);
  }
}

const DOING: Record<string, string> = {
  backup: 'being backed up',
  restore: 'being restored',
  prune: 'being pruned',
  recover: 'being recovered',
  verify: 'being verified',
};

function heldError(domain: string, lockPath: string, found: FoundLock, status: OwnerStatus): LockError {
  const o = found.owner;
  if (o === null) {
    return new LockError(`domain ${domain} is locked by ${lockPath}, which is unreadable; if no kvmbak is running for ${domain}, delete that file`, {
      domain,
      lockPath,
      holder: null,
    });
  }
  const doing = DOING[o.operation] ?? `in use (${o.operation})`;
  const where = status === 'unknown' ? ` on host ${o.host}` : '';
  const advice =
    status === 'unknown'
      ? `wait for it or, if that process is gone, run kvmbak recover on ${o.host} (or delete ${lockPath})`
      : 'wait for it or, if that process is gone, run kvmbak recover';
  return new LockError(`domain ${domain} is ${doing} by kvmbak pid ${o.pid}${where} since ${o.startedAt}; ${advice}`, {
    domain,
    lockPath,
    holder: o,
  });
}

/** 'alive', 'dead' or 'unknown' for a lock found on disk. A damaged lock is dead only if older than this boot. */
function judge(found: FoundLock): OwnerStatus {
  if (found.owner !== null) return ownerStatus(found.owner);
  const bootTimeMs = Date.now() - uptime() * 1000;
  return found.mtimeMs < bootTimeMs - 1000 ? 'dead' : 'alive';
}

/** link(tmp, lockPath), or an O_EXCL create where hard links are not supported. False when held. */
async function tryCreate(tmp: string, lockPath: string, content: string): Promise<boolean> {
  try {
    await link(tmp, lockPath);
    return true;
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
  }
  try {
    await writeNewFile(lockPath, content);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') return false;
    throw e;
  }
}

/**
 * Replaces the stale lock `found` with ours (the file at `tmp`). Returns
 * false when another process got there first (the caller re-reads the lock).
 */
async function takeOver(domain: string, lockPath: string, found: FoundLock, tmp: string, owner: LockOwner): Promise<boolean> {
  const marker = `${lockPath}.takeover-${found.key}`;
  try {
    await writeNewFile(marker, `${JSON.stringify(owner)}\n`);
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
    // Another process is taking this stale lock over: wait until `.lock` changes.
    const deadline = Date.now() + TAKEOVER_WAIT_MS;
    while (Date.now() < deadline) {
      await sleep(20);
      const now = await readLockFile(lockPath);
      if (now === null || now.key !== found.key) return false;
    }
    throw new LockError(
      `domain ${domain}: the stale lock ${lockPath} is being taken over by another process that does not finish; ` +
        `if no kvmbak is running for ${domain}, delete ${marker} and ${lockPath}`,
      { domain, lockPath, holder: found.owner },
    );
  }
  try {
    const again = await readLockFile(lockPath);
    if (again === null || again.key !== found.key) return false;
    await rename(tmp, lockPath);
    return true;
  } finally {
    await unlink(marker).catch(() => undefined);
  }
}

/**
 * Takes DEST/DOMAIN's lock for `operation` ('backup', 'restore', 'prune',
 * 'recover', ...), creating DEST/DOMAIN (0700) if needed. Takes over a stale
 * lock; throws LockError when a live kvmbak holds it (or one on another host).
 */
export async function acquireLock(dest: string, domain: string, operation: string): Promise<DomainLock> {
  const domainDir = await ensureDomainDir(dest, domain);
  const lockPath = join(domainDir, LOCK_FILE);
  const owner: LockOwner = { ...processOwner(), domain, operation, nonce: randomBytes(16).toString('hex') };
  const content = `${JSON.stringify(owner, null, 2)}\n`;
  const tmp = tempPathFor(lockPath);
  await writeNewFile(tmp, content);
  try {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (await tryCreate(tmp, lockPath, content)) return heldLock(domain, lockPath, owner);
      const found = await readLockFile(lockPath);
      if (found === null) continue; // released in between
      const status = judge(found);
      if (status !== 'dead') throw heldError(domain, lockPath, found, status);
      if (await takeOver(domain, lockPath, found, tmp, owner)) return heldLock(domain, lockPath, owner);
    }
    throw new LockError(`domain ${domain}: could not take ${lockPath}: it kept changing (${MAX_ATTEMPTS} attempts); try again`, {
      domain,
      lockPath,
      holder: null,
    });
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

function heldLock(domain: string, lockPath: string, owner: LockOwner): DomainLock {
  let released = false;
  const ours = (text: string): boolean => parseLockOwner(text)?.nonce === owner.nonce;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    const text = await readFile(lockPath, 'utf8').catch(() => '');
    if (ours(text)) await unlink(lockPath).catch(() => undefined);
  };
  return {
    domain,
    path: lockPath,
    owner,
    release,
    releaseSync() {
      if (released) return;
      released = true;
      let text = '';
      try {
        text = readFileSync(lockPath, 'utf8');
      } catch {
        return;
      }
      if (ours(text)) {
        try {
          unlinkSync(lockPath);
        } catch {
          // already gone
        }
      }
    },
    [Symbol.asyncDispose]: release,
  };
}

/** The domain's lock as found on disk, with whether its holder can still run; null when unlocked. */
export async function readLock(dest: string, domain: string): Promise<{ path: string; owner: LockOwner | null; status: OwnerStatus } | null> {
  assertDomainName(domain);
  const lockPath = join(await assertDest(dest), domain, LOCK_FILE);
  const found = await readLockFile(lockPath);
  return found === null ? null : { path: lockPath, owner: found.owner, status: judge(found) };
}
