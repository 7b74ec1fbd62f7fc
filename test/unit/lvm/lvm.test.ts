import { describe, expect, it } from 'vitest';
import { AbortError, ConfigError, KvmbakError, LvmCommandError, isAbortError, isLvmCommandError } from '../../../src/errors.js';
import { CommandNotFoundError, LocalCommandRunner } from '../../../src/exec/index.js';
import { KVMBAK_TAG, Lvm, LvmErrorCode } from '../../../src/lvm/index.js';
import { ScriptedRunner, fixture, labVg, lvsArgv, ok, record, replay, vgsArgv, without, type Step } from './helpers.js';

const MiB = 1024 * 1024;
const NODM = 'kvmbak-nodm-vg';
const STAT = ['stat', '-L', '--printf', '%F\n%t:%T\n', '--'];

function setup(steps: Step[]): { lvm: Lvm; runner: ScriptedRunner } {
  const runner = new ScriptedRunner(steps);
  return { lvm: new Lvm(runner), runner };
}

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the call to fail');
}

/** A step replaying a recorded run: the argv Lvm builds must equal the one recorded. */
function recorded(name: string): Step {
  const rec = record(name);
  return { argv: rec.argv, reply: replay(rec) };
}

describe('Lvm construction and command environment', () => {
  it('uses a LocalCommandRunner by default', () => {
    expect(new Lvm().runner).toBeInstanceOf(LocalCommandRunner);
  });

  it('runs lvm2 with LC_ALL=C, LVM_SUPPRESS_FD_WARNINGS=1, a time budget and the caller signal', async () => {
    const { lvm, runner } = setup([{ argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) }]);
    const ac = new AbortController();
    await lvm.list({ vg: NODM, signal: ac.signal });
    expect(runner.calls[0].options).toEqual({
      signal: ac.signal,
      timeoutMs: 60_000,
      env: { LC_ALL: 'C', LVM_SUPPRESS_FD_WARNINGS: '1' },
    });
  });

  it('takes time budgets from options and per call', async () => {
    const runner = new ScriptedRunner([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
    ]);
    const lvm = new Lvm(runner, { reportTimeoutMs: 5000 });
    await lvm.list({ vg: NODM });
    await lvm.list({ vg: NODM, timeoutMs: 7 });
    expect(runner.calls.map((c) => c.options?.timeoutMs)).toEqual([5000, 7]);
    expect(() => new Lvm(runner, { changeTimeoutMs: -5 })).toThrow(ConfigError);
  });
});

describe('Lvm.resolve', () => {
  it('resolves /dev/VG/LV with one lvs call (names with dashes)', async () => {
    const { lvm, runner } = setup([{ argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) }]);
    const lv = await lvm.resolve('/dev/kvmbak-nodm-vg/web-01-disk');
    expect(lv).toMatchObject({
      vg: NODM,
      lv: 'web-01-disk',
      path: '/dev/kvmbak-nodm-vg/web-01-disk',
      size: 32 * MiB,
      thin: false,
      pool: null,
      origin: null,
      tags: ['vm-web-01'],
      active: false,
    });
    expect(lv.uuid).toHaveLength(38);
    expect(lv.attr).toBe('owi-XXs---');
    expect(runner.done).toBe(true);
  });

  it('resolves /dev/mapper/VG-LV, undoing the -- escape of dashes', async () => {
    const { lvm } = setup([{ argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) }]);
    const lv = await lvm.resolve('/dev/mapper/kvmbak--nodm--vg-thin--disk--kvmbak--snap');
    expect(lv).toMatchObject({ vg: NODM, lv: 'thin-disk-kvmbak-snap', thin: true, pool: 'thin-pool', origin: 'thin-disk' });
  });

  it('resolves a symlink (e.g. /dev/disk/by-id/dm-name-…) by the device number stat reports', async () => {
    const stat = record('stat-origin');
    const link = `/dev/disk/by-id/dm-name-${labVg()}-kvmbak--fx--web--01`;
    const { lvm, runner } = setup([
      { argv: lvsArgv(), reply: ok(fixture('lvs-all')) },
      { argv: [...STAT, link], reply: replay(stat) },
    ]);
    const lv = await lvm.resolve(link);
    expect(lv).toMatchObject({ vg: labVg(), lv: 'kvmbak-fx-web-01', active: true });
    expect(runner.done).toBe(true);
  });

  it('resolves the /dev/dm-N node itself', async () => {
    const stat = record('stat-origin');
    const node = stat.argv[stat.argv.length - 1];
    const { lvm } = setup([
      { argv: lvsArgv(), reply: ok(fixture('lvs-all')) },
      { argv: stat.argv, reply: replay(stat) },
    ]);
    expect(node).toMatch(/^\/dev\/dm-\d+$/);
    expect((await lvm.resolve(node)).lv).toBe('kvmbak-fx-web-01');
  });

  it('says clearly when a block device is not an LV', async () => {
    const stat = record('nodm-stat-loop');
    const { lvm } = setup([
      { argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) },
      { argv: stat.argv, reply: replay(stat) },
    ]);
    const err = await failure(lvm.resolve('/dev/loop0'));
    expect(err).toBeInstanceOf(KvmbakError);
    expect((err as KvmbakError).code).toBe(LvmErrorCode.NotAnLv);
    expect(err.message).toBe(
      '/dev/loop0 (block device 7:0) is not an LVM logical volume: kvmbak backs up disks that are LVs; exclude this disk or move it to LVM',
    );
  });

  it('says clearly when the path is a regular file', async () => {
    const stat = record('nodm-stat-file');
    const { lvm } = setup([
      { argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) },
      { argv: stat.argv, reply: replay(stat) },
    ]);
    const err = await failure(lvm.resolve('/etc/hostname'));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.NotAnLv);
    expect(err.message).toMatch(/^\/etc\/hostname is a regular file, not a block device: .*exclude this disk/);
  });

  it('says clearly when the path does not exist (e.g. /dev/VG/LV of an unknown LV)', async () => {
    const stat = record('nodm-stat-missing');
    const { lvm } = setup([
      { argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) },
      { argv: stat.argv, reply: replay(stat) },
    ]);
    const err = await failure(lvm.resolve('/dev/kvmbak-nodm-vg/not-there'));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.PathNotFound);
    expect(err.message).toMatch(/^\/dev\/kvmbak-nodm-vg\/not-there does not exist/);
  });

  it('rejects a relative or malformed path before running anything', async () => {
    const { lvm, runner } = setup([]);
    for (const bad of ['vg/lv', '', 'dev/x', '/dev/a\0b']) {
      expect(await failure(lvm.resolve(bad))).toBeInstanceOf(ConfigError);
    }
    expect(runner.calls).toEqual([]);
  });

  it('turns a failing lvs into an LvmCommandError with command, args, exit code and stderr', async () => {
    const rec = record('nodm-lvs-missing-lv');
    const { lvm } = setup([{ argv: lvsArgv(), reply: replay(rec) }]);
    const err = await failure(lvm.resolve('/dev/vg/lv'));
    expect(err).toBeInstanceOf(LvmCommandError);
    const e = err as LvmCommandError;
    expect(e.command).toBe('lvs');
    expect(e.args).toEqual(lvsArgv().slice(1));
    expect(e.exitCode).toBe(5);
    expect(e.stderr).toBe(rec.stderr);
    expect(e.shortMessage).toBe('Failed to find logical volume "kvmbak-nodm-vg/no-such-lv"');
    expect(e.message).toBe('lvs failed (exit code 5): Failed to find logical volume "kvmbak-nodm-vg/no-such-lv"');
  });

  it('passes on a missing lvm2 installation as CommandNotFoundError', async () => {
    const { lvm } = setup([{ argv: lvsArgv(), reply: new CommandNotFoundError('lvs', '/usr/bin:/bin') }]);
    const err = await failure(lvm.resolve('/dev/vg/lv'));
    expect(err).toBeInstanceOf(CommandNotFoundError);
    expect(err.message).toContain('apt-get install lvm2');
  });
});

describe('Lvm.vgInfo', () => {
  it('reads size, free space and extent size with vgs', async () => {
    const { lvm } = setup([{ argv: vgsArgv(NODM), reply: ok(fixture('nodm-vgs')) }]);
    expect(await lvm.vgInfo(NODM)).toMatchObject({ name: NODM, size: 252 * MiB, free: 164 * MiB, extentSize: 4 * MiB });
  });

  it('turns "Volume group not found" into a clear error keeping the lvm2 error as cause', async () => {
    const rec = record('nodm-vgs-missing-vg');
    const { lvm } = setup([{ argv: rec.argv, reply: replay(rec) }]);
    const err = await failure(lvm.vgInfo('kvmbak-no-such-vg'));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.VgNotFound);
    expect(err.message).toBe('Volume group kvmbak-no-such-vg does not exist on this host: check the name (vgs lists the volume groups)');
    expect(isLvmCommandError(err.cause)).toBe(true);
  });

  it('rejects a bad VG name without running vgs', async () => {
    const { lvm, runner } = setup([]);
    for (const bad of ['-x', 'a b', '..', 'vg/lv']) expect(await failure(lvm.vgInfo(bad))).toBeInstanceOf(ConfigError);
    expect(runner.calls).toEqual([]);
  });
});

describe('Lvm.list', () => {
  it('lists LVs carrying a tag with lvs @tag', async () => {
    const { lvm } = setup([{ argv: lvsArgv('@kvmbak'), reply: ok(fixture('nodm-lvs-tag')) }]);
    const lvs = await lvm.list({ tag: 'kvmbak' });
    expect(lvs.map((l) => l.lv).sort()).toEqual(['plain-lv', 'thin-disk-kvmbak-snap', 'web-01-disk-kvmbak-snap']);
  });

  it('drops LVs that only their VG’s tag matched (lvs @tag lists every LV of a tagged VG)', async () => {
    const { lvm } = setup([{ argv: lvsArgv('@kvmbak-fx-vgtag'), reply: ok(fixture('nodm-lvs-vgtag')) }]);
    expect(await lvm.list({ tag: 'kvmbak-fx-vgtag' })).toEqual([]);
  });

  it('lists the LVs of a run tag in the lab', async () => {
    const { lvm } = setup([{ argv: lvsArgv('@kvmbak-run-fx'), reply: ok(fixture('lvs-tag')) }]);
    const lvs = await lvm.list({ tag: 'kvmbak-run-fx', vg: labVg() });
    expect(lvs.map((l) => [l.lv, l.snapshot]).sort()).toEqual([
      ['kvmbak-fx-db-02-snap', 'thin'],
      ['kvmbak-fx-web-01-snap', 'classic'],
    ]);
  });

  it('lists a VG, or everything', async () => {
    const { lvm } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(), reply: ok(fixture('nodm-lvs-all')) },
    ]);
    expect(await lvm.list({ vg: NODM })).toHaveLength(6);
    expect((await lvm.list()).length).toBeGreaterThanOrEqual(6);
  });

  it('rejects a bad tag without running lvs', async () => {
    const { lvm, runner } = setup([]);
    expect(await failure(lvm.list({ tag: 'a b' }))).toBeInstanceOf(ConfigError);
    expect(await failure(lvm.list({ tag: '@kvmbak' }))).toBeInstanceOf(ConfigError);
    expect(runner.calls).toEqual([]);
  });
});

describe('Lvm.createSnapshot', () => {
  it('makes a classic snapshot of a thick origin: lvcreate -s -L SIZEb, tagged kvmbak + run tag', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
      recorded('lvcreate-snapshot-classic'),
      { argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) },
    ]);
    const snap = await lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'kvmbak-fx-web-01-snap', size: 16 * MiB, tags: ['kvmbak-run-fx'] });
    expect(runner.calls[1].argv).toEqual([
      'lvcreate',
      '-s',
      '-L',
      '16777216b',
      '-n',
      'kvmbak-fx-web-01-snap',
      '--addtag',
      'kvmbak',
      '--addtag',
      'kvmbak-run-fx',
      '--',
      `${vg}/kvmbak-fx-web-01`,
    ]);
    expect(runner.calls[1].options?.timeoutMs).toBe(300_000);
    expect(snap).toMatchObject({ lv: 'kvmbak-fx-web-01-snap', snapshot: 'classic', active: true, origin: 'kvmbak-fx-web-01', size: 16 * MiB });
    expect(snap.tags).toEqual(['kvmbak', 'kvmbak-run-fx']);
    expect(runner.done).toBe(true);
  });

  it('makes a thin snapshot of a thin origin: lvcreate -s -K, no size', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-thin-created', 'kvmbak-fx-db-02-snap')) },
      recorded('lvcreate-snapshot-thin'),
      { argv: lvsArgv(vg), reply: ok(fixture('lvs-thin-created')) },
      // Only when lvcreate left it inactive (activation skip): lvchange -ay -K, then lvs again.
      ...(JSON.parse(fixture('lvs-thin-created')).report[0].lv.find((r: { lv_name: string }) => r.lv_name === 'kvmbak-fx-db-02-snap')
        .lv_active_locally === '1'
        ? []
        : [
            { argv: ['lvchange', '-ay', '-K', '--', `${vg}/kvmbak-fx-db-02-snap`], reply: ok() },
            { argv: lvsArgv(vg), reply: ok(fixture('lvs-thin')) },
          ]),
    ]);
    const snap = await lvm.createSnapshot({ vg, lv: 'kvmbak-fx-db-02' }, { name: 'kvmbak-fx-db-02-snap', size: 16 * MiB, tags: ['kvmbak-run-fx'] });
    expect(runner.calls[1].argv).toEqual([
      'lvcreate',
      '-s',
      '-K',
      '-n',
      'kvmbak-fx-db-02-snap',
      '--addtag',
      'kvmbak',
      '--addtag',
      'kvmbak-run-fx',
      '--',
      `${vg}/kvmbak-fx-db-02`,
    ]);
    expect(snap).toMatchObject({ snapshot: 'thin', thin: true, active: true, pool: 'kvmbak-fx-pool', origin: 'kvmbak-fx-db-02' });
    expect(runner.done).toBe(true);
  });

  it('activates a thin snapshot lvcreate left inactive, and removes it when it stays inactive', async () => {
    // Real metadata of an inactive thin snapshot (activation-skip flag) from the host without device-mapper.
    const target = `${NODM}/thin-disk-kvmbak-snap`;
    const { lvm, runner } = setup([
      { argv: lvsArgv(NODM), reply: ok(without('nodm-lvs-vg', 'thin-disk-kvmbak-snap')) },
      {
        argv: [
          'lvcreate',
          '-s',
          '-K',
          '-n',
          'thin-disk-kvmbak-snap',
          '--addtag',
          'kvmbak',
          '--addtag',
          'kvmbak-run-20261126T031500Z',
          '--',
          `${NODM}/thin-disk`,
        ],
        reply: ok(),
      },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: ['lvchange', '-ay', '-K', '--', target], reply: ok() },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      // cleanup: still there, a tagged snapshot → removed
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: ['lvremove', '-y', '--', target], reply: ok() },
    ]);
    const err = await failure(lvm.createSnapshot(`${NODM}/thin-disk`, { name: 'thin-disk-kvmbak-snap', tags: ['kvmbak-run-20261126T031500Z'] }));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.Unexpected);
    expect(err.message).toMatch(/not an active, tagged snapshot \(lv_attr Vwi-XXtz-k/);
    expect(runner.done).toBe(true);
  });

  it('passes on lvcreate failing (no room) as LvmCommandError and leaves nothing behind', async () => {
    const vg = labVg();
    const nospace = record('lvcreate-nospace');
    const args = ['-s', '-L', `${1024 * MiB}b`, '-n', 'kvmbak-fx-web-01-snap', '--addtag', 'kvmbak', '--', `${vg}/kvmbak-fx-web-01`];
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
      { argv: ['lvcreate', ...args], reply: replay(nospace) },
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
    ]);
    const err = await failure(lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'kvmbak-fx-web-01-snap', size: 1024 * MiB }));
    expect(err).toBeInstanceOf(LvmCommandError);
    const e = err as LvmCommandError;
    expect(e.command).toBe('lvcreate');
    expect(e.args).toEqual(args);
    expect(e.exitCode).toBe(5);
    expect(e.stderr).toBe(nospace.stderr);
    expect(e.message).toMatch(/^lvcreate failed \(exit code 5\): Volume group ".*" has insufficient free space/);
    expect(runner.done).toBe(true);
  });

  it('removes the snapshot when aborted during lvcreate, with a cleanup that is not itself cancelled', async () => {
    const vg = labVg();
    const ac = new AbortController();
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
      { argv: record('lvcreate-snapshot-classic').argv, reply: new AbortError('lvcreate was aborted') },
      { argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) },
      { argv: ['lvremove', '-y', '--', `${vg}/kvmbak-fx-web-01-snap`], reply: ok() },
    ]);
    const err = await failure(
      lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'kvmbak-fx-web-01-snap', size: 16 * MiB, tags: ['kvmbak-run-fx'], signal: ac.signal }),
    );
    expect(isAbortError(err)).toBe(true);
    expect(runner.calls[1].options?.signal).toBe(ac.signal);
    expect(runner.calls[2].options?.signal).toBeUndefined();
    expect(runner.calls[3].options?.signal).toBeUndefined();
    expect(runner.done).toBe(true);
  });

  it('refuses a name that exists, without running lvcreate', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([{ argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) }]);
    const err = await failure(lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'kvmbak-fx-web-01-snap', size: MiB }));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.LvExists);
    expect(runner.done).toBe(true);
  });

  it('needs a size for a classic snapshot, and an existing origin', async () => {
    const vg = labVg();
    const { lvm } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
      { argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) },
      { argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) },
    ]);
    const noSize = await failure(lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'kvmbak-fx-web-01-snap' }));
    expect(noSize).toBeInstanceOf(ConfigError);
    expect((noSize as ConfigError).option).toBe('size');
    const missing = await failure(lvm.createSnapshot(`${vg}/nope`, { name: 'nope-snap', size: MiB }));
    expect((missing as KvmbakError).code).toBe(LvmErrorCode.LvNotFound);
    const thinOfThick = await failure(lvm.createSnapshot(`${vg}/kvmbak-fx-web-01`, { name: 'x-snap', type: 'thin' }));
    expect(thinOfThick).toBeInstanceOf(ConfigError);
  });

  it('validates names, tags and size before running anything', async () => {
    const { lvm, runner } = setup([]);
    const bad: Array<[string, Parameters<Lvm['createSnapshot']>[1]]> = [
      ['vg/lv', { name: 'bad name', size: MiB }],
      ['vg/lv', { name: '-snap', size: MiB }],
      ['vg/lv', { name: 'snapshot1', size: MiB }],
      ['vg/lv', { name: 'x_tmeta', size: MiB }],
      ['vg/lv', { name: 'ok', size: MiB, tags: ['has space'] }],
      ['vg/lv', { name: 'ok', size: MiB, tags: ['-x'] }],
      ['vg/lv', { name: 'ok', size: 0 }],
      ['vg/lv', { name: 'ok', size: 1.5 }],
      ['vg/lv', { name: 'ok', size: MiB, type: 'cow' as never }],
      ['-vg/lv', { name: 'ok', size: MiB }],
      ['vg', { name: 'ok', size: MiB }],
    ];
    for (const [origin, options] of bad) expect(await failure(lvm.createSnapshot(origin, options))).toBeInstanceOf(ConfigError);
    expect(runner.calls).toEqual([]);
  });
});

describe('Lvm.snapshotUsage', () => {
  it('reports a classic snapshot’s COW usage', async () => {
    const vg = labVg();
    const { lvm } = setup([{ argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) }]);
    const usage = await lvm.snapshotUsage(`${vg}/kvmbak-fx-web-01-snap`);
    expect(usage).toMatchObject({ kind: 'classic', invalid: false, full: false, active: true, size: 16 * MiB, pool: null });
    expect(usage.percent).toBeGreaterThan(0);
    expect(usage.percent).toBeLessThan(100);
    expect(usage.usedBytes).toBe(Math.round((16 * MiB * (usage.percent as number)) / 100));
  });

  it('detects an invalidated snapshot instead of reporting it usable', async () => {
    const vg = labVg();
    const { lvm } = setup([{ argv: lvsArgv(vg), reply: ok(fixture('lvs-invalid')) }]);
    const usage = await lvm.snapshotUsage({ vg, lv: 'kvmbak-fx-ovf-snap' });
    expect(usage).toMatchObject({ kind: 'classic', invalid: true, full: true, percent: 100, size: 8 * MiB });
  });

  it('reports a thin snapshot with its pool’s usage', async () => {
    const vg = labVg();
    const { lvm } = setup([{ argv: lvsArgv(vg), reply: ok(fixture('lvs-thin')) }]);
    const usage = await lvm.snapshotUsage(`${vg}/kvmbak-fx-db-02-snap`);
    expect(usage.kind).toBe('thin');
    expect(usage.invalid).toBe(false);
    expect(usage.pool?.name).toBe('kvmbak-fx-pool');
    expect(usage.pool?.dataPercent).toBeGreaterThan(0);
    expect(usage.pool?.metadataPercent).toBeGreaterThan(0);
  });

  it('reports an inactive snapshot with an unknown percentage', async () => {
    const { lvm } = setup([{ argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) }]);
    expect(await lvm.snapshotUsage(`${NODM}/web-01-disk-kvmbak-snap`)).toMatchObject({
      active: false,
      percent: null,
      invalid: false,
      usedBytes: null,
    });
  });

  it('rejects a non-snapshot and a missing LV', async () => {
    const { lvm } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
    ]);
    expect(await failure(lvm.snapshotUsage(`${NODM}/web-01-disk`))).toBeInstanceOf(ConfigError);
    expect(((await failure(lvm.snapshotUsage(`${NODM}/gone`))) as KvmbakError).code).toBe(LvmErrorCode.LvNotFound);
  });
});

describe('Lvm.extend', () => {
  it('grows an LV with lvextend -L +Nb and returns it after', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([recorded('lvextend-snapshot'), { argv: lvsArgv(vg), reply: ok(fixture('lvs-classic-extended')) }]);
    const lv = await lvm.extend(`${vg}/kvmbak-fx-web-01-snap`, 8 * MiB);
    expect(runner.calls[0].argv).toEqual(['lvextend', '-L', '+8388608b', '--', `${vg}/kvmbak-fx-web-01-snap`]);
    expect(lv.size).toBe(24 * MiB);
  });

  it('rejects a size that is not a positive whole number of bytes', async () => {
    const { lvm, runner } = setup([]);
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 60]) expect(await failure(lvm.extend('vg/lv', bad))).toBeInstanceOf(ConfigError);
    expect(runner.calls).toEqual([]);
  });
});

describe('Lvm.deactivate', () => {
  it('runs lvchange -an on the LV (lvm2 prints nothing on success)', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([{ argv: ['lvchange', '-an', '--', `${vg}/kvmbak-fx-db-02-snap`], reply: ok() }]);
    await lvm.deactivate(`${vg}/kvmbak-fx-db-02-snap`);
    expect(runner.done).toBe(true);
  });
});

describe('Lvm.remove', () => {
  it('removes a kvmbak snapshot with lvremove -y after checking it', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([{ argv: lvsArgv(vg), reply: ok(fixture('lvs-classic')) }, recorded('lvremove-snapshot')]);
    expect(await lvm.remove(`${vg}/kvmbak-fx-web-01-snap`)).toBe(true);
    expect(runner.calls[1].argv).toEqual(['lvremove', '-y', '--', `${vg}/kvmbak-fx-web-01-snap`]);
  });

  it('refuses an LV that is not a snapshot, even one tagged kvmbak, without running lvremove', async () => {
    const { lvm, runner } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
    ]);
    const untagged = await failure(lvm.remove(`${NODM}/web-01-disk`));
    expect((untagged as KvmbakError).code).toBe(LvmErrorCode.Refused);
    expect(untagged.message).toBe(
      'Refusing to remove kvmbak-nodm-vg/web-01-disk: it is not a snapshot, so kvmbak did not make it; remove it yourself or pass { force: true }',
    );
    const tagged = await failure(lvm.remove(`${NODM}/plain-lv`));
    expect((tagged as KvmbakError).code).toBe(LvmErrorCode.Refused);
    expect(runner.calls.map((c) => c.argv[0])).toEqual(['lvs', 'lvs']);
  });

  it('refuses a snapshot without the kvmbak tag', async () => {
    const vg = labVg();
    const untagged = without('lvs-classic').replace(/"lv_tags":"kvmbak,kvmbak-run-fx"/, '"lv_tags":""');
    const { lvm } = setup([{ argv: lvsArgv(vg), reply: ok(untagged) }]);
    const err = await failure(lvm.remove(`${vg}/kvmbak-fx-web-01-snap`));
    expect(err.message).toMatch(/it does not carry the "kvmbak" tag/);
  });

  it('removes anything with force', async () => {
    const { lvm, runner } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: ['lvremove', '-y', '--', `${NODM}/web-01-disk`], reply: ok() },
    ]);
    expect(await lvm.remove(`${NODM}/web-01-disk`, { force: true })).toBe(true);
    expect(runner.done).toBe(true);
  });

  it('reports a missing LV, or returns false with missingOk', async () => {
    const { lvm } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
    ]);
    expect(((await failure(lvm.remove(`${NODM}/gone`))) as KvmbakError).code).toBe(LvmErrorCode.LvNotFound);
    expect(await lvm.remove(`${NODM}/gone`, { missingOk: true })).toBe(false);
  });

  it('turns a missing VG into a clear error', async () => {
    const rec = record('nodm-lvs-missing-vg');
    const { lvm } = setup([{ argv: rec.argv, reply: replay(rec) }]);
    const err = await failure(lvm.remove('kvmbak-no-such-vg/x'));
    expect((err as KvmbakError).code).toBe(LvmErrorCode.VgNotFound);
  });
});

describe('Lvm.createVolume', () => {
  it('creates a linear LV for a restore: lvcreate -L Nb -n NAME -y -Wy -Zy', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01', 'kvmbak-fx-web-01-snap')) },
      recorded('lvcreate-volume'),
      { argv: lvsArgv(vg), reply: ok(without('lvs-classic', 'kvmbak-fx-web-01-snap')) },
    ]);
    const lv = await lvm.createVolume(vg, 'kvmbak-fx-web-01', 32 * MiB, { tags: ['vm-web-01'] });
    expect(runner.calls[1].argv).toEqual([
      'lvcreate',
      '-L',
      '33554432b',
      '-n',
      'kvmbak-fx-web-01',
      '-y',
      '-Wy',
      '-Zy',
      '--addtag',
      'vm-web-01',
      '--',
      vg,
    ]);
    expect(lv).toMatchObject({ lv: 'kvmbak-fx-web-01', size: 32 * MiB });
  });

  it('creates a thin LV in a pool: lvcreate -V Nb --thinpool POOL', async () => {
    const vg = labVg();
    const { lvm, runner } = setup([
      { argv: lvsArgv(vg), reply: ok(without('lvs-thin', 'kvmbak-fx-db-02', 'kvmbak-fx-db-02-snap')) },
      recorded('lvcreate-volume-thin'),
      { argv: lvsArgv(vg), reply: ok(without('lvs-thin', 'kvmbak-fx-db-02-snap')) },
    ]);
    const lv = await lvm.createVolume(vg, 'kvmbak-fx-db-02', 32 * MiB, { thinPool: 'kvmbak-fx-pool', tags: ['vm-db-02'] });
    expect(runner.calls[1].argv).toEqual([
      'lvcreate',
      '-V',
      '33554432b',
      '--thinpool',
      'kvmbak-fx-pool',
      '-n',
      'kvmbak-fx-db-02',
      '-y',
      '-Wy',
      '--addtag',
      'vm-db-02',
      '--',
      vg,
    ]);
    expect(lv).toMatchObject({ thin: true, pool: 'kvmbak-fx-pool' });
  });

  it('passes on a failing lvcreate as LvmCommandError (real failure: no device-mapper)', async () => {
    const rec = record('nodm-lvcreate-volume');
    const { lvm } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: rec.argv, reply: replay(rec) },
    ]);
    const err = await failure(lvm.createVolume(NODM, 'restore-disk', 16 * MiB));
    expect(err).toBeInstanceOf(LvmCommandError);
    expect((err as LvmCommandError).exitCode).toBe(3);
    expect((err as LvmCommandError).stderr).toContain('Required device-mapper target(s) not detected');
  });

  it('refuses an existing name and a pool that is not a thin pool', async () => {
    const { lvm, runner } = setup([
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
      { argv: lvsArgv(NODM), reply: ok(fixture('nodm-lvs-vg')) },
    ]);
    expect(((await failure(lvm.createVolume(NODM, 'web-01-disk', MiB))) as KvmbakError).code).toBe(LvmErrorCode.LvExists);
    expect(await failure(lvm.createVolume(NODM, 'new-disk', MiB, { thinPool: 'web-01-disk' }))).toBeInstanceOf(ConfigError);
    expect(runner.calls.every((c) => c.argv[0] === 'lvs')).toBe(true);
  });

  it('validates before running anything', async () => {
    const { lvm, runner } = setup([]);
    expect(await failure(lvm.createVolume('-vg', 'x', MiB))).toBeInstanceOf(ConfigError);
    expect(await failure(lvm.createVolume('vg', 'pvmove1', MiB))).toBeInstanceOf(ConfigError);
    expect(await failure(lvm.createVolume('vg', 'x', 0))).toBeInstanceOf(ConfigError);
    expect(await failure(lvm.createVolume('vg', 'x', MiB, { thinPool: 'a b' }))).toBeInstanceOf(ConfigError);
    expect(await failure(lvm.createVolume('vg', 'x', MiB, { tags: ['a,b'] }))).toBeInstanceOf(ConfigError);
    expect(runner.calls).toEqual([]);
  });
});

it('exports the kvmbak tag', () => {
  expect(KVMBAK_TAG).toBe('kvmbak');
});
