/**
 * The thin pool primitives of the lvm driver (thin ids, metadata snapshot reserve/release, pool
 * status, thin_delta), against the real runs captured in the lab by
 * test/e2e/guest/capture-thin-delta.sh (test/fixtures/thin): every call must be exactly the
 * captured argv, and every answer is the captured one.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LVM_REPORT_OPTIONS, Lvm, THIN_LV_FIELDS, parseThinPoolStatus, thinDeltaArgv, thinPoolDevices } from '../../../src/lvm/index.js';
import { heldMetadataRoot, thinDeltaArgs } from '../../../src/chunks/index.js';
import { rejection } from '../../support/rejection.js';
import { type RunRecord, ScriptedRunner, replay } from './helpers.js';

const DIR = fileURLToPath(new URL('../../fixtures/thin/', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../e2e/guest/capture-thin-delta.sh', import.meta.url));
const VG = 'vgthincap';

interface PoolInfo {
  pool: string;
  tpool: string;
  tmeta: string;
  snapThinId: number;
  originThinId: number;
}
const info = JSON.parse(readFileSync(`${DIR}info.json`, 'utf8')) as { pools: PoolInfo[] };
const run = (name: string): RunRecord => JSON.parse(readFileSync(`${DIR}${name}`, 'utf8')) as RunRecord;
const text = (name: string): string => readFileSync(`${DIR}${name}`, 'utf8');

/** An Lvm whose runner expects exactly these captured runs, in order, and answers with them. */
function lvmPlaying(...runs: RunRecord[]): { lvm: Lvm; runner: ScriptedRunner } {
  const runner = new ScriptedRunner(runs.map((r) => ({ argv: r.argv, reply: replay(r) })));
  return { lvm: new Lvm(runner), runner };
}

describe('thin pool device names', () => {
  it.each(info.pools)('$pool: the names the capture used', (p) => {
    expect(thinPoolDevices(VG, p.pool)).toEqual({ vg: VG, pool: p.pool, tpool: p.tpool, tmeta: p.tmeta });
    expect(thinDeltaArgv(p.snapThinId, p.originThinId, p.tmeta)).toEqual(thinDeltaArgs(p.snapThinId, p.originThinId, p.tmeta));
  });

  it('dashes in VG and pool names are doubled, as lvm2 names its device-mapper devices', () => {
    expect(thinPoolDevices('vg-a', 'lab-thinpool')).toEqual({
      vg: 'vg-a',
      pool: 'lab-thinpool',
      tpool: 'vg--a-lab--thinpool-tpool',
      tmeta: '/dev/mapper/vg--a-lab--thinpool_tmeta',
    });
  });

  it('the capture script reports the thin ids with the driver’s report options and fields', () => {
    const script = readFileSync(SCRIPT, 'utf8');
    const block = /^# --- Keep equal to src\/lvm\/report\.ts.*\n([\s\S]*?)^# -{20,}$/m.exec(script);
    expect(block).not.toBeNull();
    const out = execFileSync('/bin/bash', ['-c', `${block![1]}\nprintf '%s\\0' "$THIN_LV_FIELDS" "\${REPORT_OPTIONS[@]}"`], { encoding: 'utf8' });
    const [fields, ...options] = out.split('\0').slice(0, -1);
    expect(fields).toBe(THIN_LV_FIELDS.join(','));
    expect(options).toEqual(LVM_REPORT_OPTIONS);
  });
});

describe.each(info.pools)('the lvm driver on thin pool $pool (captured runs)', (p) => {
  it('thinVolumes: the pool and thin id of the base snapshot and the origin', async () => {
    const { lvm, runner } = lvmPlaying(run(`${p.pool}-lvs-thin.run.json`));
    // The captured call asked for the pool too: a thin pool is not a thin volume.
    const err = await rejection(lvm.thinVolumes([`${VG}/${p.pool}base`, `${VG}/${p.pool}disk`, `${VG}/${p.pool}`]));
    expect(err).toMatchObject({
      code: 'KVMBAK_NOT_THIN',
      message: expect.stringContaining(`${VG}/${p.pool} is not a thin volume (segment type thin-pool)`),
    });
    expect(runner.done).toBe(true);

    // The same answer to a call naming only the two thin volumes, in the other order: each row is
    // mapped back to the name asked for.
    const rec = run(`${p.pool}-lvs-thin.run.json`);
    const two = new ScriptedRunner([{ argv: [...rec.argv.slice(0, -3), `${VG}/${p.pool}disk`, `${VG}/${p.pool}base`], reply: replay(rec) }]);
    expect(await new Lvm(two).thinVolumes([`${VG}/${p.pool}disk`, `${VG}/${p.pool}base`])).toEqual([
      { vg: VG, lv: `${p.pool}disk`, fullName: `${VG}/${p.pool}disk`, segtype: 'thin', pool: p.pool, thinId: p.originThinId, active: true },
      { vg: VG, lv: `${p.pool}base`, fullName: `${VG}/${p.pool}base`, segtype: 'thin', pool: p.pool, thinId: p.snapThinId, active: true },
    ]);
  });

  it('reserve, status (held), thin_delta, release, status (released)', async () => {
    const { lvm, runner } = lvmPlaying(
      run(`${p.pool}-reserve.run.json`),
      run(`${p.pool}-status-held.run.json`),
      run(`${p.pool}-delta.run.json`),
      run(`${p.pool}-release.run.json`),
      run(`${p.pool}-status-released.run.json`),
    );
    await lvm.reserveMetadataSnapshot(VG, p.pool);
    const held = await lvm.thinPoolStatus(VG, p.pool);
    const heldLine = run(`${p.pool}-status-held.run.json`).stdout;
    expect(held.heldMetadataRoot).toBe(heldMetadataRoot(heldLine));
    expect(held.heldMetadataRoot).toBeGreaterThan(0);
    expect(held).toMatchObject({ mode: 'rw' });
    expect(held.usedDataBlocks).toBeLessThanOrEqual(held.totalDataBlocks);
    expect(await lvm.thinDelta(VG, p.pool, p.snapThinId, p.originThinId)).toBe(text(`${p.pool}-delta.xml`));
    await lvm.releaseMetadataSnapshot(VG, p.pool);
    expect((await lvm.thinPoolStatus(VG, p.pool)).heldMetadataRoot).toBeNull();
    expect(runner.done).toBe(true);
    // Changing calls get the long budget (thin_delta reads the whole mapping), status the report one.
    expect(runner.calls.map((c) => c.options?.timeoutMs)).toEqual([300_000, 60_000, 300_000, 300_000, 60_000]);
  });

  it('a second reserve while one is held: KVMBAK_METADATA_SNAPSHOT_HELD, saying how to release it', async () => {
    const { lvm } = lvmPlaying(run(`${p.pool}-reserve-again.run.json`));
    const err = await rejection(lvm.reserveMetadataSnapshot(VG, p.pool));
    expect(err).toMatchObject({
      code: 'KVMBAK_METADATA_SNAPSHOT_HELD',
      message: `The metadata snapshot of thin pool ${VG}/${p.pool} is already reserved (by another thin_delta run, or by a run killed while it held it): run kvmbak recover, or when nothing else uses it: dmsetup message ${p.tpool} 0 release_metadata_snap`,
    });
    expect((err as Error).cause).toMatchObject({ code: 'KVMBAK_LVM_COMMAND', command: 'dmsetup' });
  });

  it('release when none is held, status of a missing pool, thin_delta failures: LvmCommandErrors with the tool’s own words', async () => {
    const { lvm } = lvmPlaying(
      run(`${p.pool}-release-again.run.json`),
      { ...run(`${p.pool}-status-missing.run.json`) },
      run(`${p.pool}-delta-nosnap.run.json`),
      run(`${p.pool}-delta-unknown-id.run.json`),
    );
    expect(await rejection(lvm.releaseMetadataSnapshot(VG, p.pool))).toMatchObject({
      code: 'KVMBAK_LVM_COMMAND',
      shortMessage: `device-mapper: message ioctl on ${p.tpool}  failed: Invalid argument`,
    });
    expect(await rejection(lvm.thinPoolStatus(VG, 'nosuchpool'))).toMatchObject({
      code: 'KVMBAK_LVM_COMMAND',
      shortMessage: 'Device does not exist.',
    });
    expect(await rejection(lvm.thinDelta(VG, p.pool, p.snapThinId, p.originThinId))).toMatchObject({
      command: 'thin_delta',
      shortMessage: 'no current metadata snap',
    });
    expect(await rejection(lvm.thinDelta(VG, p.pool, p.snapThinId, 999))).toMatchObject({
      command: 'thin_delta',
      shortMessage: 'Unable to find mapping tree for snap2 (999)',
    });
  });
});

describe('checked before anything runs', () => {
  it('bad pool names and thin ids are ConfigErrors; nothing is run', async () => {
    const runner = new ScriptedRunner([]);
    const lvm = new Lvm(runner);
    expect(await rejection(lvm.reserveMetadataSnapshot(VG, 'bad name'))).toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'pool' });
    expect(await rejection(lvm.thinDelta(VG, 'pool64k', -1, 1))).toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'baseThinId' });
    expect(await rejection(lvm.thinDelta(VG, 'pool64k', 1, 1.5))).toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'newThinId' });
    expect(runner.calls).toEqual([]);
  });

  it('a status line that is not a thin pool’s is refused', () => {
    expect(() => parseThinPoolStatus('0 131072 linear \n')).toThrow(/target "linear" is not thin-pool/);
    expect(() => parseThinPoolStatus('')).toThrow(/expected one line, got 0/);
    expect(parseThinPoolStatus('0 393216 thin-pool Fail\n')).toMatchObject({ mode: 'fail', heldMetadataRoot: null });
  });
});
