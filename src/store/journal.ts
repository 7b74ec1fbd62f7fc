/**
 * The crash-safe record of a backup run: DEST/DOMAIN/.journal-<set id>.json.
 *
 * It lives next to the set folder, not inside it, so that deleting a partial
 * set never deletes the record of what still has to be undone, and so that
 * the set folder holds only the set. Every record() rewrites the whole file
 * atomically (temporary file, fsync, rename, fsync of the folder) before the
 * orchestrator goes on, so after a crash, `kill -9` or power loss the journal
 * holds every step up to the one that was in progress.
 *
 * Steps, in order, and what each tells `kvmbak recover`:
 *   planned            before anything: the domain, the mode, the set, and
 *                      every snapshot LV the run may create (all tagged
 *                      `kvmbak` + runTag). From here, those snapshots may exist.
 *   window-start       recorded BEFORE the VM is saved / suspended / frozen:
 *                      from here until `resumed`, the VM may be left shut off
 *                      (with its state in memoryFile), paused or frozen.
 *   saved              virDomainSave finished: the VM is shut off and
 *                      memoryFile is its complete state (restore from it).
 *   snapshot-created   one snapshot LV exists.
 *   resumed            the VM runs again (restored / resumed / thawed).
 *   archived           one disk's image is complete in the set.
 *   metadata-reserved  recorded BEFORE `dmsetup message VG-POOL-tpool 0
 *                      reserve_metadata_snap` (for thin_delta): from here the
 *                      thin pool vg/pool may hold a metadata snapshot, which
 *                      pins metadata blocks until released. recover releases
 *                      it when the pool's status still shows one held.
 *   metadata-released  that metadata snapshot was released.
 *   snapshots-removed  every snapshot of the run is gone.
 *   committed          manifest.json is written: the set is complete.
 *   failed             the run gave up (its cleanup steps are recorded too).
 * A finished run (committed, or failed and cleaned up) removes its journal.
 */
import { readdir, unlink, lstat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { BackupMode, ManifestDomainState } from '../manifest/index.js';
import { errnoCode, fsyncDir, isNotRegularFileError, isRecord, readRegularFile, writeFileAtomic } from '../util/fs.js';
import { StoreError } from './errors.js';
import { journalFileName, parseJournalFileName } from './naming.js';
import { type OwnerStatus, type ProcessOwner, isProcessOwner, ownerStatus, processOwner } from './owner.js';
import { type BackupSet, assertDest, domainNames } from './set.js';

export const JOURNAL_FORMAT = 'kvmbak-journal/1' as const;

/** A snapshot LV the run creates (or may have created). */
export interface JournalSnapshot {
  vg: string;
  /** The origin LV. */
  lv: string;
  /** The snapshot LV's name. */
  name: string;
}

/** How the VM is held still during the window. */
export type WindowAction = 'save' | 'suspend' | 'freeze' | 'none';

export type JournalStep =
  | {
      step: 'planned';
      domain: string;
      uuid: string;
      uri: string;
      mode: BackupMode;
      stateBefore: ManifestDomainState;
      setPath: string;
      snapshots: JournalSnapshot[];
      /** The LVM tag (besides `kvmbak`) put on this run's snapshots. */
      runTag: string;
    }
  | {
      step: 'window-start';
      action: WindowAction;
      /** Where virDomainSave writes the state (action 'save'), else null. */
      memoryFile: string | null;
    }
  | { step: 'saved'; memoryFile: string }
  | { step: 'snapshot-created'; vg: string; lv: string; name: string }
  | { step: 'resumed' }
  | { step: 'archived'; target: string; file: string }
  | { step: 'metadata-reserved'; vg: string; pool: string }
  | { step: 'metadata-released'; vg: string; pool: string }
  | { step: 'snapshots-removed' }
  | { step: 'committed' }
  | { step: 'failed'; message: string; code?: string };

export type JournalStepName = JournalStep['step'];

/** A step as stored: with the time it was recorded. */
export type JournalEntry = JournalStep & { at: string };

export interface JournalDocument {
  format: typeof JOURNAL_FORMAT;
  operation: string;
  domain: string;
  setId: string;
  setPath: string;
  /** The process running the operation (recover checks it is gone before touching anything). */
  owner: ProcessOwner;
  /** Earlier owners when a run's journal was taken over by `kvmbak recover`. */
  previousOwners?: ProcessOwner[];
  entries: JournalEntry[];
}

const STEPS: readonly JournalStepName[] = [
  'planned',
  'window-start',
  'saved',
  'snapshot-created',
  'resumed',
  'archived',
  'metadata-reserved',
  'metadata-released',
  'snapshots-removed',
  'committed',
  'failed',
];

/** An open journal; record() each step before going on. */
export interface Journal {
  readonly path: string;
  /** The document as last written. */
  readonly document: JournalDocument;
  record(step: JournalStep): Promise<void>;
  /** Deletes the journal (the run is finished or undone). Idempotent. */
  remove(): Promise<void>;
}

function journalHandle(path: string, doc: JournalDocument): Journal {
  let queue: Promise<void> = Promise.resolve();
  let removed = false;
  const write = (): Promise<void> => writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`);
  return {
    path,
    document: doc,
    record(step: JournalStep): Promise<void> {
      if (removed) return Promise.reject(new StoreError(`journal ${path} was removed`, 'KVMBAK_JOURNAL', path));
      if (!STEPS.includes(step.step)) {
        return Promise.reject(new StoreError(`unknown journal step ${JSON.stringify(step.step)}`, 'KVMBAK_JOURNAL', path));
      }
      // Writes are serialized so the file always ends with the latest step.
      const next = queue.then(() => {
        doc.entries.push({ ...step, at: new Date().toISOString() });
        return write();
      });
      queue = next.catch(() => undefined);
      return next;
    },
    async remove(): Promise<void> {
      if (removed) return;
      removed = true;
      await queue;
      try {
        await unlink(path);
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return;
        throw e;
      }
      await fsyncDir(dirname(path));
    },
  };
}

/**
 * Starts the journal of an operation writing `set` (file 0600). Throws
 * StoreError KVMBAK_JOURNAL when one exists already for that set.
 */
export async function openJournal(set: BackupSet, operation = 'backup'): Promise<Journal> {
  const path = join(set.dest, set.domain, journalFileName(set.id));
  if (
    await lstat(path).then(
      () => true,
      () => false,
    )
  ) {
    throw new StoreError(`a journal already exists for ${set.path}: ${path}; run kvmbak recover`, 'KVMBAK_JOURNAL', path);
  }
  const doc: JournalDocument = {
    format: JOURNAL_FORMAT,
    operation,
    domain: set.domain,
    setId: set.id,
    setPath: set.path,
    owner: processOwner(),
    entries: [],
  };
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`);
  return journalHandle(path, doc);
}

/** Parses a journal file's text; throws StoreError KVMBAK_JOURNAL naming what is wrong. */
export function parseJournal(text: string, path: string): JournalDocument {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    // not the parser's message: it quotes the text
    throw new StoreError(`journal ${path} is not valid JSON`, 'KVMBAK_JOURNAL', path, {
      cause: e,
    });
  }
  const bad = (what: string): StoreError => new StoreError(`journal ${path} is damaged: ${what}`, 'KVMBAK_JOURNAL', path);
  if (!isRecord(v)) throw bad('not an object');
  if (v.format !== JOURNAL_FORMAT) throw bad(`format is ${JSON.stringify(v.format)}, not ${JOURNAL_FORMAT}`);
  for (const key of ['operation', 'domain', 'setId', 'setPath'] as const) {
    if (typeof v[key] !== 'string') throw bad(`${key} is missing`);
  }
  if (!isProcessOwner(v.owner)) throw bad('owner is missing or incomplete');
  if (!Array.isArray(v.entries)) throw bad('entries is missing');
  const isStr = (x: unknown): boolean => typeof x === 'string';
  const isSnap = (x: unknown): boolean => isRecord(x) && isStr(x.vg) && isStr(x.lv) && isStr(x.name);
  v.entries.forEach((e, i) => {
    if (!isRecord(e) || typeof e.step !== 'string' || typeof e.at !== 'string') {
      throw bad(`entries[${i}] has no step or time`);
    }
    if (!(STEPS as readonly string[]).includes(e.step)) throw bad(`entries[${i}] has an unknown step ${JSON.stringify(e.step)}`);
    const ok =
      e.step === 'planned'
        ? isStr(e.mode) && isStr(e.setPath) && Array.isArray(e.snapshots) && e.snapshots.every(isSnap)
        : e.step === 'window-start'
          ? isStr(e.action) && (e.memoryFile === null || isStr(e.memoryFile))
          : e.step === 'saved'
            ? isStr(e.memoryFile)
            : e.step === 'snapshot-created'
              ? isSnap(e)
              : e.step === 'archived'
                ? isStr(e.target)
                : e.step === 'metadata-reserved' || e.step === 'metadata-released'
                  ? isStr(e.vg) && isStr(e.pool)
                  : true;
    if (!ok) throw bad(`entries[${i}] (${e.step}) is incomplete`);
  });
  return v as unknown as JournalDocument;
}

/** What a journal says about the state a run left behind. */
export interface JournalAssessment {
  lastStep: JournalStepName | null;
  /** The set was committed (only the journal's removal was missed). */
  committed: boolean;
  /** The run recorded a failure. */
  failed: boolean;
  /** 'untouched': the window never started (or needs no stop); 'held': the VM may be shut off, paused or frozen; 'resumed'. */
  vm: 'untouched' | 'held' | 'resumed';
  windowAction: WindowAction | null;
  /** The state file the VM was (or was being) saved to. */
  memoryFile: string | null;
  /** virDomainSave completed: memoryFile is a complete state. */
  memorySaved: boolean;
  /** Snapshots that may still exist (look them up by name and `kvmbak` tag before removing). */
  snapshots: JournalSnapshot[];
  /** The set folder may hold a partial set that must be deleted. */
  setPartial: boolean;
  archivedTargets: string[];
  /** Thin pools whose metadata snapshot the run reserved (or was reserving) and did not record released. */
  metadataReserved: { vg: string; pool: string }[];
  /** From the planned step. */
  mode: BackupMode | null;
  runTag: string | null;
}

/** Reads a journal's entries into what recover must do (pure). */
export function assessJournal(doc: JournalDocument): JournalAssessment {
  const a: JournalAssessment = {
    lastStep: null,
    committed: false,
    failed: false,
    vm: 'untouched',
    windowAction: null,
    memoryFile: null,
    memorySaved: false,
    snapshots: [],
    setPartial: true,
    archivedTargets: [],
    metadataReserved: [],
    mode: null,
    runTag: null,
  };
  for (const e of doc.entries) {
    a.lastStep = e.step;
    switch (e.step) {
      case 'planned':
        a.snapshots = e.snapshots.map((s) => ({ ...s }));
        a.mode = e.mode;
        a.runTag = e.runTag;
        break;
      case 'window-start':
        a.windowAction = e.action;
        a.memoryFile = e.memoryFile;
        if (e.action !== 'none') a.vm = 'held';
        break;
      case 'saved':
        a.memoryFile = e.memoryFile;
        a.memorySaved = true;
        break;
      case 'snapshot-created':
        if (!a.snapshots.some((s) => s.vg === e.vg && s.name === e.name)) {
          a.snapshots.push({ vg: e.vg, lv: e.lv, name: e.name });
        }
        break;
      case 'resumed':
        a.vm = 'resumed';
        break;
      case 'archived':
        a.archivedTargets.push(e.target);
        break;
      case 'metadata-reserved':
        if (!a.metadataReserved.some((p) => p.vg === e.vg && p.pool === e.pool)) a.metadataReserved.push({ vg: e.vg, pool: e.pool });
        break;
      case 'metadata-released':
        a.metadataReserved = a.metadataReserved.filter((p) => !(p.vg === e.vg && p.pool === e.pool));
        break;
      case 'snapshots-removed':
        a.snapshots = [];
        break;
      case 'committed':
        a.committed = true;
        a.setPartial = false;
        // The run's snapshots were removed before the commit, except the thin snapshots it kept
        // as bases for the next run: from here those belong to the committed set.
        a.snapshots = [];
        break;
      case 'failed':
        a.failed = true;
        break;
    }
  }
  return a;
}

/** A journal found under DEST. */
export interface JournalRecord {
  path: string;
  domain: string;
  setId: string;
  /** The parsed journal; absent when it is damaged (see error). */
  document?: JournalDocument;
  error?: string;
  /** Whether the run's process may still be running ('unknown': another host). Never touch an 'alive' run. */
  ownerStatus: OwnerStatus | null;
  assessment?: JournalAssessment;
}

/** Every journal under DEST (or DEST/DOMAIN), sorted by domain then set id: the input of `kvmbak recover`. */
export async function readJournals(dest: string, domain?: string): Promise<JournalRecord[]> {
  const root = await assertDest(dest);
  const out: JournalRecord[] = [];
  for (const d of await domainNames(root, domain)) {
    let names: string[];
    try {
      names = (await readdir(join(root, d))).sort();
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw e;
    }
    for (const name of names) {
      const setId = parseJournalFileName(name);
      if (setId === null) continue;
      out.push(await loadJournalRecord(join(root, d, name), d, setId));
    }
  }
  return out;
}

/** The largest journal read (a few steps per disk). */
const MAX_JOURNAL_BYTES = 4 * 1024 * 1024;

/** A journal's text: a regular file (never a link followed or a FIFO waited on), of sane size. */
export async function readJournalText(path: string): Promise<string> {
  try {
    return (await readRegularFile(path, MAX_JOURNAL_BYTES)).toString('utf8');
  } catch (e) {
    if (isNotRegularFileError(e)) throw new StoreError(`journal ${path} is ${e.kind}, not a regular file`, 'KVMBAK_JOURNAL', path, { cause: e });
    if (errnoCode(e) === 'KVMBAK_FILE_TOO_LARGE')
      throw new StoreError(`journal ${path} is too large to be a journal`, 'KVMBAK_JOURNAL', path, { cause: e });
    throw e;
  }
}

async function loadJournalRecord(path: string, domain: string, setId: string): Promise<JournalRecord> {
  try {
    const document = parseJournal(await readJournalText(path), path);
    return { path, domain, setId, document, ownerStatus: ownerStatus(document.owner), assessment: assessJournal(document) };
  } catch (e) {
    if (!(e instanceof StoreError)) throw e;
    return { path, domain, setId, error: e.message, ownerStatus: null };
  }
}

/**
 * Opens an interrupted run's journal to go on recording in it (recover).
 * Refuses (StoreError KVMBAK_JOURNAL) while its owner may still be running;
 * the current process becomes the owner, the old one is kept in previousOwners.
 */
export async function reopenJournal(path: string): Promise<Journal> {
  const doc = parseJournal(await readJournalText(path), path);
  const status = ownerStatus(doc.owner);
  if (status !== 'dead') {
    const where = status === 'unknown' ? ` on host ${doc.owner.host}` : '';
    throw new StoreError(
      `journal ${path} belongs to kvmbak pid ${doc.owner.pid}${where}, which may still be running; wait for it to finish`,
      'KVMBAK_JOURNAL',
      path,
    );
  }
  doc.previousOwners = [...(doc.previousOwners ?? []), doc.owner];
  doc.owner = processOwner();
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`);
  return journalHandle(path, doc);
}
