/**
 * The chunks a thin LV changed since the previous run, from its pool's metadata: the previous
 * run's thin snapshot (the base) against this run's, with `thin_delta` on a reserved metadata
 * snapshot of the pool.
 *
 *     journal  metadata-reserved vg/pool        recorded before: a kill -9 from here on is undone
 *     dmsetup message VG-POOL-tpool 0 reserve_metadata_snap                 by `kvmbak recover`
 *     thin_delta -m --thin1 BASE_ID --thin2 NEW_ID /dev/mapper/VG-POOL_tmeta
 *     dmsetup message VG-POOL-tpool 0 release_metadata_snap               in a finally, always
 *     journal  metadata-released vg/pool
 *
 * Any failure is a ThinDeltaError naming the step; the caller reads the whole disk instead (and
 * says so). A held metadata snapshot pins metadata blocks of the pool, so it is never left held
 * on purpose: when the release itself fails, the error says so (`metadataHeld`) and the journal
 * keeps `metadata-reserved` without `metadata-released`, so the caller must leave the journal to
 * `kvmbak recover` (which releases it when `dmsetup status` still shows a held root).
 */
import { KvmbakError, isAbortError, isKvmbakError, isLvmCommandError } from '../errors.js';
import { changedChunks, parseThinDelta } from '../chunks/index.js';
import { type Lvm, LvmErrorCode, type LvRef, type ThinVolume, parseLvRef } from '../lvm/index.js';
import type { Journal } from '../store/index.js';

/** The thin_delta path failed: read the whole disk instead. */
export class ThinDeltaError extends KvmbakError {
  /** The metadata snapshot could not be released: the journal must be left for `kvmbak recover`. */
  readonly metadataHeld: boolean;
  constructor(message: string, metadataHeld: boolean, options: { cause?: unknown } = {}) {
    super(message, 'KVMBAK_THIN_DELTA_FAILED', options);
    this.metadataHeld = metadataHeld;
  }
}
Object.defineProperty(ThinDeltaError.prototype, 'name', { value: 'ThinDeltaError', enumerable: false, configurable: true, writable: true });

export interface ThinChangedChunksInput {
  lvm: Lvm;
  /** The run's journal: the reserve and the release are recorded in it. */
  journal: Journal;
  /** The previous run's thin snapshot of the disk (thin_delta's left side). */
  base: LvRef;
  /** This run's thin snapshot of the same disk (the right side), in the same pool. */
  current: LvRef;
  /** Bytes of the disk: a range reported beyond it means the delta is not this disk's. */
  diskSize: number;
  /** Bytes per chunk (default 4 MiB). */
  chunkSize?: number;
  /** Cancels the reserve and thin_delta (the release still runs). */
  signal?: AbortSignal;
}

export interface ThinChangedChunks {
  /** Indexes of the chunks that differ between base and current, ascending, each once. */
  changed: number[];
  vg: string;
  pool: string;
  baseThinId: number;
  currentThinId: number;
  /** The pool's allocation unit in bytes (a changed chunk may have changed by as little as this). */
  poolBlockBytes: number;
}

/** Time the release may take (it is a single message to the kernel). */
const RELEASE_TIMEOUT_MS = 60_000;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Reserves the metadata snapshot of the pool holding `base` and `current`, runs thin_delta on
 * it, releases it (in a finally, journaled), and maps the changed ranges to chunk indexes.
 * Throws ThinDeltaError (or AbortError when `signal` fired); nothing is left held unless the
 * error's `metadataHeld` says so.
 */
export async function thinChangedChunks(input: ThinChangedChunksInput): Promise<ThinChangedChunks> {
  const { lvm, journal, diskSize, signal } = input;
  const call = signal ? { signal } : {};
  const baseName = parseLvRef(input.base, 'base');
  const currentName = parseLvRef(input.current, 'current');
  let base: ThinVolume;
  let current: ThinVolume;
  try {
    [base, current] = (await lvm.thinVolumes([baseName, currentName], call)) as [ThinVolume, ThinVolume];
  } catch (e) {
    if (isAbortError(e)) throw e;
    throw new ThinDeltaError(`cannot compare ${base_(baseName)} with ${base_(currentName)}: ${message(e)}`, false, { cause: e });
  }
  if (base.vg !== current.vg || base.pool !== current.pool) {
    throw new ThinDeltaError(
      `${base.fullName} (pool ${base.vg}/${base.pool}) and ${current.fullName} (pool ${current.vg}/${current.pool}) are not in the same thin pool: thin_delta compares volumes of one pool`,
      false,
    );
  }
  const { vg, pool } = base;
  const where = `thin pool ${vg}/${pool}`;

  await journal.record({ step: 'metadata-reserved', vg, pool });
  // 'no': the reserve answered that it did nothing; 'unknown': it was cut off (abort, timeout)
  // and may have taken effect; 'yes': held.
  let reserved: 'no' | 'unknown' | 'yes' = 'no';
  let xml: string | undefined;
  let failure: unknown;
  let releaseError: unknown;
  try {
    reserved = 'unknown';
    try {
      await lvm.reserveMetadataSnapshot(vg, pool, call);
    } catch (e) {
      if ((isLvmCommandError(e) && e.exitCode !== null) || (isKvmbakError(e) && e.code === LvmErrorCode.MetadataSnapshotHeld)) reserved = 'no';
      throw e;
    }
    reserved = 'yes';
    xml = await lvm.thinDelta(vg, pool, base.thinId, current.thinId, call);
  } catch (e) {
    failure = e;
  } finally {
    releaseError = await release(lvm, vg, pool, reserved);
  }
  if (releaseError !== undefined) {
    const first = failure === undefined ? '' : `thin_delta failed (${message(failure)}), and `;
    throw new ThinDeltaError(
      `${first}the metadata snapshot of ${where} could not be released (${message(releaseError)}): kvmbak recover releases it`,
      true,
      { cause: releaseError },
    );
  }
  await journal.record({ step: 'metadata-released', vg, pool });
  if (failure !== undefined) {
    if (isAbortError(failure)) throw failure;
    throw new ThinDeltaError(`thin_delta on ${where} failed: ${message(failure)}`, false, { cause: failure });
  }
  try {
    const delta = parseThinDelta(xml!);
    if (delta.left !== base.thinId || delta.right !== current.thinId) {
      throw new KvmbakError(`it compares devices ${delta.left} and ${delta.right}, not ${base.thinId} and ${current.thinId}`, 'KVMBAK_THIN_DELTA');
    }
    const changed = changedChunks(delta, { diskSize, ...(input.chunkSize !== undefined ? { chunkSize: input.chunkSize } : {}) });
    return { changed, vg, pool, baseThinId: base.thinId, currentThinId: current.thinId, poolBlockBytes: delta.dataBlockBytes };
  } catch (e) {
    throw new ThinDeltaError(`cannot use thin_delta's answer for ${base.fullName} → ${current.fullName}: ${message(e)}`, false, { cause: e });
  }
}

function base_(n: { vg: string; lv: string }): string {
  return `${n.vg}/${n.lv}`;
}

/**
 * Releases the pool's metadata snapshot when this run holds it (or may: a reserve cut off is
 * checked against the pool's status first). Never aborted: a held snapshot must not outlive the
 * step. Returns the error instead of throwing it.
 */
async function release(lvm: Lvm, vg: string, pool: string, reserved: 'no' | 'unknown' | 'yes'): Promise<unknown> {
  try {
    if (reserved === 'no') return undefined;
    if (reserved === 'unknown' && (await lvm.thinPoolStatus(vg, pool, { timeoutMs: RELEASE_TIMEOUT_MS })).heldMetadataRoot === null) return undefined;
    await lvm.releaseMetadataSnapshot(vg, pool, { timeoutMs: RELEASE_TIMEOUT_MS });
    return undefined;
  } catch (e) {
    return e;
  }
}
