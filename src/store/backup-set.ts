/**
 * A backup set as the backup orchestration writes it: the set folder, its
 * disks/ folder, and the name and path of each file by its role, so that the
 * layout (DESIGN.md, "Backup set") is known here only.
 */
import { chmod, mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DOMAIN_XML_FILE, MEMORY_CHUNKS_FILE, MEMORY_FILE } from '../manifest/index.js';
import { type BackupSet, type CreateSetOptions, type WrittenFile, createSet, setFilePath, writeSetFile } from './set.js';

/** The folder of the disk images inside a set. */
export const IMAGES_DIR = 'disks' as const;

/** The files of a backup set being written, by role. */
export interface BackupSetFiles {
  readonly set: BackupSet;
  /** Where the memory state goes (virDomainSave writes it there). */
  readonly memoryFile: string;
  /** The image of disk `target`: its name in the set (as the manifest records it) and its path. */
  image(target: string): { file: string; path: string };
  /** The chunk list of disk `target` (format chunks): its name in the set and its path. */
  chunkList(target: string): { file: string; path: string };
  /** The chunk list of the memory state (format chunks, mode save). */
  readonly memoryChunkList: { file: typeof MEMORY_CHUNKS_FILE; path: string };
  /** Writes domain.xml (0600, atomically); returns its size and sha256. */
  writeDomainXml(xml: string): Promise<WrittenFile>;
}

/** The files of `set` by role (the set exists already, e.g. from createBackupSet). */
export function backupSetFiles(set: BackupSet): BackupSetFiles {
  return {
    set,
    memoryFile: setFilePath(set, MEMORY_FILE),
    image(target) {
      const file = `${IMAGES_DIR}/${target}.img.gz`;
      return { file, path: setFilePath(set, file) };
    },
    chunkList(target) {
      const file = `${IMAGES_DIR}/${target}.chunks`;
      return { file, path: setFilePath(set, file) };
    },
    memoryChunkList: { file: MEMORY_CHUNKS_FILE, path: setFilePath(set, MEMORY_CHUNKS_FILE) },
    writeDomainXml: (xml) => writeSetFile(set, DOMAIN_XML_FILE, xml),
  };
}

/** Creates a new set folder for a backup of `domain` (see createSet) with its disks/ folder (0700). */
export async function createBackupSet(dest: string, domain: string, options: CreateSetOptions = {}): Promise<BackupSetFiles> {
  const set = await createSet(dest, domain, options);
  const images = join(set.path, IMAGES_DIR);
  await mkdir(images, { mode: 0o700 });
  await chmod(images, 0o700);
  return backupSetFiles(set);
}

/**
 * Removes DEST/DOMAIN when it is empty (a run that took the domain's lock
 * there and then stopped before making anything); anything in it keeps it.
 */
export async function removeEmptyDomainDir(dest: string, domain: string): Promise<void> {
  await rmdir(join(dest, domain)).catch(() => undefined);
}
