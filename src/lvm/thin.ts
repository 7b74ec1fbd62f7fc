/**
 * A thin pool's device-mapper side, as a thin_delta run needs it (the captures in
 * test/fixtures/thin show every output read here, from lvm2 2.03.16 / thin-provisioning-tools 0.9):
 *
 *     dmsetup message VG-POOL-tpool 0 reserve_metadata_snap     a consistent copy of the pool's metadata
 *     thin_delta -m --thin1 BASE_ID --thin2 NEW_ID /dev/mapper/VG-POOL_tmeta
 *     dmsetup message VG-POOL-tpool 0 release_metadata_snap
 *     dmsetup status VG-POOL-tpool                               its "held metadata root" shows a reserved one
 *
 * Device-mapper names double every dash of the VG and LV names (`vg-a`/`pool-b` →
 * `vg--a-pool--b-tpool`). The pool's data device is the `-tpool` layer while thin volumes use it;
 * its metadata is the hidden sub-LV `POOL_tmeta`. Pure functions only; the commands run in lvm.ts.
 */
import { KvmbakError } from '../errors.js';
import { dmName } from './names.js';

/** The device-mapper names of one thin pool. */
export interface ThinPoolDevices {
  vg: string;
  pool: string;
  /** dm name of the thin-pool target (`dmsetup message`/`status` take it): `VG-POOL-tpool`. */
  tpool: string;
  /** Path of the pool's metadata device (thin_delta reads it): `/dev/mapper/VG-POOL_tmeta`. */
  tmeta: string;
}

/** The device-mapper names of thin pool VG/POOL (dashes doubled as lvm2 does). */
export function thinPoolDevices(vg: string, pool: string): ThinPoolDevices {
  return { vg, pool, tpool: dmName(vg, pool, 'tpool'), tmeta: `/dev/mapper/${dmName(vg, `${pool}_tmeta`)}` };
}

/** `thin_delta` arguments: metadata snapshot (-m), base (--thin1) against new (--thin2), on the metadata device. */
export function thinDeltaArgv(baseThinId: number, newThinId: number, tmeta: string): string[] {
  return ['-m', '--thin1', String(baseThinId), '--thin2', String(newThinId), tmeta];
}

/** `dmsetup status` of a thin-pool target (dm-thin's documented status line). */
export interface ThinPoolStatus {
  transactionId: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  /** Block of the reserved metadata snapshot, or null when none is held. */
  heldMetadataRoot: number | null;
  /** 'rw', 'ro' or 'out_of_data_space'; 'fail' when the pool failed (then the other fields are 0). */
  mode: string;
}

function statusError(line: string, what: string): KvmbakError {
  return new KvmbakError(`dmsetup status of a thin pool: ${what} in ${JSON.stringify(line.trim().slice(0, 120))}`, 'KVMBAK_LVM_UNEXPECTED');
}

/**
 * Parses `dmsetup status VG-POOL-tpool` output:
 * `<start> <len> thin-pool <transaction id> <used meta>/<total meta> <used data>/<total data>
 * <held metadata root> ro|rw|out_of_data_space ...` (or `... thin-pool Fail`).
 */
export function parseThinPoolStatus(stdout: string): ThinPoolStatus {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) throw statusError(stdout, `expected one line, got ${lines.length}`);
  const line = lines[0]!;
  const f = line.trim().split(/\s+/);
  if (f[2] !== 'thin-pool') throw statusError(line, `target ${JSON.stringify(f[2] ?? '')} is not thin-pool`);
  if (f[3] === 'Fail') {
    return {
      transactionId: 0,
      usedMetadataBlocks: 0,
      totalMetadataBlocks: 0,
      usedDataBlocks: 0,
      totalDataBlocks: 0,
      heldMetadataRoot: null,
      mode: 'fail',
    };
  }
  if (f.length < 8) throw statusError(line, 'too few fields');
  const num = (v: string | undefined, what: string): number => {
    if (v === undefined || !/^[0-9]{1,16}$/.test(v)) throw statusError(line, `${what} ${JSON.stringify(v ?? '')} is not a number`);
    return Number(v);
  };
  const pair = (v: string | undefined, what: string): [number, number] => {
    const [a, b, ...rest] = (v ?? '').split('/');
    if (rest.length > 0) throw statusError(line, `${what} ${JSON.stringify(v)} is not USED/TOTAL`);
    return [num(a, what), num(b, what)];
  };
  const [usedMetadataBlocks, totalMetadataBlocks] = pair(f[4], 'metadata usage');
  const [usedDataBlocks, totalDataBlocks] = pair(f[5], 'data usage');
  return {
    transactionId: num(f[3], 'transaction id'),
    usedMetadataBlocks,
    totalMetadataBlocks,
    usedDataBlocks,
    totalDataBlocks,
    heldMetadataRoot: f[6] === '-' ? null : num(f[6], 'held metadata root'),
    mode: f[7]!,
  };
}
