/**
 * Where each disk of a set is restored: its original VG/LV by default, the
 * same LV name in another VG with `vg`, or any LV per disk with `map`.
 */
import { ConfigError } from '../errors.js';
import { parseLvRef, validateVgName } from '../lvm/index.js';
import type { ManifestDisk, ManifestSkipped } from '../manifest/index.js';

/** The LV one disk goes to, and which option chose it. */
export interface DiskTarget {
  target: string;
  vg: string;
  lv: string;
  from: 'original' | 'vg' | 'map';
}

/**
 * Parses `--map` values, each `TARGET=LV` with LV as /dev/VG/LV or VG/LV
 * ('vda=/dev/vg1/web-root'). Throws ConfigError (option 'map') for a
 * malformed entry or a target given twice.
 */
export function parseDiskMap(entries: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of entries) {
    if (typeof entry !== 'string') throw new ConfigError(`\`map\` takes TARGET=/dev/VG/LV, got ${String(entry)}`, 'map');
    const eq = entry.indexOf('=');
    const target = eq < 0 ? '' : entry.slice(0, eq).trim();
    const lv = eq < 0 ? '' : entry.slice(eq + 1).trim();
    if (eq < 0 || target === '' || lv === '') {
      throw new ConfigError(`\`map\` ${JSON.stringify(entry)}: write it as TARGET=/dev/VG/LV, e.g. vda=/dev/vg1/web-root`, 'map');
    }
    if (Object.hasOwn(out, target)) throw new ConfigError(`\`map\` names disk ${target} twice; give one LV per disk`, 'map');
    out[target] = lv;
  }
  return out;
}

/** `/dev/VG/LV` or `VG/LV` → VG and LV; anything else is a ConfigError naming the disk. */
export function parseLvTarget(value: string, target: string): { vg: string; lv: string } {
  const bad = (why: string): ConfigError => new ConfigError(`\`map\` ${target}=${value}: ${why}; give the LV as /dev/VG/LV or VG/LV`, 'map');
  if (typeof value !== 'string' || value === '') throw bad('no LV given');
  let rest = value;
  if (value.startsWith('/')) {
    if (value.startsWith('/dev/mapper/')) throw bad('device-mapper names are ambiguous');
    if (!value.startsWith('/dev/')) throw bad('not a /dev path');
    rest = value.slice('/dev/'.length);
  }
  const parts = rest.split('/');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw bad('not a VG/LV pair');
  try {
    return parseLvRef({ vg: parts[0], lv: parts[1] }, 'map');
  } catch (e) {
    throw bad((e as Error).message.replace(/\.$/, ''));
  }
}

/**
 * Decides the target LV of every disk. `map` wins over `vg`, `vg` over the
 * original place. Throws ConfigError for a bad VG name, a map entry for a
 * disk the set does not have, or two disks sent to the same LV.
 */
export function resolveDiskTargets(
  disks: readonly ManifestDisk[],
  skipped: readonly ManifestSkipped[],
  options: { vg?: string; map?: Readonly<Record<string, string>> },
): DiskTarget[] {
  if (options.vg !== undefined) validateVgName(options.vg, 'vg');
  const map = options.map ?? {};
  const targets = disks.map((d) => d.target);
  for (const t of Object.keys(map)) {
    if (targets.includes(t)) continue;
    const skip = skipped.find((s) => s.target === t);
    throw new ConfigError(
      skip
        ? `\`map\` ${t}: disk ${t} is not in this backup set (${skip.reason}); map only the set's disks: ${targets.join(', ')}`
        : `\`map\` ${t}: the backup set has no disk ${t}; its disks are ${targets.join(', ')}`,
      'map',
    );
  }
  const out: DiskTarget[] = disks.map((d) => {
    const m = map[d.target];
    if (m !== undefined) return { target: d.target, ...parseLvTarget(m, d.target), from: 'map' };
    if (options.vg !== undefined) return { target: d.target, vg: options.vg, lv: d.lv, from: 'vg' };
    return { target: d.target, vg: d.vg, lv: d.lv, from: 'original' };
  });
  const seen = new Map<string, string>();
  for (const t of out) {
    const key = `${t.vg}/${t.lv}`;
    const other = seen.get(key);
    if (other !== undefined) {
      throw new ConfigError(`disks ${other} and ${t.target} would both be restored into ${key}; give each disk its own LV with \`map\``, 'map');
    }
    seen.set(key, t.target);
  }
  return out;
}
