/**
 * What a backup set folder holds, derived from its manifest, and a walk of
 * what it actually holds. Shared by commit (refuse an unfinished set) and
 * verify (report missing, extra and damaged files).
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE, isChunkedMemory, type Manifest } from '../manifest/index.js';
import { isTempName } from '../util/fs.js';

/** The checksum list's file name inside a set. */
export const CHECKSUMS_FILE = 'SHA256SUMS' as const;
/** Suffix of a file being streamed into a set (renamed away on success). */
export const PARTIAL_SUFFIX = '.partial';

/** A data file the manifest promises, with what it must measure. */
export interface ExpectedFile {
  /** Path relative to the set folder. */
  file: string;
  /** 'chunk-list': a disk's or the memory state's chunk list (its chunks live in DEST/.chunks). */
  kind: 'domain-xml' | 'memory' | 'image' | 'chunk-list';
  /** The disk target, for images and disk chunk lists. */
  target?: string;
  /** Exact size when the manifest records it (domain.xml has none). */
  bytes: number | null;
  sha256: string;
}

/** The data files of a set (every file but manifest.json and SHA256SUMS), in manifest order. */
export function expectedFiles(m: Manifest): ExpectedFile[] {
  const out: ExpectedFile[] = [{ file: m.domainXml.file, kind: 'domain-xml', bytes: null, sha256: m.domainXml.sha256 }];
  if (m.memory) {
    if (isChunkedMemory(m.memory)) {
      const c = m.memory.chunks;
      out.push({ file: c.file, kind: 'chunk-list', bytes: c.listBytes, sha256: c.listSha256 });
    } else {
      out.push({ file: m.memory.file, kind: 'memory', bytes: m.memory.bytes, sha256: m.memory.sha256 });
    }
  }
  for (const d of m.disks) {
    if (d.chunks !== undefined) {
      out.push({ file: d.chunks.file, kind: 'chunk-list', target: d.target, bytes: d.chunks.listBytes, sha256: d.chunks.listSha256 });
    } else {
      const image = d.image!;
      out.push({ file: image.file, kind: 'image', target: d.target, bytes: image.storedBytes, sha256: image.fileSha256 });
    }
  }
  return out;
}

export interface SetEntry {
  /** Path relative to the set folder, '/'-separated. */
  rel: string;
  type: 'file' | 'dir' | 'other';
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
}

/** Every entry under a set folder (not following symbolic links), folders before their content. */
export async function walkSet(setPath: string): Promise<SetEntry[]> {
  const out: SetEntry[] = [];
  const visit = async (relDir: string): Promise<void> => {
    const names = (await readdir(relDir ? join(setPath, relDir) : setPath)).sort();
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const st = await lstat(join(setPath, rel));
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other';
      out.push({ rel, type, size: st.size, mode: st.mode & 0o7777 });
      if (type === 'dir') await visit(rel);
    }
  };
  await visit('');
  return out;
}

/** True for leftovers of an unfinished write: `x.partial` or a hidden temporary file. */
export function isUnfinishedName(rel: string): boolean {
  const base = rel.slice(rel.lastIndexOf('/') + 1);
  return base.endsWith(PARTIAL_SUFFIX) || isTempName(base);
}

/** Names only kvmbak's commit writes. */
export const RESERVED_FILES: readonly string[] = [MANIFEST_FILE, CHECKSUMS_FILE];
