import { mkdtemp, readFile, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KvmbakError, isKvmbakError } from '../../../src/errors.js';
import {
  type Manifest,
  type ManifestMemoryChunked,
  ManifestError,
  isManifestError,
  parseManifest,
  readManifest,
  stringifyManifest,
  validateManifest,
  writeManifest,
} from '../../../src/manifest/index.js';
import { sampleManifest } from './sample.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvmbak-manifest-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function catchError(fn: () => unknown): ManifestError {
  try {
    fn();
  } catch (e) {
    expect(isManifestError(e)).toBe(true);
    return e as ManifestError;
  }
  throw new Error('expected a ManifestError');
}

async function catchAsync(p: Promise<unknown>): Promise<ManifestError> {
  try {
    await p;
  } catch (e) {
    expect(isManifestError(e)).toBe(true);
    return e as ManifestError;
  }
  throw new Error('expected a ManifestError');
}

describe('writeManifest / readManifest', () => {
  it('round-trips a manifest through an atomic 0600 file', async () => {
    const m = sampleManifest();
    await writeManifest(dir, m);
    expect(await readManifest(dir)).toEqual(m);
    expect((await stat(join(dir, 'manifest.json'))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['manifest.json']);
  });

  it('writes mode 0600 whatever the umask', async () => {
    const old = process.umask(0);
    try {
      await writeManifest(dir, sampleManifest());
    } finally {
      process.umask(old);
    }
    expect((await stat(join(dir, 'manifest.json'))).mode & 0o777).toBe(0o600);
  });

  it('keeps member offsets on one line and the rest readable', async () => {
    await writeManifest(dir, sampleManifest());
    const text = await readFile(join(dir, 'manifest.json'), 'utf8');
    expect(text).toContain('"members": [0,1200,2400,3600]');
    expect(text).toContain('\n  "format": "kvmbak/1",\n');
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual(sampleManifest());
    expect(stringifyManifest(sampleManifest())).toBe(text);
  });

  it('refuses to write an invalid manifest and leaves nothing behind', async () => {
    const m = sampleManifest() as unknown as Record<string, unknown>;
    delete m.host;
    const e = await catchAsync(writeManifest(dir, m as unknown as Manifest));
    expect(e.code).toBe('KVMBAK_MANIFEST_INVALID');
    expect(e.message).toContain('host is missing');
    expect(await readdir(dir)).toEqual([]);
  });

  it('replaces an existing manifest atomically', async () => {
    await writeManifest(dir, sampleManifest());
    const m2 = { ...sampleManifest(), toolVersion: '0.2.0' };
    await writeManifest(dir, m2);
    expect((await readManifest(dir)).toolVersion).toBe('0.2.0');
    expect(await readdir(dir)).toEqual(['manifest.json']);
  });
});

describe('readManifest errors', () => {
  it('missing manifest: not a complete set (store names it incomplete only for a set folder)', async () => {
    const e = await catchAsync(readManifest(dir));
    expect(e.code).toBe('KVMBAK_MANIFEST_MISSING');
    expect(e.message).toBe(`no manifest.json in ${dir}: not a complete kvmbak backup set`);
    expect(e).toBeInstanceOf(KvmbakError);
    expect(isKvmbakError(e)).toBe(true);
    expect(e.name).toBe('ManifestError');
    expect(Object.keys(e)).not.toContain('name');
  });

  it('missing folder and a file instead of a folder say so', async () => {
    const gone = join(dir, 'nope');
    const e1 = await catchAsync(readManifest(gone));
    expect(e1.code).toBe('KVMBAK_MANIFEST_MISSING');
    expect(e1.message).toContain(`no backup set at ${gone}: the folder does not exist`);
    const file = join(dir, 'afile');
    await writeFile(file, 'x');
    const e2 = await catchAsync(readManifest(file));
    expect(e2.code).toBe('KVMBAK_MANIFEST_MISSING');
    expect(e2.message).toContain('not a folder');
  });

  it.each([
    ['truncated JSON', '{"format": "kvmbak/1", "toolVersion":', 'not valid JSON ('],
    ['empty file', '', 'not valid JSON (the file is empty)'],
    ['garbage', '\u0000\u0001binary', 'not valid JSON ('],
  ])('malformed JSON (%s) names the file', async (_name, text, expected) => {
    await writeFile(join(dir, 'manifest.json'), text);
    const e = await catchAsync(readManifest(dir));
    expect(e.code).toBe('KVMBAK_MANIFEST_MALFORMED');
    expect(e.message).toContain(`malformed manifest ${join(dir, 'manifest.json')}: ${expected}`);
    expect(e.path).toBe(join(dir, 'manifest.json'));
  });

  it.each([
    ['an object without format', { hello: 'world' }, 'has no "format" field'],
    ['another format', { format: 'qcow2' }, 'has format "qcow2"'],
    ['an older/unknown kvmbak format', { format: 'kvmbak/0' }, 'has format "kvmbak/0"'],
    ['a number format', { format: 1 }, 'has format 1'],
    ['an array', [1, 2], 'holds an array'],
    ['a string', 'kvmbak/1', 'holds "kvmbak/1"'],
    ['null', null, 'holds null'],
  ])('foreign file (%s): not a kvmbak backup set', async (_name, json, detail) => {
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(json));
    const e = await catchAsync(readManifest(dir));
    expect(e.code).toBe('KVMBAK_MANIFEST_FOREIGN');
    expect(e.message).toMatch(/^not a kvmbak backup set: /);
    expect(e.message).toContain(detail);
  });

  it.each(['kvmbak/3', 'kvmbak/10'])('newer format %s: upgrade kvmbak', async (format) => {
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ format, whatever: true }));
    const e = await catchAsync(readManifest(dir));
    expect(e.code).toBe('KVMBAK_MANIFEST_NEWER');
    expect(e.format).toBe(format);
    expect(e.message).toBe(`${join(dir, 'manifest.json')} was written by a newer kvmbak (format ${format}); upgrade kvmbak to read it`);
  });

  it('invalid field: names the field path and the file', async () => {
    const m = sampleManifest() as unknown as { disks: { image: Record<string, unknown> }[] };
    m.disks[0].image.rawSha256 = 'xyz';
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(m));
    const e = await catchAsync(readManifest(dir));
    expect(e.code).toBe('KVMBAK_MANIFEST_INVALID');
    expect(e.message).toBe(
      `invalid manifest ${join(dir, 'manifest.json')}: disks[0].image.rawSha256 must be a sha256 (64 lowercase hex digits), got "xyz"; the backup set is damaged or was edited, use another set`,
    );
  });
});

type Mutator = (m: any) => void;

describe('validateManifest', () => {
  it('accepts the sample and returns it', () => {
    const m = sampleManifest();
    expect(validateManifest(m)).toBe(m);
  });

  it.each<[string, Mutator]>([
    ['a thin disk', (m) => Object.assign(m.disks[0], { thin: true, thinPool: 'pool0', snapshot: { name: 's', size: null, peakPercent: null } })],
    ['pause mode without memory', (m) => Object.assign(m, { mode: 'pause', memory: null })],
    ['offline mode, no downtime', (m) => Object.assign(m, { mode: 'offline', memory: null, downtimeMs: null })],
    ['an extended snapshot', (m) => (m.disks[0].snapshot.extendedTo = 32 * 1024 * 1024)],
    ['unknown extra fields', (m) => Object.assign(m, { futureField: { a: 1 } })],
    ['no pool', (m) => (m.disks[0].pool = null)],
    ['nothing skipped', (m) => (m.skipped = [])],
    ['a UTC offset time', (m) => (m.createdAt = '2026-11-26T04:15:42+01:00')],
    ['a one-chunk disk', (m) => Object.assign(m.disks[0].image, { rawBytes: 100, members: [0], zeroChunks: 0 })],
  ])('accepts %s', (_name, mutate) => {
    const m = sampleManifest();
    mutate(m);
    expect(() => validateManifest(m)).not.toThrow();
  });

  it.each<[string, Mutator, string]>([
    ['missing toolVersion', (m) => delete m.toolVersion, 'toolVersion is missing'],
    ['empty host', (m) => (m.host = ''), 'host must be a non-empty string, got ""'],
    ['bad createdAt', (m) => (m.createdAt = 'yesterday'), 'createdAt must be an ISO 8601 time, got "yesterday"'],
    ['impossible createdAt', (m) => (m.createdAt = '2026-13-45T99:00:00Z'), 'createdAt must be a valid time'],
    ['missing domain', (m) => delete m.domain, 'domain is missing'],
    ['domain not an object', (m) => (m.domain = 'web01'), 'domain must be an object, got "web01"'],
    ['bad uuid', (m) => (m.domain.uuid = 'nope'), 'domain.uuid must be a UUID, got "nope"'],
    ['bad state', (m) => (m.domain.stateBefore = 'sleeping'), "domain.stateBefore must be one of 'nostate', 'running'"],
    ['bad mode', (m) => (m.mode = 'snapshot'), "mode must be one of 'save', 'pause', 'quiesce', 'offline', got \"snapshot\""],
    ['negative downtime', (m) => (m.downtimeMs = -1), 'downtimeMs must be a number between 0 and 31622400000, got -1'],
    ['missing timing', (m) => delete m.timings.windowMs, 'timings.windowMs is missing'],
    ['non-number timing', (m) => (m.timings.extraMs = 'x'), 'timings.extraMs must be a number between 0 and 31622400000, got "x"'],
    ['save without memory', (m) => (m.memory = null), "memory must describe the memory state in mode 'save', got null"],
    ['pause with memory', (m) => (m.mode = 'pause'), "memory must be null in mode 'pause'"],
    ['memory file name', (m) => (m.memory.file = 'ram.bin'), 'memory.file must be \'memory.state\', got "ram.bin"'],
    ['memory bytes as string', (m) => (m.memory.bytes = '1048576'), 'memory.bytes must be an integer from 0 to 1125899906842624, got "1048576"'],
    ['domainXml file', (m) => (m.domainXml.file = 'dom.xml'), "domainXml.file must be 'domain.xml'"],
    ['domainXml sha', (m) => (m.domainXml.sha256 = 'B'.repeat(64)), 'domainXml.sha256 must be a sha256'],
    ['no disks', (m) => (m.disks = []), 'disks must list at least one disk, got an empty array'],
    ['disks not an array', (m) => (m.disks = {}), 'disks must be an array, got an object'],
    ['disk not an object', (m) => (m.disks[0] = 5), 'disks[0] must be an object, got 5'],
    ['capacity as string', (m) => (m.disks[0].capacity = '12'), 'disks[0].capacity must be an integer from 0 to 1125899906842624, got "12"'],
    ['fractional lvSize', (m) => (m.disks[0].lvSize = 1.5), 'disks[0].lvSize must be an integer from 0 to 1125899906842624, got 1.5'],
    ['missing lvUuid', (m) => delete m.disks[0].lvUuid, 'disks[0].lvUuid is missing'],
    ['thin as string', (m) => (m.disks[0].thin = 'no'), 'disks[0].thin must be true or false, got "no"'],
    [
      'thin without pool',
      (m) => Object.assign(m.disks[0], { thin: true, snapshot: { name: 's', size: null, peakPercent: null } }),
      'disks[0].thinPool must name the thin pool',
    ],
    ['classic with thinPool', (m) => (m.disks[0].thinPool = 'pool0'), 'disks[0].thinPool must be null for a classic'],
    ['classic snapshot without size', (m) => (m.disks[0].snapshot.size = null), 'disks[0].snapshot.size must be the COW size'],
    [
      'thin snapshot with size',
      (m) => Object.assign(m.disks[0], { thin: true, thinPool: 'p' }),
      'disks[0].snapshot.size must be null for a thin snapshot',
    ],
    ['peak above 100', (m) => (m.disks[0].snapshot.peakPercent = 150), 'disks[0].snapshot.peakPercent must be a number between 0 and 100, got 150'],
    ['extendedTo zero', (m) => (m.disks[0].snapshot.extendedTo = 0), 'disks[0].snapshot.extendedTo must be an integer from 1 to 1125899906842624'],
    ['missing image', (m) => delete m.disks[0].image, 'disks[0].image is missing'],
    ['absolute image file', (m) => (m.disks[0].image.file = '/etc/shadow'), 'disks[0].image.file must be relative to the set folder'],
    ['escaping image file', (m) => (m.disks[0].image.file = 'disks/../../x.gz'), "disks[0].image.file must not contain empty, '.' or '..' segments"],
    ['hidden image file', (m) => (m.disks[0].image.file = 'disks/.vda.img.gz'), "disks[0].image.file must not have a segment starting with '.'"],
    ['reserved image file', (m) => (m.disks[0].image.file = 'domain.xml'), 'disks[0].image.file must not reuse the reserved name "domain.xml"'],
    ['chunkSize zero', (m) => (m.disks[0].image.chunkSize = 0), 'disks[0].image.chunkSize must be an integer from 4096 to 268435456, got 0'],
    [
      'chunkSize 2^40 (would be allocated)',
      (m) => (m.disks[0].image.chunkSize = 2 ** 40),
      'disks[0].image.chunkSize must be an integer from 4096 to 268435456, got 1099511627776',
    ],
    [
      'rawBytes beyond 1 PiB',
      (m) => (m.disks[0].image.rawBytes = 2 ** 52),
      `disks[0].image.rawBytes must be an integer from 0 to ${2 ** 50}, got ${2 ** 52}`,
    ],
    ['memory bytes beyond 1 PiB', (m) => (m.memory.bytes = 2 ** 51), `memory.bytes must be an integer from 0 to ${2 ** 50}, got ${2 ** 51}`],
    ['downtime of years', (m) => (m.downtimeMs = 1e15), 'downtimeMs must be a number between 0 and 31622400000, got 1000000000000000'],
    ['first member not 0', (m) => (m.disks[0].image.members = [5, 1200, 2400, 3600]), 'disks[0].image.members[0] must be 0'],
    [
      'members not increasing',
      (m) => (m.disks[0].image.members = [0, 1200, 1200, 3600]),
      'disks[0].image.members[2] must be greater than members[1] (1200), got 1200',
    ],
    [
      'member not a number',
      (m) => (m.disks[0].image.members = [0, '1200', 2400, 3600]),
      'disks[0].image.members[1] must be an integer from 0 to 1125899906842624, got "1200"',
    ],
    [
      'wrong member count',
      (m) => (m.disks[0].image.members = [0, 1200, 2400]),
      'disks[0].image.members must list 4 members (rawBytes 4194304 / chunkSize 1048576), got 3',
    ],
    [
      'member beyond the file',
      (m) => (m.disks[0].image.members = [0, 1200, 2400, 5000]),
      'disks[0].image.members last offset 5000 must be below storedBytes 5000',
    ],
    ['too many zero chunks', (m) => (m.disks[0].image.zeroChunks = 5), 'disks[0].image.zeroChunks must not exceed the number of members (4), got 5'],
    ['duplicate target', (m) => m.disks.push(structuredClone(m.disks[0])), 'disks[1].target repeats target "vda" of disks[0].target'],
    ['skipped target reused', (m) => (m.skipped[0].target = 'vda'), 'skipped[0].target repeats target "vda" of disks[0].target'],
    ['skipped without reason', (m) => delete m.skipped[0].reason, 'skipped[0].reason is missing'],
  ])('rejects %s', (_name, mutate, expected) => {
    const m = sampleManifest();
    mutate(m);
    const e = catchError(() => validateManifest(m, 'SET/manifest.json'));
    expect(e.code).toBe('KVMBAK_MANIFEST_INVALID');
    expect(e.message).toContain(`invalid manifest SET/manifest.json: ${expected}`);
    expect(e.issues.length).toBeGreaterThan(0);
  });

  it('collects every problem and counts the rest in the message', () => {
    const m = sampleManifest() as any;
    delete m.host;
    m.disks[0].image.fileSha256 = 'nope';
    m.skipped[0].device = 7;
    const e = catchError(() => validateManifest(m));
    expect(e.issues.map((i) => i.field)).toEqual(['host', 'disks[0].image.fileSha256', 'skipped[0].device']);
    expect(e.message).toContain('invalid manifest manifest: host is missing (and 2 more problems)');
  });

  it('checks the format before anything else', () => {
    expect(catchError(() => validateManifest({ format: 'kvmbak/3' })).code).toBe('KVMBAK_MANIFEST_NEWER');
    expect(catchError(() => validateManifest({})).code).toBe('KVMBAK_MANIFEST_FOREIGN');
    expect(catchError(() => validateManifest({ format: 'kvmbak/1' })).code).toBe('KVMBAK_MANIFEST_INVALID');
  });

  it('parseManifest handles text', () => {
    expect(parseManifest(JSON.stringify(sampleManifest()))).toEqual(sampleManifest());
    expect(catchError(() => parseManifest('{', 'x.json')).code).toBe('KVMBAK_MANIFEST_MALFORMED');
  });

  it('isManifestError filters by code', async () => {
    await mkdir(join(dir, 's'));
    const e = await catchAsync(readManifest(join(dir, 's')));
    expect(isManifestError(e, 'KVMBAK_MANIFEST_MISSING')).toBe(true);
    expect(isManifestError(e, 'KVMBAK_MANIFEST_NEWER')).toBe(false);
    expect(isManifestError(new Error('x'))).toBe(false);
  });
});

describe('kvmbak/2: chunked disks and memory', () => {
  const chunks = (file: string, rawBytes = 10 * 4194304 + 5) => ({
    file,
    listBytes: 900,
    listSha256: 'a'.repeat(64),
    rawBytes,
    rawSha256: 'b'.repeat(64),
    chunkSize: 4194304,
    chunks: Math.ceil(rawBytes / 4194304),
    zeroChunks: Math.min(2, Math.ceil(rawBytes / 4194304) - 1),
    newChunks: 1,
    addedBytes: 12345,
    read: 'full' as const,
    chunksRead: Math.ceil(rawBytes / 4194304),
  });
  function chunked(): Manifest {
    const m = sampleManifest();
    const { image: _image, ...disk } = m.disks[0]!;
    const memory = {
      bytes: 1000,
      sha256: 'c'.repeat(64),
      chunks: { ...chunks('memory.chunks', 1000), file: 'memory.chunks' as const, rawSha256: 'c'.repeat(64) },
    };
    return { ...m, format: 'kvmbak/2', mode: 'save', memory, disks: [{ ...disk, chunks: chunks('disks/vda.chunks') }] };
  }

  it('accepts a set whose disk and memory are chunk lists, and image disks under kvmbak/2', () => {
    expect(validateManifest(chunked())).toEqual(chunked());
    expect(validateManifest({ ...sampleManifest(), format: 'kvmbak/2' }).format).toBe('kvmbak/2');
  });

  it('names every inconsistency of a chunk list', () => {
    const m = chunked() as unknown as { disks: Record<string, unknown>[]; memory: Record<string, unknown> };
    const disk = m.disks[0]!;
    disk.image = sampleManifest().disks[0]!.image;
    disk.chunks = { ...(disk.chunks as object), chunks: 3, newChunks: 99, read: 'delta' };
    m.memory = { ...m.memory, bytes: 999 };
    const e = catchError(() => validateManifest(m));
    expect(e.code).toBe('KVMBAK_MANIFEST_INVALID');
    expect(e.issues).toEqual([
      { field: 'memory.chunks.rawBytes', message: 'must equal memory.bytes (999), got 1000' },
      { field: 'disks[0].image', message: 'must not be set next to chunks (a disk is stored one way)' },
      { field: 'disks[0].chunks.read', message: "must be one of 'full', 'thin-delta', got \"delta\"" },
      { field: 'disks[0].chunks.chunks', message: 'must be 11 (rawBytes 41943045 / chunkSize 4194304), got 3' },
      { field: 'disks[0].chunks.newChunks', message: 'must not exceed chunks (3), got 99' },
      { field: 'disks[0].chunks.chunksRead', message: 'must not exceed chunks (3), got 11' },
    ]);
  });

  it("a disk's list may go without rawSha256 (its identity is the list); one given must be a sha256; the memory state's must be there", () => {
    const m = chunked();
    const { rawSha256: _raw, ...bare } = m.disks[0]!.chunks!;
    const noWhole = { ...m, disks: [{ ...m.disks[0]!, chunks: bare }] };
    expect(validateManifest(noWhole)).toEqual(noWhole);
    expect(validateManifest(noWhole).disks[0]!.chunks!.rawSha256).toBeUndefined();

    const bad = { ...m, disks: [{ ...m.disks[0]!, chunks: { ...bare, rawSha256: 'xyz' } }] };
    expect(catchError(() => validateManifest(bad)).issues).toEqual([
      { field: 'disks[0].chunks.rawSha256', message: 'must be a sha256 (64 lowercase hex digits), got "xyz"' },
    ]);
    const { rawSha256: _mem, ...memChunks } = (m.memory as ManifestMemoryChunked).chunks;
    const noMemSha = { ...noWhole, memory: { ...m.memory!, chunks: memChunks } };
    expect(catchError(() => validateManifest(noMemSha)).issues).toEqual([{ field: 'memory.chunks.rawSha256', message: 'is missing' }]);
  });

  it('kvmbak/1 knows no chunks: a disk without image and a chunked memory state are refused', () => {
    const e = catchError(() => validateManifest({ ...chunked(), format: 'kvmbak/1' }));
    expect(e.issues.map((i) => i.field)).toEqual(['memory.file', 'disks[0].image']);
  });
});
