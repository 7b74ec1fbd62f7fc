import type { Argv, CommandModule } from 'yargs';
import { type ChunkStoreSummary, type SetInfo, chunkStoreSummary, listSets } from '../../src/index.js';
import { formatBytes } from '../render/index.js';
import { type GlobalArgs } from './restore.js';
import { asUsage } from '../errors.js';

interface ListArgs extends GlobalArgs {
  dest: string;
  domain?: string;
}

/** '2026-11-26 03:15:00Z' */
const when = (t: Date): string =>
  t
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d{3}Z$/, 'Z');

/** What the journal next to an incomplete set says about its run. */
function journalNote(s: SetInfo): string {
  if (s.journal === undefined) return '';
  if (s.journalOwner === 'alive') return ' (in progress)';
  if (s.journalOwner === 'unknown') return ' (journal of a run on another host)';
  return ' (interrupted: run kvmbak recover)';
}

/**
 * A table, one line per set. SIZE: the set folder's data files (or all its files when it is not
 * complete); LOGICAL: the raw bytes it stands for (disks + memory state); ADDED: the bytes its
 * backup added to the destination (for parts in the chunk store, only the chunks the store lacked).
 */
export function formatSets(sets: readonly SetInfo[]): string[] {
  const rows = sets.map((s) => [
    s.domain,
    s.id,
    when(s.time),
    s.mode ?? '-',
    s.disks?.join(',') ?? '-',
    formatBytes(s.storedBytes ?? s.bytesOnDisk),
    s.logicalBytes !== undefined ? formatBytes(s.logicalBytes) : '-',
    s.addedBytes !== undefined ? formatBytes(s.addedBytes) : '-',
    s.status + journalNote(s),
  ]);
  const head = ['DOMAIN', 'SET', 'TIME', 'MODE', 'DISKS', 'SIZE', 'LOGICAL', 'ADDED', 'STATUS'];
  const right = new Set([5, 6, 7]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)];
}

/** The destination's chunk store against the data its sets keep there (one line). */
export function formatStore(s: ChunkStoreSummary): string {
  const ratio = s.ratio === null ? '' : `, deduplication ${s.ratio.toFixed(1)}x`;
  return (
    `chunk store ${s.path}: ${formatBytes(s.bytes)} in ${s.chunks} chunk${s.chunks === 1 ? '' : 's'} ` +
    `for ${formatBytes(s.logicalBytes)} of data in ${s.sets} set${s.sets === 1 ? '' : 's'}${ratio}`
  );
}

export const listCommand: CommandModule<GlobalArgs, ListArgs> = {
  command: 'list <dest> [domain]',
  describe: 'List the backup sets in a destination (one line per set) and what its chunk store holds',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('dest', { type: 'string', demandOption: true, describe: 'the backup destination folder' })
      .positional('domain', { type: 'string', describe: 'only the sets of this domain' }) as unknown as Argv<ListArgs>,
  handler: async (argv) => {
    let sets: SetInfo[];
    try {
      sets = await listSets(argv.dest, argv.domain);
    } catch (e) {
      throw asUsage(e);
    }
    // destination-wide: the store is shared by every domain's sets
    const store = await chunkStoreSummary(argv.dest, argv.domain === undefined ? { sets } : {});
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, command: 'list', dest: argv.dest, sets, store }, null, 2)}\n`);
      return;
    }
    if (sets.length === 0) {
      process.stdout.write(`no backup sets in ${argv.dest}${argv.domain !== undefined ? ` for ${argv.domain}` : ''}\n`);
    } else {
      process.stdout.write(`${formatSets(sets).join('\n')}\n`);
    }
    if (store !== null) process.stdout.write(`${formatStore(store)}\n`);
    // one line per set that could not be read; the others are listed all the same
    for (const s of sets) if (s.status === 'unreadable') process.stderr.write(`kvmbak: warning: ${s.domain}/${s.id}: ${s.error ?? 'unreadable'}\n`);
  },
};
