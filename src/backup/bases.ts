/**
 * The thin snapshots kept as thin_delta bases (see keepBases in backup.ts): the one check that an
 * LV is still the base a set recorded before it is removed, shared by the backup (the previous
 * set's base, after the commit) and by prune (the bases only deleted sets recorded).
 */
import { KVMBAK_BASE_TAG, type LvmCallOptions, type Lvm } from '../lvm/index.js';

export interface RecordedBase {
  vg: string;
  lv: string;
  thinId: number;
}

/**
 * Removes `base` when it is still what the set recorded: tagged `kvmbak-base`, with the recorded
 * thin id (an LV of the same name made since is never touched). Returns its VG/LV when it was
 * removed, null when there was nothing of ours to remove. `force`: a base whose origin is gone is no
 * longer a snapshot for lvm2; the tag and the thin id say it is ours.
 */
export async function removeBaseIfOurs(lvm: Lvm, base: RecordedBase, call: LvmCallOptions = {}): Promise<string | null> {
  const lv = await lvm.find({ vg: base.vg, lv: base.lv }, call);
  if (lv === null || !lv.tags.includes(KVMBAK_BASE_TAG)) return null;
  if ((await lvm.thinVolume(lv, call)).thinId !== base.thinId) return null;
  return (await lvm.remove(lv, { ...call, missingOk: true, force: true })) ? lv.fullName : null;
}
