import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AbortError, ConfigError, isAbortError, isKvmbakError } from '../../../src/errors.js';
import { CommandNotFoundError, CommandOutputTooLargeError, CommandTimeoutError, LocalCommandRunner, formatCommand } from '../../../src/exec/index.js';

const runner = new LocalCommandRunner();

/** Command lines of live processes whose argv contains `marker` (to prove a child is gone). */
function processesWith(marker: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.split('\0').includes(marker)) found.push(`${pid}: ${cmdline.replace(/\0/g, ' ')}`);
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

describe('LocalCommandRunner', () => {
  it('runs a program with its arguments verbatim, without a shell', async () => {
    const res = await runner.run('/bin/echo', ['hello', 'two words', '$HOME;rm -rf /', '`id`', '*']);
    expect(res).toEqual({ stdout: 'hello two words $HOME;rm -rf / `id` *\n', stderr: '', exitCode: 0, signal: null });
  });

  it('finds programs on PATH', async () => {
    const res = await runner.run('echo', ['-n', 'x']);
    expect(res.stdout).toBe('x');
  });

  it('reports a non-zero exit as a result, with stdout and stderr', async () => {
    const res = await runner.run('/bin/sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(res).toEqual({ stdout: 'out\n', stderr: 'err\n', exitCode: 3, signal: null });
  });

  it('reports death by a signal', async () => {
    const res = await runner.run('/bin/sh', ['-c', 'kill -KILL $$']);
    expect(res.exitCode).toBeNull();
    expect(res.signal).toBe('SIGKILL');
  });

  it('sets LC_ALL=C and LVM_SUPPRESS_FD_WARNINGS=1 and completes PATH with the sbin directories', async () => {
    const r = new LocalCommandRunner({ env: { PATH: '/usr/bin:/bin', LC_ALL: 'de_DE.UTF-8', KEEP: 'yes' } });
    const res = await r.run('/usr/bin/env', []);
    const env = Object.fromEntries(
      res.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(env.LC_ALL).toBe('C');
    expect(env.LVM_SUPPRESS_FD_WARNINGS).toBe('1');
    expect(env.KEEP).toBe('yes');
    expect(env.PATH).toBe('/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin');
  });

  it('merges per-call env over the defaults and can remove a variable', async () => {
    const r = new LocalCommandRunner({ env: { PATH: '/usr/bin:/bin', DROP: 'x' } });
    const res = await r.run('/usr/bin/env', [], { env: { EXTRA: 'a b', DROP: undefined } });
    const lines = res.stdout.trim().split('\n');
    expect(lines).toContain('EXTRA=a b');
    expect(lines.some((l) => l.startsWith('DROP='))).toBe(false);
    expect(lines).toContain('LC_ALL=C');
  });

  it('passes input on stdin, and /dev/null without it', async () => {
    expect((await runner.run('/bin/cat', [], { input: 'line 1\nline 2\n' })).stdout).toBe('line 1\nline 2\n');
    expect((await runner.run('/bin/cat', [], { input: Buffer.from([0x68, 0x69]) })).stdout).toBe('hi');
    expect((await runner.run('/bin/cat', [])).stdout).toBe('');
  });

  it('ignores a child that exits without reading its input', async () => {
    const res = await runner.run('/bin/true', [], { input: 'x'.repeat(1 << 20) });
    expect(res.exitCode).toBe(0);
  });

  it('keeps multi-byte characters split across chunks intact', async () => {
    const text = 'é€😀'.repeat(30000);
    const res = await runner.run('/bin/cat', [], { input: text });
    expect(res.stdout).toBe(text);
  });

  it('kills the child and rejects with AbortError when the signal aborts', async () => {
    const marker = `${process.pid}7.25`;
    const ac = new AbortController();
    const p = runner.run('/bin/sleep', [marker], { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('user pressed Ctrl-C')), 100);
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortError);
    expect(isAbortError(err)).toBe(true);
    expect((err as AbortError).code).toBe('ABORT_ERR');
    expect((err as Error).message).toContain('/bin/sleep');
    expect(((err as Error).cause as Error).message).toBe('user pressed Ctrl-C');
    expect(processesWith(marker)).toEqual([]);
  });

  it('rejects at once, starting nothing, when the signal is already aborted', async () => {
    const marker = `${process.pid}8.25`;
    const err = await runner.run('/bin/sleep', [marker], { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isAbortError(err)).toBe(true);
    expect(processesWith(marker)).toEqual([]);
  });

  it('kills the child after timeoutMs and rejects with a clear CommandTimeoutError', async () => {
    const marker = `${process.pid}9.25`;
    const err = await runner.run('/bin/sleep', [marker], { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandTimeoutError);
    const t = err as CommandTimeoutError;
    expect(t.code).toBe('KVMBAK_COMMAND_TIMEOUT');
    expect(t.command).toBe('/bin/sleep');
    expect(t.args).toEqual([marker]);
    expect(t.timeoutMs).toBe(100);
    expect(t.message).toContain(`/bin/sleep ${marker} did not finish within 100 ms and was killed`);
    expect(processesWith(marker)).toEqual([]);
  });

  it('keeps what the child printed before the timeout', async () => {
    const err = await runner.run('/bin/sh', ['-c', 'echo started; echo warn >&2; exec sleep 30'], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandTimeoutError);
    expect((err as CommandTimeoutError).stdout).toBe('started\n');
    expect((err as CommandTimeoutError).stderr).toBe('warn\n');
  });

  it('sends SIGKILL after the grace period when the child ignores SIGTERM', async () => {
    const marker = `${process.pid}10.25`;
    const r = new LocalCommandRunner({ killGraceMs: 100 });
    // `trap "" TERM` makes SIGTERM ignored, and an ignored signal stays ignored across exec.
    const err = await r.run('/bin/sh', ['-c', `trap "" TERM; exec sleep ${marker}`], { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandTimeoutError);
    expect(processesWith(marker)).toEqual([]);
  });

  it('does not wait for grandchildren that keep the pipes open after an abort', async () => {
    const marker = `${process.pid}11.25`;
    const ac = new AbortController();
    // The shell starts a background sleep holding stdout, then waits; SIGTERM ends the shell.
    const p = runner.run('/bin/sh', ['-c', `sleep ${marker} & wait`], { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    expect(isAbortError(await p.catch((e: unknown) => e))).toBe(true);
    // The orphaned sleep is not ours to kill, but we must not have waited for it.
    for (const line of processesWith(marker)) process.kill(Number(line.split(':')[0]), 'SIGKILL');
  });

  it('does not wait for grandchildren that keep the pipes open after a timeout', async () => {
    const marker = `${process.pid}12.25`;
    // The grandchild would hold the pipes past the test's own time limit.
    const err = await runner.run('/bin/sh', ['-c', `sleep ${marker} & wait`], { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandTimeoutError);
    for (const line of processesWith(marker)) process.kill(Number(line.split(':')[0]), 'SIGKILL');
  });

  it('names the program and its apt package when it does not exist', async () => {
    const err = await runner.run('lvs', ['--version'], { env: { PATH: '/nonexistent' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandNotFoundError);
    const e = err as CommandNotFoundError;
    expect(isKvmbakError(e)).toBe(true);
    expect(e.code).toBe('KVMBAK_COMMAND_NOT_FOUND');
    expect(e.command).toBe('lvs');
    expect(e.aptPackage).toBe('lvm2');
    expect(e.message).toBe('lvs was not found in PATH (/nonexistent): install the lvm2 package (apt-get install lvm2)');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('says so for an absolute path that does not exist, and for an unknown program', async () => {
    const a = await runner.run('/nonexistent/lvcreate', []).catch((e: unknown) => e);
    expect((a as Error).message).toBe('/nonexistent/lvcreate does not exist: install the lvm2 package (apt-get install lvm2)');
    const b = await runner.run('kvmbak-no-such-program', []).catch((e: unknown) => e);
    expect(b).toBeInstanceOf(CommandNotFoundError);
    expect((b as Error).message).toMatch(
      /^kvmbak-no-such-program was not found in PATH \(.*\): install the program that provides kvmbak-no-such-program or fix PATH$/,
    );
  });

  it('kills a child that prints more than maxOutputBytes', async () => {
    const r = new LocalCommandRunner({ maxOutputBytes: 4096 });
    const err = await r.run('/usr/bin/head', ['-c', '1000000', '/dev/zero']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandOutputTooLargeError);
    expect((err as CommandOutputTooLargeError).stream).toBe('stdout');
  });

  it('rejects bad arguments with ConfigError before starting anything', async () => {
    await expect(runner.run('', [])).rejects.toBeInstanceOf(ConfigError);
    await expect(runner.run('/bin/echo', ['a\0b'])).rejects.toBeInstanceOf(ConfigError);
    await expect(runner.run('/bin/echo', [], { timeoutMs: -1 })).rejects.toBeInstanceOf(ConfigError);
    expect(() => new LocalCommandRunner({ killGraceMs: 1.5 })).toThrow(ConfigError);
  });
});

describe('formatCommand', () => {
  it('quotes only what needs quoting, for display', () => {
    expect(formatCommand('lvs', ['-o', 'a,b', '--', 'vg/lv'])).toBe('lvs -o a,b -- vg/lv');
    expect(formatCommand('stat', ['--printf', '%F\n', ''])).toBe('stat --printf "%F\\n" ""');
  });
});
