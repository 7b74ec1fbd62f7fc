// Helpers for the e2e suite, which runs inside the lab VM (see test/e2e/README.md).
// Commands are spawned with argument arrays; pipelines check the exit status of every stage.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, openSync, closeSync, fsyncSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';

export { rejection } from '../../support/rejection.js';

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
  /** Its disks are thin LVs in the fixture's thin pool (lab-thin). */
  thin?: boolean;
}

/** lab-linux: the lab's own image booted inside the lab, with a real qemu-guest-agent. */
export interface LabLinux {
  domain: string;
  /** Why the inner Linux guest is not there (no nested KVM, no agent answer), or null. */
  error: string | null;
  /** Its serial console (its journal, where qemu-ga logs each freeze and thaw), written by libvirt. */
  serialLog: string;
  /** Host end of its virtio port kvmbak.resume: a line "cont" continues a stopped agent. */
  resumeSocket: string;
  /** Where the guest mounts its data disk (the LV). */
  dataMount: string;
}

export interface LabFixture {
  uri: string;
  vg: string;
  pv: string;
  pool: string;
  /** The thin pool (in `vg`) holding lab-thin's disk. */
  thinPool: string;
  domainType: 'kvm' | 'qemu';
  xmlDir: string;
  lvs: Record<string, LabLv>;
  files: { qcow2: string; cdrom: string };
  domains: Record<string, LabDomain>;
  linux: LabLinux;
}

let cached: LabFixture | undefined;

/** The fixture the lab's fixture.sh set up; a clear error outside the lab. */
export function lab(): LabFixture {
  if (cached) return cached;
  const path = process.env.KVMBAK_LAB_FIXTURE;
  if (!path) {
    throw new Error('the e2e suite runs inside the kvmbak lab VM (real lvm2 + libvirtd): run `npm run test:e2e` as root (see test/e2e/README.md)');
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
    for (let done = 0; done < bytes;) {
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The built CLI (dist/cli.js). */
export const CLI = join(process.cwd(), 'dist', 'cli.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Killed by the deadline: the command hung. */
  hung: boolean;
}

/**
 * Runs the CLI; a run still going after `deadlineMs` is killed (SIGKILL) and reported `hung`.
 * `onEvent` gets every JSON event line of stderr (--json) and can kill the run.
 */
export function runCli(
  args: string[],
  { deadlineMs = 600_000, onEvent }: { deadlineMs?: number; onEvent?: (e: Record<string, unknown>, kill: () => void) => void } = {},
): Promise<CliRun> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (): void => {
    child.kill('SIGKILL');
  };
  let hung = false;
  const deadline = setTimeout(() => {
    hung = true;
    kill();
  }, deadlineMs);
  let stdout = '';
  let stderr = '';
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (!onEvent) return;
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let event: Record<string, unknown> | undefined;
      try {
        event = JSON.parse(line) as Record<string, unknown>;
      } catch {
        // not an event line
      }
      if (event) onEvent(event, kill);
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(deadline);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0, hung });
    });
  });
}

/** LVs carrying the `kvmbak` tag (leftover snapshots), as VG/LV. */
export async function kvmbakLvs(): Promise<string[]> {
  const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_full_name', '@kvmbak']);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/**
 * Before a suite that loses a domain on purpose: the domain running, and in `work` what
 * putDomainBack restores (its inactive XML with secrets, its one disk's content).
 */
export async function keepDomain(domain: string, lvPath: string, work: string): Promise<void> {
  if ((await domState(domain)) !== 'running') await virsh('start', domain);
  writeFileSync(join(work, 'domain.xml'), (await virsh('dumpxml', '--inactive', '--security-info', domain)).stdout);
  await sh('dd', [`if=${lvPath}`, `of=${join(work, 'lv.raw')}`, 'bs=4M', 'status=none']);
}

/**
 * After such a suite: the domain as the fixture made it — defined from the kept XML, its LV there
 * (of the fixture's size; thin in `thinPool` when given, else linear) with the kept content, running.
 */
export async function putDomainBack(domain: string, lv: string, work: string, thinPool?: string): Promise<void> {
  const fx = lab();
  const spec = fx.lvs[lv]!;
  await virsh('destroy', domain).catch(() => undefined);
  const seg = await sh('lvs', ['--noheadings', '-o', 'segtype', `${fx.vg}/${lv}`], { check: false });
  const want = thinPool ? 'thin' : 'linear';
  if (seg.code === 0 && seg.stdout.trim() !== want) await sh('lvremove', ['-q', '-y', `${fx.vg}/${lv}`]);
  if (seg.code !== 0 || seg.stdout.trim() !== want) {
    const size = `${spec.bytes}b`;
    const made = thinPool ? ['-V', size, '--thinpool', thinPool] : ['-W', 'y', '-Z', 'y', '-L', size];
    await sh('lvcreate', ['-q', '-y', ...made, '-n', lv, fx.vg]);
  }
  if ((await sha256Of(spec.path)) !== spec.sha256) {
    await sh('dd', [`if=${join(work, 'lv.raw')}`, `of=${spec.path}`, 'bs=4M', 'conv=fsync', 'status=none']);
  }
  await virsh('define', join(work, 'domain.xml'));
  await sh('virsh', ['-q', '-c', fx.uri, 'pool-refresh', fx.pool], { check: false });
  await virsh('start', domain);
  if ((await sha256Of(spec.path)) !== spec.sha256) throw new Error(`${fx.vg}/${lv} does not hold the fixture's content after it was put back`);
}

/** Waits until no lvm2 command started by a killed kvmbak is still running. */
export async function lvmSettled(): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const r = await sh('pgrep', ['-x', 'lvcreate|lvremove|lvextend|lvs|vgs'], { check: false });
    if (r.code !== 0) return;
    await sleep(500);
  }
}

/**
 * One guest-agent command through libvirt (`virsh qemu-agent-command`); resolves to its `return`.
 * Rejects when the agent does not answer within `timeoutSeconds` or answers with an error.
 */
export async function agentCommand(domain: string, execute: string, args?: Record<string, unknown>, timeoutSeconds = 10): Promise<unknown> {
  const cmd = JSON.stringify(args === undefined ? { execute } : { execute, arguments: args });
  const { stdout } = await virsh('qemu-agent-command', domain, cmd, '--timeout', String(timeoutSeconds));
  return (JSON.parse(stdout) as { return: unknown }).return;
}

/** Whether the guest agent answers a guest-ping within `timeoutSeconds`. */
export async function agentAnswers(domain: string, timeoutSeconds = 2): Promise<boolean> {
  return agentCommand(domain, 'guest-ping', undefined, timeoutSeconds).then(
    () => true,
    () => false,
  );
}

/** Waits (at most `withinMs`) until the guest agent answers. */
export async function waitForAgent(domain: string, withinMs = 60_000): Promise<void> {
  const end = Date.now() + withinMs;
  while (!(await agentAnswers(domain, 5))) {
    if (Date.now() > end) throw new Error(`the guest agent of ${domain} did not answer within ${withinMs / 1000} s`);
    await sleep(1000);
  }
}

/** Writes a file in the guest through its agent (guest-file-open/write/close: no fsync). */
export async function guestWriteFile(domain: string, path: string, content: string): Promise<void> {
  const handle = await agentCommand(domain, 'guest-file-open', { path, mode: 'w' });
  try {
    await agentCommand(domain, 'guest-file-write', { handle, 'buf-b64': Buffer.from(content).toString('base64') });
  } finally {
    await agentCommand(domain, 'guest-file-close', { handle });
  }
}

/**
 * Writes the line "cont" to the host end of lab-linux's virtio port kvmbak.resume, where the
 * guest's kvmbak-lab-agent-stop waits to continue the agent it stopped (test/e2e/image/).
 */
export function sendResume(socket: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket, () => {
      c.write('cont\n', (err) => {
        if (err) reject(err);
        // Stay connected a moment: the guest reads the line while the host end is open.
        else
          setTimeout(() => {
            c.destroy();
            resolve();
          }, 1000);
      });
    });
    c.on('error', reject);
  });
}

/** Follows a growing text file (a guest's serial console) from its current end. */
export class LogFollower {
  private readonly start: number;
  constructor(readonly path: string) {
    this.start = statSync(path).size;
  }
  /** What was appended since construction. */
  text(): string {
    return readFileSync(this.path).subarray(this.start).toString('utf8');
  }
  /** Waits (at most `withinMs`) until the appended text matches every pattern, in order; returns it. */
  async waitFor(patterns: RegExp[], withinMs = 30_000): Promise<string> {
    const end = Date.now() + withinMs;
    for (;;) {
      const text = this.text();
      let from = 0;
      const inOrder = patterns.every((p) => {
        const m = p.exec(text.slice(from));
        if (!m) return false;
        from += m.index + m[0].length;
        return true;
      });
      if (inOrder) return text;
      if (Date.now() > end) {
        throw new Error(`${this.path}: no ${patterns.map(String).join(' then ')} within ${withinMs / 1000} s; it got:\n${text.slice(-2000)}`);
      }
      await sleep(250);
    }
  }
}
