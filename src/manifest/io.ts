import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ManifestError } from './errors.js';
import { errnoCode, isNotRegularFileError, readRegularFile, writeFileAtomic } from '../util/fs.js';
import { MANIFEST_FILE, type Manifest } from './types.js';
import { validateManifest } from './validate.js';

/**
 * JSON with two-space indentation, except that arrays of numbers (the member
 * offsets, one per chunk: thousands of them) stay on one line.
 */
export function stringifyManifest(m: Manifest): string {
  const render = (v: unknown, indent: string): string => {
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]';
      if (v.every((x) => typeof x === 'number')) return `[${v.map((x) => JSON.stringify(x)).join(',')}]`;
      const inner = `${indent}  `;
      return `[\n${v.map((x) => inner + render(x, inner)).join(',\n')}\n${indent}]`;
    }
    if (typeof v === 'object' && v !== null) {
      const entries = Object.entries(v).filter(([, x]) => x !== undefined);
      if (entries.length === 0) return '{}';
      const inner = `${indent}  `;
      const body = entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${render(x, inner)}`).join(',\n');
      return `{\n${body}\n${indent}}`;
    }
    return JSON.stringify(v);
  };
  return `${render(m, '')}\n`;
}

/** Parses and validates manifest text; `source` names it in error messages. */
export function parseManifest(text: string, source = 'manifest'): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    // Never the parser's message: it quotes the text, and a file that is not a manifest may hold secrets.
    const at = /position (\d+)/.exec((e as Error).message)?.[1];
    const why = text.trim().length === 0 ? 'the file is empty' : at !== undefined ? `a syntax error at character ${at}` : 'a syntax error';
    throw new ManifestError(
      `malformed manifest ${source}: not valid JSON (${why}); the backup set is damaged, use another set`,
      'KVMBAK_MANIFEST_MALFORMED',
      { path: source },
      { cause: e },
    );
  }
  return validateManifest(json, source);
}

/** The largest manifest.json read (one member offset per chunk: a few MB even for a large disk). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

/**
 * Reads and validates SET/manifest.json: a regular file (a symbolic link, a
 * FIFO or a folder is refused, never followed or waited on) of at most
 * MAX_MANIFEST_BYTES. Throws ManifestError with code KVMBAK_MANIFEST_MISSING
 * (no manifest, or no such folder), _MALFORMED (not a regular file, too
 * large, not JSON), _FOREIGN, _NEWER or _INVALID. Messages never quote the
 * file's content.
 */
export async function readManifest(setDir: string): Promise<Manifest> {
  const file = join(setDir, MANIFEST_FILE);
  let text: string;
  try {
    text = (await readRegularFile(file, MAX_MANIFEST_BYTES)).toString('utf8');
  } catch (e) {
    const code = errnoCode(e);
    if (isNotRegularFileError(e) || code === 'KVMBAK_FILE_TOO_LARGE' || code === 'EISDIR') {
      const what = isNotRegularFileError(e)
        ? `${e.kind}, not a regular file`
        : code === 'EISDIR'
          ? 'a folder'
          : `larger than ${MAX_MANIFEST_BYTES} bytes`;
      throw new ManifestError(
        `malformed manifest ${file}: it is ${what}; the backup set is damaged or was tampered with, use another set`,
        'KVMBAK_MANIFEST_MALFORMED',
        { path: file },
        { cause: e },
      );
    }
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    const dirCode = await stat(setDir).then(
      (s) => (s.isDirectory() ? undefined : 'ENOTDIR'),
      (err: unknown) => {
        if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
        return 'ENOENT';
      },
    );
    const message =
      dirCode === undefined
        ? `no ${MANIFEST_FILE} in ${setDir}: not a complete kvmbak backup set`
        : dirCode === 'ENOTDIR'
          ? `no backup set at ${setDir}: not a folder; give the set's folder (DEST/DOMAIN/YYYYMMDDTHHMMSSZ)`
          : `no backup set at ${setDir}: the folder does not exist; check the path (kvmbak list DEST shows the sets)`;
    throw new ManifestError(message, 'KVMBAK_MANIFEST_MISSING', { path: setDir }, { cause: e });
  }
  return parseManifest(text, file);
}

/**
 * Validates `m` and writes it as SET/manifest.json atomically (temporary
 * file 0600, fsync, rename, fsync of the folder). A manifest that would not
 * read back is never written: validation errors are thrown first.
 */
export async function writeManifest(setDir: string, m: Manifest): Promise<void> {
  const file = join(setDir, MANIFEST_FILE);
  validateManifest(m, file);
  await writeFileAtomic(file, stringifyManifest(m));
}
