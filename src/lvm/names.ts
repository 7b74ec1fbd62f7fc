/**
 * lvm2 naming rules (lvm(8) "VALID NAMES" and "TAGS") and device-mapper name
 * decoding. Every name is checked here before any command is run: a bad
 * name is a ConfigError and never reaches lvm2.
 */
import { ConfigError } from '../errors.js';

/** Longest VG or LV name lvm2 accepts (NAME_LEN 128, including the NUL). */
export const LVM_MAX_NAME_LENGTH = 127;
/** Longest tag lvm2 accepts. */
export const LVM_MAX_TAG_LENGTH = 1024;

const NAME_CHARS = /^[A-Za-z0-9+_.-]+$/;
const TAG_CHARS = /^[A-Za-z0-9_+.\-/=!:#&]+$/;

/** Substrings lvm2 reserves for its internal sub-LVs. */
export const RESERVED_LV_SUBSTRINGS: readonly string[] = Object.freeze([
  '_cdata',
  '_cmeta',
  '_corig',
  '_iorig',
  '_mimage',
  '_mlog',
  '_pmspare',
  '_rimage',
  '_rmeta',
  '_tdata',
  '_tmeta',
  '_vdata',
  '_vorigin',
  '_wcorig',
]);

function commonNameProblem(name: unknown, what: string): string | undefined {
  if (typeof name !== 'string') return `${what} must be a string, got ${typeof name}`;
  if (name.length === 0) return `${what} must not be empty`;
  if (name.length > LVM_MAX_NAME_LENGTH) return `${what} ${JSON.stringify(name)} is longer than ${LVM_MAX_NAME_LENGTH} characters`;
  if (!NAME_CHARS.test(name)) {
    return `${what} ${JSON.stringify(name)} contains characters lvm2 does not allow (allowed: a-z A-Z 0-9 + _ . -)`;
  }
  if (name.startsWith('-')) return `${what} ${JSON.stringify(name)} must not begin with a hyphen`;
  if (name === '.' || name === '..') return `${what} must not be "." or ".."`;
  return undefined;
}

/** Why `name` is not a valid VG name, or undefined when it is. */
export function vgNameProblem(name: unknown): string | undefined {
  return commonNameProblem(name, 'volume group name');
}

/** Why `name` is not a valid name for a new LV, or undefined when it is. */
export function lvNameProblem(name: unknown): string | undefined {
  const common = commonNameProblem(name, 'logical volume name');
  if (common) return common;
  const n = name as string;
  for (const prefix of ['snapshot', 'pvmove']) {
    if (n.startsWith(prefix)) return `logical volume name ${JSON.stringify(n)} begins with "${prefix}", which lvm2 reserves`;
  }
  const reserved = RESERVED_LV_SUBSTRINGS.find((s) => n.includes(s));
  if (reserved) return `logical volume name ${JSON.stringify(n)} contains "${reserved}", which lvm2 reserves for internal volumes`;
  return undefined;
}

/** Why `tag` is not a valid lvm2 tag, or undefined when it is. */
export function lvmTagProblem(tag: unknown): string | undefined {
  if (typeof tag !== 'string') return `tag must be a string, got ${typeof tag}`;
  if (tag.length === 0) return 'tag must not be empty';
  if (tag.length > LVM_MAX_TAG_LENGTH) return `tag is longer than ${LVM_MAX_TAG_LENGTH} characters`;
  if (!TAG_CHARS.test(tag)) {
    return `tag ${JSON.stringify(tag)} contains characters lvm2 does not allow (allowed: A-Z a-z 0-9 _ + . - / = ! : # &)`;
  }
  if (tag.startsWith('-')) return `tag ${JSON.stringify(tag)} must not begin with a hyphen`;
  return undefined;
}

function sentence(problem: string, fix: string): string {
  return `${problem[0].toUpperCase()}${problem.slice(1)}: ${fix}`;
}

export function validateVgName(name: unknown, option = 'vg'): string {
  const problem = vgNameProblem(name);
  if (problem) throw new ConfigError(sentence(problem, 'use a valid lvm2 volume group name'), option);
  return name as string;
}

export function validateLvName(name: unknown, option = 'lv'): string {
  const problem = lvNameProblem(name);
  if (problem) throw new ConfigError(sentence(problem, 'choose another logical volume name'), option);
  return name as string;
}

export function validateLvmTag(tag: unknown, option = 'tags'): string {
  const problem = lvmTagProblem(tag);
  if (problem) throw new ConfigError(sentence(problem, 'choose another tag'), option);
  return tag as string;
}

/** A VG/LV pair naming one logical volume. */
export interface LvName {
  vg: string;
  lv: string;
}

/** Anything naming an LV: `"VG/LV"` or an object with `vg` and `lv` (a resolved LogicalVolume works). */
export type LvRef = string | LvName;

/**
 * Turns an LvRef into a checked VG/LV pair. Existing LVs are checked with the
 * VG/LV charset only (their names were accepted by lvm2 already), so the
 * reserved-name rules for new LVs don't hide an existing volume.
 */
export function parseLvRef(ref: LvRef, option = 'lv'): LvName {
  let vg: unknown;
  let lv: unknown;
  if (typeof ref === 'string') {
    const parts = ref.split('/');
    if (parts.length !== 2) {
      throw new ConfigError(`Invalid logical volume ${JSON.stringify(ref)}: write it as VG/LV (for example vg0/web01-disk)`, option);
    }
    [vg, lv] = parts;
  } else if (typeof ref === 'object' && ref !== null) {
    vg = ref.vg;
    lv = ref.lv;
  } else {
    throw new ConfigError(`Invalid logical volume: expected "VG/LV" or { vg, lv }, got ${typeof ref}`, option);
  }
  validateVgName(vg, option);
  const problem = commonNameProblem(lv, 'logical volume name');
  if (problem) throw new ConfigError(sentence(problem, 'name an existing logical volume'), option);
  return { vg: vg as string, lv: lv as string };
}

/** The device-mapper name lvm2 gives VG/LV (dashes doubled): `vg-a`/`lv-b` → `vg--a-lv--b`. */
export function dmName(vg: string, lv: string, layer?: string): string {
  const esc = (s: string): string => s.replace(/-/g, '--');
  return layer ? `${esc(vg)}-${esc(lv)}-${layer}` : `${esc(vg)}-${esc(lv)}`;
}

/** A device-mapper name split the way `dmsetup splitname` does for LVM names. */
export interface DmNameParts {
  vg: string;
  lv: string;
  /** Internal layer suffix (`real`, `cow`, `tpool`, ...), or '' for the public LV device. */
  layer: string;
}

/**
 * Splits an lvm2 device-mapper name at its single dashes, undoing the `--`
 * escape: `vg--a-lv--b` → `{ vg: 'vg-a', lv: 'lv-b', layer: '' }`. Returns
 * null when the name has no VG/LV separator.
 */
export function splitDmName(name: string): DmNameParts | null {
  const parts: string[] = [''];
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === '-') {
      if (name[i + 1] === '-') {
        parts[parts.length - 1] += '-';
        i++;
      } else if (parts.length < 3) {
        parts.push('');
      } else {
        parts[2] += '-';
      }
    } else {
      parts[parts.length - 1] += c;
    }
  }
  if (parts.length < 2 || parts[0] === '' || parts[1] === '') return null;
  return { vg: parts[0], lv: parts[1], layer: parts[2] ?? '' };
}
