/**
 * Hand-written validator for kvmbak/1 and kvmbak/2 manifests. It walks the whole document,
 * collects every problem with the path of the field concerned
 * ('disks[0].image.rawSha256'), then checks what the fields say about each
 * other (member offsets, thin/classic, mode/memory). Unknown extra fields are
 * allowed, so a later kvmbak/1 writer may add information.
 */
import { ManifestError, type ManifestIssue } from './errors.js';
import { isRecord as isObj, relativePathProblem } from '../util/fs.js';
import {
  BACKUP_MODES,
  CHUNK_READ_METHODS,
  DOMAIN_XML_FILE,
  MANIFEST_DOMAIN_STATES,
  MANIFEST_FORMAT,
  MANIFEST_FORMAT_V1,
  MANIFEST_FORMATS,
  MEMORY_CHUNKS_FILE,
  MEMORY_FILE,
  type Manifest,
  type ManifestFormat,
} from './types.js';

type Obj = Record<string, unknown>;

const SHA256_RE = /^[0-9a-f]{64}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const FORMAT_RE = /^kvmbak\/(\d+)$/;
const TIMINGS_REQUIRED = ['planMs', 'windowMs', 'archiveMs', 'totalMs'] as const;

/**
 * Bounds of every number, so that a crafted manifest cannot make a reader
 * allocate or loop absurdly (a chunkSize of 2^40 would be allocated).
 * Chunks: what the archive writes (4 KiB to 256 MiB). Bytes: 1 PiB, far above
 * any disk or RAM kvmbak backs up. Milliseconds: a year.
 */
export const MANIFEST_LIMITS = Object.freeze({
  minChunkSize: 4096,
  maxChunkSize: 256 * 1024 * 1024,
  maxBytes: 2 ** 50,
  maxMs: 366 * 24 * 3600 * 1000,
});
const { maxBytes: MAX_BYTES, maxMs: MAX_MS } = MANIFEST_LIMITS;

/** A short rendering of a bad value for messages. */
function shown(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') {
    const s = JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
    return s;
  }
  return String(v);
}

class Checker {
  readonly issues: ManifestIssue[] = [];

  add(field: string, message: string): void {
    this.issues.push({ field, message });
  }

  /** The value of `key`, or an issue when it is absent. */
  private present(o: Obj, key: string, field: string): unknown {
    const v = o[key];
    if (v === undefined) this.add(field, 'is missing');
    return v;
  }

  object(o: Obj, key: string, field: string): Obj | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (!isObj(v)) {
      this.add(field, `must be an object, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  array(o: Obj, key: string, field: string): unknown[] | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) {
      this.add(field, `must be an array, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  string(o: Obj, key: string, field: string, check?: { re: RegExp; what: string }): string | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0) {
      this.add(field, `must be a non-empty string, got ${shown(v)}`);
      return undefined;
    }
    if (check && !check.re.test(v)) {
      this.add(field, `must be ${check.what}, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  sha256(o: Obj, key: string, field: string): string | undefined {
    return this.string(o, key, field, { re: SHA256_RE, what: 'a sha256 (64 lowercase hex digits)' });
  }

  /** An integer in [min, max] (a byte count, an offset: at most MAX_BYTES unless told). */
  integer(o: Obj, key: string, field: string, min = 0, max = MAX_BYTES): number | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      this.add(field, `must be an integer from ${min} to ${max}, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  /** A finite number in [min, max]. */
  number(o: Obj, key: string, field: string, min = 0, max = Infinity): number | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      const range = max === Infinity ? `>= ${min}` : `between ${min} and ${max}`;
      this.add(field, `must be a number ${range}, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  boolean(o: Obj, key: string, field: string): boolean | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') {
      this.add(field, `must be true or false, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string>(o: Obj, key: string, field: string, allowed: readonly T[]): T | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.add(field, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${shown(v)}`);
      return undefined;
    }
    return v as T;
  }

  /** `key` must be present; null is accepted, anything else goes to `check`. */
  nullable<T>(o: Obj, key: string, field: string, check: () => T | undefined): T | null | undefined {
    const v = this.present(o, key, field);
    if (v === undefined) return undefined;
    if (v === null) return null;
    return check();
  }

  relativeFile(o: Obj, key: string, field: string): string | undefined {
    const v = this.string(o, key, field);
    if (v === undefined) return undefined;
    const problem = relativePathProblem(v);
    if (problem !== null) {
      this.add(field, `${problem}, got ${shown(v)}`);
      return undefined;
    }
    return v;
  }

  literal(o: Obj, key: string, field: string, want: string): void {
    const v = this.present(o, key, field);
    if (v !== undefined && v !== want) this.add(field, `must be '${want}', got ${shown(v)}`);
  }
}

function checkImage(c: Checker, image: Obj, p: string): void {
  c.relativeFile(image, 'file', `${p}.file`);
  const rawBytes = c.integer(image, 'rawBytes', `${p}.rawBytes`);
  c.sha256(image, 'rawSha256', `${p}.rawSha256`);
  const storedBytes = c.integer(image, 'storedBytes', `${p}.storedBytes`);
  c.sha256(image, 'fileSha256', `${p}.fileSha256`);
  const chunkSize = c.integer(image, 'chunkSize', `${p}.chunkSize`, MANIFEST_LIMITS.minChunkSize, MANIFEST_LIMITS.maxChunkSize);
  const members = c.array(image, 'members', `${p}.members`);
  const zeroChunks = c.integer(image, 'zeroChunks', `${p}.zeroChunks`);
  if (members === undefined) return;

  let ok = true;
  members.forEach((m, i) => {
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 0 || m > MAX_BYTES) {
      c.add(`${p}.members[${i}]`, `must be an integer from 0 to ${MAX_BYTES}, got ${shown(m)}`);
      ok = false;
    } else if (i === 0 && m !== 0) {
      c.add(`${p}.members[0]`, `must be 0 (the first member starts the file), got ${m}`);
      ok = false;
    } else if (i > 0 && typeof members[i - 1] === 'number' && m <= (members[i - 1] as number)) {
      c.add(`${p}.members[${i}]`, `must be greater than members[${i - 1}] (${String(members[i - 1])}), got ${m}`);
      ok = false;
    }
  });
  if (!ok) return;
  const offsets = members as number[];
  if (rawBytes !== undefined && chunkSize !== undefined && rawBytes > 0) {
    const want = Math.ceil(rawBytes / chunkSize);
    if (offsets.length !== want) {
      c.add(`${p}.members`, `must list ${want} members (rawBytes ${rawBytes} / chunkSize ${chunkSize}), got ${offsets.length}`);
    }
  }
  if (storedBytes !== undefined && offsets.length > 0 && offsets[offsets.length - 1] >= storedBytes) {
    c.add(`${p}.members`, `last offset ${offsets[offsets.length - 1]} must be below storedBytes ${storedBytes}`);
  }
  if (zeroChunks !== undefined && zeroChunks > offsets.length) {
    c.add(`${p}.zeroChunks`, `must not exceed the number of members (${offsets.length}), got ${zeroChunks}`);
  }
}

/**
 * A chunk list's description (kvmbak/2); returns rawBytes and rawSha256 when valid. A disk's list
 * may go without rawSha256 (its identity is the list and the chunk ids); the memory state's may not.
 */
function checkChunks(c: Checker, ch: Obj, p: string, rawSha256Required: boolean): { rawBytes?: number; rawSha256?: string } {
  c.relativeFile(ch, 'file', `${p}.file`);
  c.integer(ch, 'listBytes', `${p}.listBytes`, 1);
  c.sha256(ch, 'listSha256', `${p}.listSha256`);
  const rawBytes = c.integer(ch, 'rawBytes', `${p}.rawBytes`);
  const rawSha256 = rawSha256Required || ch.rawSha256 !== undefined ? c.sha256(ch, 'rawSha256', `${p}.rawSha256`) : undefined;
  const chunkSize = c.integer(ch, 'chunkSize', `${p}.chunkSize`, MANIFEST_LIMITS.minChunkSize, MANIFEST_LIMITS.maxChunkSize);
  const chunks = c.integer(ch, 'chunks', `${p}.chunks`);
  const zeroChunks = c.integer(ch, 'zeroChunks', `${p}.zeroChunks`);
  const newChunks = c.integer(ch, 'newChunks', `${p}.newChunks`);
  c.integer(ch, 'addedBytes', `${p}.addedBytes`);
  c.oneOf(ch, 'read', `${p}.read`, CHUNK_READ_METHODS);
  const chunksRead = c.integer(ch, 'chunksRead', `${p}.chunksRead`);
  if (ch.base !== undefined) {
    const base = c.object(ch, 'base', `${p}.base`);
    if (base !== undefined) {
      c.string(base, 'lv', `${p}.base.lv`);
      c.integer(base, 'thinId', `${p}.base.thinId`);
    }
  }
  if (rawBytes !== undefined && chunkSize !== undefined && chunks !== undefined) {
    const want = Math.ceil(rawBytes / chunkSize);
    if (chunks !== want) c.add(`${p}.chunks`, `must be ${want} (rawBytes ${rawBytes} / chunkSize ${chunkSize}), got ${chunks}`);
  }
  if (chunks !== undefined) {
    for (const [key, v] of [
      ['zeroChunks', zeroChunks],
      ['newChunks', newChunks],
      ['chunksRead', chunksRead],
    ] as const) {
      if (v !== undefined && v > chunks) c.add(`${p}.${key}`, `must not exceed chunks (${chunks}), got ${v}`);
    }
  }
  return { ...(rawBytes !== undefined ? { rawBytes } : {}), ...(rawSha256 !== undefined ? { rawSha256 } : {}) };
}

function checkDisk(c: Checker, disk: Obj, p: string, format: ManifestFormat): void {
  c.string(disk, 'target', `${p}.target`);
  c.string(disk, 'source', `${p}.source`);
  c.string(disk, 'vg', `${p}.vg`);
  c.string(disk, 'lv', `${p}.lv`);
  c.nullable(disk, 'pool', `${p}.pool`, () => c.string(disk, 'pool', `${p}.pool`));
  c.integer(disk, 'capacity', `${p}.capacity`);
  c.integer(disk, 'allocation', `${p}.allocation`);
  c.integer(disk, 'physical', `${p}.physical`);
  c.integer(disk, 'lvSize', `${p}.lvSize`);
  c.string(disk, 'lvUuid', `${p}.lvUuid`);
  const thin = c.boolean(disk, 'thin', `${p}.thin`);
  const thinPool = c.nullable(disk, 'thinPool', `${p}.thinPool`, () => c.string(disk, 'thinPool', `${p}.thinPool`));
  if (thin === true && thinPool === null) c.add(`${p}.thinPool`, 'must name the thin pool of a thin volume, got null');
  if (thin === false && typeof thinPool === 'string') {
    c.add(`${p}.thinPool`, `must be null for a classic (non-thin) volume, got ${shown(thinPool)}`);
  }

  if (format === MANIFEST_FORMAT_V1 || disk.chunks === undefined) {
    const image = c.object(disk, 'image', `${p}.image`);
    if (image) checkImage(c, image, `${p}.image`);
    if (format === MANIFEST_FORMAT && disk.chunks !== undefined) c.add(`${p}.chunks`, 'must not be set next to image');
  } else {
    if (disk.image !== undefined) c.add(`${p}.image`, 'must not be set next to chunks (a disk is stored one way)');
    const chunks = c.object(disk, 'chunks', `${p}.chunks`);
    if (chunks) checkChunks(c, chunks, `${p}.chunks`, false);
  }

  const snap = c.object(disk, 'snapshot', `${p}.snapshot`);
  if (snap) {
    const sp = `${p}.snapshot`;
    c.string(snap, 'name', `${sp}.name`);
    const size = c.nullable(snap, 'size', `${sp}.size`, () => c.integer(snap, 'size', `${sp}.size`, 1));
    if (thin === false && size === null) c.add(`${sp}.size`, 'must be the COW size in bytes for a classic snapshot, got null');
    if (thin === true && typeof size === 'number') c.add(`${sp}.size`, `must be null for a thin snapshot, got ${size}`);
    c.nullable(snap, 'peakPercent', `${sp}.peakPercent`, () => c.number(snap, 'peakPercent', `${sp}.peakPercent`, 0, 100));
    if (snap.extendedTo !== undefined) c.integer(snap, 'extendedTo', `${sp}.extendedTo`, 1);
  }
}

/** Throws ManifestError _FOREIGN or _NEWER unless `json` says format kvmbak/1 or kvmbak/2. */
function checkFormat(json: unknown, source: string): asserts json is Obj & { format: ManifestFormat } {
  const format = isObj(json) ? json.format : undefined;
  if (typeof format !== 'string') {
    const what = !isObj(json)
      ? `holds ${shown(json)}, not a kvmbak manifest object`
      : format === undefined
        ? 'has no "format" field'
        : `has format ${shown(format)}`;
    throw new ManifestError(`not a kvmbak backup set: ${source} ${what}`, 'KVMBAK_MANIFEST_FOREIGN', {
      path: source,
      format,
    });
  }
  const m = FORMAT_RE.exec(format);
  const version = m ? Number(m[1]) : NaN;
  if (version > 2) {
    throw new ManifestError(`${source} was written by a newer kvmbak (format ${format}); upgrade kvmbak to read it`, 'KVMBAK_MANIFEST_NEWER', {
      path: source,
      format,
    });
  }
  if (!(MANIFEST_FORMATS as readonly string[]).includes(format)) {
    throw new ManifestError(
      `not a kvmbak backup set: ${source} has format ${shown(format)} (this kvmbak reads ${MANIFEST_FORMATS.join(' and ')})`,
      'KVMBAK_MANIFEST_FOREIGN',
      { path: source, format },
    );
  }
}

/**
 * Checks a parsed manifest and returns it typed. `source` names it in error
 * messages (the file path when read from disk). Throws ManifestError:
 * KVMBAK_MANIFEST_FOREIGN (no or other format), KVMBAK_MANIFEST_NEWER
 * (kvmbak/3 and later), KVMBAK_MANIFEST_INVALID (with every issue found).
 */
export function validateManifest(json: unknown, source = 'manifest'): Manifest {
  checkFormat(json, source);
  const c = new Checker();
  const m = json;

  c.string(m, 'toolVersion', 'toolVersion');
  const createdAt = c.string(m, 'createdAt', 'createdAt', { re: ISO_RE, what: 'an ISO 8601 time' });
  if (createdAt !== undefined && Number.isNaN(Date.parse(createdAt))) {
    c.add('createdAt', `must be a valid time, got ${shown(createdAt)}`);
  }
  c.string(m, 'host', 'host');
  c.string(m, 'libvirtVersion', 'libvirtVersion');
  c.string(m, 'uri', 'uri');

  const domain = c.object(m, 'domain', 'domain');
  if (domain) {
    c.string(domain, 'name', 'domain.name');
    c.string(domain, 'uuid', 'domain.uuid', { re: UUID_RE, what: 'a UUID' });
    c.oneOf(domain, 'stateBefore', 'domain.stateBefore', MANIFEST_DOMAIN_STATES);
  }

  const mode = c.oneOf(m, 'mode', 'mode', BACKUP_MODES);
  c.nullable(m, 'downtimeMs', 'downtimeMs', () => c.number(m, 'downtimeMs', 'downtimeMs', 0, MAX_MS));

  const timings = c.object(m, 'timings', 'timings');
  if (timings) {
    for (const key of TIMINGS_REQUIRED) c.number(timings, key, `timings.${key}`, 0, MAX_MS);
    for (const key of Object.keys(timings)) {
      if (!(TIMINGS_REQUIRED as readonly string[]).includes(key)) c.number(timings, key, `timings.${key}`, 0, MAX_MS);
    }
  }

  const memory = c.nullable(m, 'memory', 'memory', () => c.object(m, 'memory', 'memory'));
  if (memory) {
    const bytes = c.integer(memory, 'bytes', 'memory.bytes');
    const sha256 = c.sha256(memory, 'sha256', 'memory.sha256');
    if (m.format === MANIFEST_FORMAT_V1 || memory.chunks === undefined) {
      c.literal(memory, 'file', 'memory.file', MEMORY_FILE);
    } else {
      if (memory.file !== undefined) c.add('memory.file', 'must not be set next to memory.chunks (the state is stored one way)');
      const chunks = c.object(memory, 'chunks', 'memory.chunks');
      if (chunks) {
        c.literal(chunks, 'file', 'memory.chunks.file', MEMORY_CHUNKS_FILE);
        const raw = checkChunks(c, chunks, 'memory.chunks', true);
        if (bytes !== undefined && raw.rawBytes !== undefined && raw.rawBytes !== bytes) {
          c.add('memory.chunks.rawBytes', `must equal memory.bytes (${bytes}), got ${raw.rawBytes}`);
        }
        if (sha256 !== undefined && raw.rawSha256 !== undefined && raw.rawSha256 !== sha256) {
          c.add('memory.chunks.rawSha256', 'must equal memory.sha256');
        }
      }
    }
  }
  if (mode === 'save' && memory === null) c.add('memory', "must describe the memory state in mode 'save', got null");
  if (mode !== undefined && mode !== 'save' && isObj(memory)) {
    c.add('memory', `must be null in mode '${mode}' (only mode 'save' keeps the memory state)`);
  }

  const xml = c.object(m, 'domainXml', 'domainXml');
  if (xml) {
    c.literal(xml, 'file', 'domainXml.file', DOMAIN_XML_FILE);
    c.sha256(xml, 'sha256', 'domainXml.sha256');
  }

  const targets = new Map<string, string>();
  const files = new Map<string, string>();
  const seen = (map: Map<string, string>, value: unknown, field: string, what: string): void => {
    if (typeof value !== 'string') return;
    const first = map.get(value);
    if (first !== undefined) c.add(field, `repeats ${what} ${shown(value)} of ${first}`);
    else map.set(value, field);
  };

  const disks = c.array(m, 'disks', 'disks');
  if (disks) {
    if (disks.length === 0) c.add('disks', 'must list at least one disk, got an empty array');
    disks.forEach((d, i) => {
      const p = `disks[${i}]`;
      if (!isObj(d)) {
        c.add(p, `must be an object, got ${shown(d)}`);
        return;
      }
      checkDisk(c, d, p, m.format);
      seen(targets, d.target, `${p}.target`, 'target');
      for (const key of ['image', 'chunks'] as const) {
        const stored = d[key];
        if (!isObj(stored)) continue;
        const file = stored.file;
        if (file === DOMAIN_XML_FILE || file === MEMORY_FILE || file === MEMORY_CHUNKS_FILE || file === 'manifest.json' || file === 'SHA256SUMS') {
          c.add(`${p}.${key}.file`, `must not reuse the reserved name ${shown(file)}`);
        }
        seen(files, file, `${p}.${key}.file`, 'file');
      }
    });
  }

  const skipped = c.array(m, 'skipped', 'skipped');
  skipped?.forEach((s, i) => {
    const p = `skipped[${i}]`;
    if (!isObj(s)) {
      c.add(p, `must be an object, got ${shown(s)}`);
      return;
    }
    c.string(s, 'target', `${p}.target`);
    c.string(s, 'device', `${p}.device`);
    c.string(s, 'reason', `${p}.reason`);
    seen(targets, s.target, `${p}.target`, 'target');
  });

  if (c.issues.length > 0) throw invalid(source, c.issues);
  return m as unknown as Manifest;
}

function invalid(source: string, issues: ManifestIssue[]): ManifestError {
  const [first] = issues;
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
  return new ManifestError(
    `invalid manifest ${source}: ${first.field} ${first.message}${more}; the backup set is damaged or was edited, use another set`,
    'KVMBAK_MANIFEST_INVALID',
    { path: source, issues },
  );
}
