import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HookError, hookEnvironment, runHook } from '../../../src/jobs/index.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvmbak-hooks-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function script(name: string, body: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, `#!/bin/sh\n${body}\n`);
  await chmod(p, 0o755);
  return p;
}

describe('runHook', () => {
  it('passes the phase as the only argument and the facts as KVMBAK_* variables, no shell; hands over each output line', async () => {
    const hook = await script(
      'ok.sh',
      'echo "args=$# $1"; echo "d=$KVMBAK_DOMAIN m=$KVMBAK_MODE s=$KVMBAK_SET st=$KVMBAK_STATUS e=$KVMBAK_ERROR p=$KVMBAK_PHASE"; echo oops >&2; printf tail',
    );
    const lines: string[] = [];
    await runHook(
      hook,
      'backup-end',
      { domain: 'web 01; rm -rf /', mode: 'save', set: '/b/x', status: 'ok' },
      {
        onOutput: (l, s) => lines.push(`${s}: ${l}`),
      },
    );
    expect(lines.sort()).toEqual(
      ['stdout: args=1 backup-end', 'stdout: d=web 01; rm -rf / m=save s=/b/x st=ok e= p=backup-end', 'stderr: oops', 'stdout: tail'].sort(),
    );
  });

  it("does not leak KVMBAK_* variables of kvmbak's own environment into a phase that has no such fact", () => {
    const env = hookEnvironment('job-start', {}, { PATH: '/bin', KVMBAK_DOMAIN: 'stale' });
    expect(env).toEqual({ PATH: '/bin', KVMBAK_PHASE: 'job-start' });
  });

  it('fails with a HookError on a non-zero exit, a missing file, and at the time limit (killed)', async () => {
    const bad = await script('bad.sh', 'exit 4');
    await expect(runHook(bad, 'pre-hold', {})).rejects.toThrow(`hook ${bad} pre-hold exited with status 4`);
    await expect(runHook(join(dir, 'none'), 'pre-hold', {})).rejects.toThrow(`hook ${join(dir, 'none')} pre-hold: does not exist`);
    const slow = await script('slow.sh', 'sleep 30');
    const t0 = Date.now();
    const e = await runHook(slow, 'job-start', {}, { timeoutSeconds: 0.3 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(HookError);
    expect((e as HookError).timedOut).toBe(true);
    expect((e as HookError).message).toBe(`hook ${slow} job-start did not finish within 0.3 s and was killed`);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
