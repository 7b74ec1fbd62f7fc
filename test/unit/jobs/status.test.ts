import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LAST_RUN_DIR, backupStatus, readLastRun, renderMetrics, writeLastRun, writeMetricsFile } from '../../../src/jobs/index.js';

let dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
});
const tmp = async (): Promise<string> => {
  const d = await mkdtemp(join(tmpdir(), 'kvmbak-status-'));
  dirs.push(d);
  return d;
};

const run = (domain: string, ok: boolean, finishedAt: string) => ({
  domain,
  startedAt: finishedAt,
  finishedAt,
  ok,
  ...(ok ? { setPath: '/x' } : { error: { message: 'it broke' } }),
  durationSeconds: 12.5,
  bytesRead: 1000,
  bytesWritten: 400,
  downtimeSeconds: ok ? 1.25 : null,
  readBytesPerSecond: 80,
});

describe('last-run records', () => {
  it('are written atomically with 0600 in a 0700 folder, and keep the last success across failures', async () => {
    const dest = await tmp();
    await writeLastRun(dest, run('web01', true, '2026-12-01T02:00:00.000Z'));
    const failed = await writeLastRun(dest, run('web01', false, '2026-12-02T02:00:00.000Z'));
    expect(failed.lastSuccessAt).toBe('2026-12-01T02:00:00.000Z');
    expect((await stat(join(dest, LAST_RUN_DIR))).mode & 0o777).toBe(0o700);
    expect((await stat(join(dest, LAST_RUN_DIR, 'web01.json'))).mode & 0o777).toBe(0o600);
    expect(await readLastRun(dest, 'web01')).toEqual(failed);
    expect(await readLastRun(dest, 'other')).toBeNull();
  });
});

describe('backupStatus', () => {
  it('fails a domain whose last run failed, or whose newest complete set is older than maxAge', async () => {
    const dest = await tmp();
    await mkdir(join(dest, 'db01'));
    await writeLastRun(dest, run('web01', false, '2026-12-02T02:00:00.000Z'));
    const r = await backupStatus(dest, { maxAgeSeconds: 3600, now: new Date('2026-12-02T03:00:00Z') });
    expect(r.ok).toBe(false);
    expect(r.domains.map((d) => [d.domain, d.failed, d.stale, d.problems])).toEqual([
      ['web01', true, true, ['last run failed at 2026-12-02T02:00:00.000Z: it broke', 'no complete backup set']],
    ]);
    await writeLastRun(dest, run('web01', true, '2026-12-02T04:00:00.000Z'));
    const again = await backupStatus(dest, { now: new Date('2026-12-02T05:00:00Z') });
    expect(again.ok).toBe(true);
  });
});

describe('metrics', () => {
  it('renders one gauge per figure and domain, with escaped labels; writes the file readable by the exporter', async () => {
    const dir = await tmp();
    const a = {
      dest: '/b',
      run: { format: 'kvmbak-last-run/1' as const, ...run('web"01', true, '2026-12-01T02:00:00.000Z'), lastSuccessAt: '2026-12-01T02:00:00.000Z' },
    };
    const b = { dest: '/b', run: { format: 'kvmbak-last-run/1' as const, ...run('db01', false, '2026-12-01T02:00:00.000Z'), lastSuccessAt: null } };
    const text = renderMetrics([a, b]);
    expect(text).toContain(
      '# TYPE kvmbak_last_run_success gauge\nkvmbak_last_run_success{domain="web\\"01",dest="/b"} 1\nkvmbak_last_run_success{domain="db01",dest="/b"} 0\n',
    );
    expect(text).toContain(`kvmbak_last_success_timestamp_seconds{domain="web\\"01",dest="/b"} ${Date.parse('2026-12-01T02:00:00.000Z') / 1000}\n`);
    expect(text).not.toContain('kvmbak_last_success_timestamp_seconds{domain="db01"');
    expect(text).toContain('kvmbak_last_run_downtime_seconds{domain="web\\"01",dest="/b"} 1.25\n');
    expect(text).toContain('kvmbak_last_run_read_bytes{domain="db01",dest="/b"} 1000\n');
    const file = join(dir, 'kvmbak.prom');
    await writeMetricsFile(file, [a]);
    expect(await readFile(file, 'utf8')).toBe(renderMetrics([a]));
    expect((await stat(file)).mode & 0o777).toBe(0o644);
  });
});
