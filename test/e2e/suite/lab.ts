// Helpers for the e2e suite, which runs inside the lab VM (see test/e2e/README.md).
// Commands are spawned with argument arrays; pipelines check the exit status of every stage.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, openSync, closeSync, fsyncSync, readFileSync, writeSync } from 'node:fs';

export interface LabLv {
  path: string;
  bytes: number;
  sha256: string;
}

export interface LabDomain {
  running: boolean;
  /** target → LV name in the lab VG */
  disks: Record<string, string>;
  agentChannel?: boolean;
  fileDisks?: Record<string, string>;
  cdrom?: Record<string, string>;
}

export interface LabFixture {
  uri: string;
  vg: string;
  pv: string;
  pool: string;
  domainType: 'kvm' | 'qemu';
  xmlDir: string;
  lvs: Record<string, LabLv>;
  files: { qcow2: string; cdrom: string };
  domains: Record<string, LabDomain>;
}

let cached: LabFixture | undefined;

/** Resolves to the error a promise rejects with; fails the test when it resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, but the call succeeded');
}

/** The fixture the lab's fixture.sh set up; a clear error outside the lab. */
export function lab(): LabFixture {
  if (cached) return cached;
  const path = process.env.KVMBAK_LAB_FIXTURE;
  if (!path) {
    throw new Error(
      'the e2e suite runs inside the kvmbak lab VM (real lvm2 + libvirtd): run `npm run test:e2e` as root (see test/e2e/README.md)',
    );
  }
  cached = JSON.parse(readFileSync(path, 'utf8')) as LabFixture;
  return cached;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Runs a command; `check` (default) rejects with its stderr on a non-zero exit. */
export function sh(file: string, args: string[], { check = true }: { check?: boolean } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', LVM_SUPPRESS_FD_WARNINGS: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const result = { stdout, stderr, code, signal };
      if (check && (code !== 0 || signal)) {
        reject(new Error(`${file} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
      } else {
        resolve(result);
      }
    });
  });
}

export const virsh = (...args: string[]) => sh('virsh', ['-q', '-c', lab().uri, ...args]);

export async function domState(name: string): Promise<string> {
  return (await virsh('domstate', name)).stdout.trim();
}

export interface StageStatus {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * `a | b | c <in >out`, with the exit status of every stage collected (no shell, no pipefail
 * needed). Returns the statuses; the caller asserts them.
 */
export function pipeline(stages: Array<[string, string[]]>, { stdin, stdout }: { stdin?: string; stdout?: string } = {}): Promise<StageStatus[]> {
  const inFd = stdin === undefined ? undefined : openSync(stdin, 'r');
  const outFd = stdout === undefined ? undefined : openSync(stdout, 'w', 0o600);
  const done: Array<Promise<StageStatus>> = [];
  let prev: NodeJS.ReadableStream | undefined;
  stages.forEach(([file, args], i) => {
    const last = i === stages.length - 1;
    const child = spawn(file, args, {
      stdio: [i === 0 ? (inFd ?? 'ignore') : 'pipe', last ? (outFd ?? 'ignore') : 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    if (prev && child.stdin) prev.pipe(child.stdin);
    // A consumer that dies early must not crash us with EPIPE: its own status reports it.
    child.stdin?.on('error', () => {});
    prev = child.stdout ?? undefined;
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    done.push(
      new Promise((resolve) => {
        child.on('error', (err) => resolve({ command: file, code: null, signal: null, stderr: String(err) }));
        child.on('close', (code, signal) => resolve({ command: file, code, signal, stderr }));
      }),
    );
  });
  return Promise.all(done).finally(() => {
    if (inFd !== undefined) closeSync(inFd);
    if (outFd !== undefined) closeSync(outFd);
  });
}

/** sha256 of a file or block device (its first `bytes` bytes when given). */
export function sha256Of(path: string, bytes?: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path, bytes === undefined ? {} : { start: 0, end: bytes - 1 })
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** sha256 of `bytes` zero bytes. */
export function zeroSha256(bytes: number): string {
  const hash = createHash('sha256');
  const block = Buffer.alloc(1024 * 1024);
  for (let left = bytes; left > 0; left -= block.length) hash.update(left >= block.length ? block : block.subarray(0, left));
  return hash.digest('hex');
}

/** LV attributes from lvs(8), as strings. */
export async function lvsReport(lvPath: string, fields: string[]): Promise<Record<string, string>> {
  const { stdout } = await sh('lvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', fields.join(','), lvPath]);
  const lv = JSON.parse(stdout).report[0].lv[0] as Record<string, string>;
  return lv;
}

/**
 * Writes `bytes` of pseudo-random data derived from `seed` at `offset` of a file or device
 * (O_DIRECT is not needed: fsync before returning). Returns the sha256 of the data written.
 */
export function writePattern(path: string, seed: string, bytes: number, offset = 0): string {
  const key = createHash('sha256').update(`kvmbak-e2e:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(1024 * 1024);
  const fd = openSync(path, 'r+');
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(zeros.length, bytes - done);
      const block = cipher.update(zeros.subarray(0, n));
      writeSync(fd, block, 0, n, offset + done);
      hash.update(block);
      done += n;
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}
