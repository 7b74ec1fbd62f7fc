import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';

export const execFileP = promisify(execFile);

export const KiB = 1024;
export const CHUNK = 64 * KiB;

export async function tempDir(prefix = 'kvmbak-archive-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  return sha256(await readFile(path));
}

/** Text-like bytes: compressible but not trivial. */
function textBytes(n: number, seed: number): Buffer {
  const words = ['lorem', 'ipsum', 'kvmbak', 'virtual', 'machine', 'snapshot', 'volume', 'gzip', 'member', '\n', 'libvirt', String(seed)];
  const parts: string[] = [];
  let len = 0;
  let i = seed;
  while (len < n) {
    const w = words[(i = (i * 1103515245 + 12345) >>> 0) % words.length]!;
    parts.push(w, ' ');
    len += w.length + 1;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/**
 * Deterministic-length test data made of segments: 'z' zeros, 'r' random,
 * 't' text. `pattern` lists segment kinds, each `seg` bytes long, then the
 * result is cut to `size`.
 */
export function mixedData(size: number, pattern = 'rztzr', seg = CHUNK): Buffer {
  const parts: Buffer[] = [];
  let len = 0;
  let k = 0;
  while (len < size) {
    const kind = pattern[k % pattern.length];
    const n = Math.min(seg, size - len);
    parts.push(kind === 'z' ? Buffer.alloc(n) : kind === 'r' ? randomBytes(n) : textBytes(n, k));
    len += n;
    k++;
  }
  return Buffer.concat(parts, size);
}

export async function writeData(path: string, data: Uint8Array): Promise<void> {
  await writeFile(path, data);
}

/** Runs a real tool with stdout into a file (no shell). */
export function runToFile(cmd: string, args: string[], outPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const fd = openSync(outPath, 'w');
    const child = spawn(cmd, args, { stdio: ['ignore', fd, 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      closeSync(fd);
      reject(e);
    });
    child.on('close', (code) => {
      closeSync(fd);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`));
    });
  });
}

/** `zcat FILE | sha256sum` with the real zcat. */
export function zcatSha256(path: string): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('zcat', [path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = createHash('sha256');
    let bytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.byteLength;
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve({ sha256: h.digest('hex'), bytes });
      else reject(new Error(`zcat exited ${code}: ${err}`));
    });
  });
}

export async function gzipTest(path: string): Promise<void> {
  await execFileP('gzip', ['-t', path]);
}

export function gone(path: string): boolean {
  return !existsSync(path);
}

/** True when no temporary file of `dest` (`<dest>.<random>.partial`) is left beside it. */
export function noPartial(dest: string): boolean {
  const base = basename(dest);
  if (!existsSync(dirname(dest))) return true;
  return !readdirSync(dirname(dest)).some((f) => f.startsWith(`${base}.`) && f.endsWith('.partial'));
}

/** Captures the rejection of a promise (fails the test if it resolves). */
export async function rejectionOf(p: Promise<unknown>): Promise<Error & { code?: string; offset?: number; rawOffset?: number }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected the operation to fail, it succeeded');
}

/** Loop devices are usable (root, losetup present, kernel support). */
export async function canUseLoopDevices(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await execFileP('losetup', ['--version']);
    return existsSync('/dev/loop-control');
  } catch {
    return false;
  }
}

export async function attachLoop(file: string): Promise<string> {
  const { stdout } = await execFileP('losetup', ['--find', '--show', file]);
  return stdout.trim();
}

export async function detachLoop(dev: string): Promise<void> {
  await execFileP('losetup', ['--detach', dev]).catch(() => undefined);
}
