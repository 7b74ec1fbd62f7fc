import type { Argv, CommandModule } from 'yargs';
import { type SetVerifyResult, type VerifySetsResult, verifySets } from '../../src/index.js';
import { createLabelledProgress, formatBytes, formatSeconds } from '../render/index.js';
import { type GlobalArgs } from './restore.js';
import { runCancellable } from '../signals.js';

interface VerifyArgs extends GlobalArgs {
  set: string[];
  quick?: boolean;
  threads?: number;
}

const STATUS_WORD: Record<string, string> = {
  ok: 'ok',
  missing: 'MISSING',
  'not-a-file': 'NOT A FILE',
  'size-mismatch': 'WRONG SIZE',
  'checksum-mismatch': 'DAMAGED',
  extra: 'EXTRA',
  unfinished: 'UNFINISHED',
};

/** One line per file: file level, and for images what decompressing found, for chunk lists what checking their chunks found. */
export function formatVerify(r: SetVerifyResult): string[] {
  const quick = r.quick ? (r.chunkLists.length > 0 ? ', quick: file checksums, chunks present' : ', quick: file checksums only') : '';
  const lines = [`verify ${r.path} (${r.domain}, ${r.createdAt}, mode ${r.mode}${quick})`];
  const width = Math.max(...r.files.map((f) => f.file.length));
  for (const f of r.files) {
    const img = r.images.find((i) => i.file === f.file);
    const list = r.chunkLists.find((l) => l.file === f.file);
    let status = STATUS_WORD[f.status] ?? f.status;
    let detail = '';
    if (list !== undefined && list.status !== 'not-checked') {
      const chunks = `${list.chunks} chunk${list.chunks === 1 ? '' : 's'}, ${formatBytes(list.rawBytes)} raw`;
      if (list.status === 'ok') detail = `${chunks}, ${r.quick ? 'all present' : 'all sha256 ok'}`;
      else if (list.status === 'damaged') {
        status = 'DAMAGED';
        detail = `${chunks}, missing or damaged chunks (see below)`;
      } else {
        status = 'UNUSABLE';
        detail = 'the chunk list cannot be used (see below)';
      }
    } else if (img !== undefined && img.status !== 'not-checked') {
      if (img.status === 'ok') detail = `${formatBytes(img.expectedRawBytes)} raw, sha256 ok`;
      else if (img.status === 'raw-mismatch') {
        status = 'DAMAGED';
        detail = 'decompressed data differs from the backup';
      } else if (img.status === 'damaged') {
        status = 'DAMAGED';
        detail = img.code === 'KVMBAK_ARCHIVE_TRUNCATED' ? 'truncated' : 'corrupt gzip data';
      }
    } else if (f.status === 'ok' && f.actualSha256 !== null) {
      detail = 'sha256 ok';
    }
    lines.push(`  ${status.padEnd(10)} ${f.file.padEnd(width)}${detail ? `  ${detail}` : ''}`);
  }
  for (const p of r.problems) lines.push(`  problem: ${p}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  lines.push(
    r.ok
      ? `result: ok, ${r.files.length} files, ${formatBytes(r.bytesRead)} read in ${formatSeconds(r.seconds)}`
      : `result: FAILED, ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`,
  );
  return lines;
}

/** What the chunk check did, one line per chunk store. */
function storeLines(r: VerifySetsResult): string[] {
  return r.stores.map(
    (s) =>
      `  chunks: ${s.chunksChecked} distinct in ${s.store}` +
      (r.quick ? ' checked present' : `, ${formatBytes(s.bytesChecked)} raw decompressed and checked against their ids`),
  );
}

/** One set (formatVerify) with the chunk check's line before the result. */
export function formatVerifyOne(r: VerifySetsResult): string[] {
  const lines = formatVerify(r.sets[0]!);
  lines.splice(lines.length - 1, 0, ...storeLines(r));
  return lines;
}

/** Several sets: each as formatVerify, then one line for all (each distinct chunk was checked once). */
export function formatVerifySets(r: VerifySetsResult): string[] {
  const lines = r.sets.flatMap((s) => formatVerify(s));
  lines.push(...storeLines(r));
  const chunks = r.stores.reduce((n, s) => n + s.chunksChecked, 0);
  const failed = r.sets.filter((s) => !s.ok).length;
  lines.push(
    r.ok
      ? `all ok: ${r.sets.length} sets${chunks > 0 ? `, ${chunks} distinct chunks checked` : ''} in ${formatSeconds(r.seconds)}`
      : `FAILED: ${failed} of ${r.sets.length} sets` +
          (r.chunkProblems.length > 0 ? `, ${r.chunkProblems.length} missing or damaged chunk${r.chunkProblems.length === 1 ? '' : 's'}` : ''),
  );
  return lines;
}

export const verifyCommand: CommandModule<GlobalArgs, VerifyArgs> = {
  command: 'verify <set..>',
  describe:
    'Check backup sets: every file against its checksum, every image decompressed and its data checksum, every chunk against its id (a chunk shared by several sets once)',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('set', {
        type: 'string',
        array: true,
        demandOption: true,
        describe: 'set folders, DEST/DOMAIN/YYYYMMDDTHHMMSSZ (several share the chunk check)',
      })
      .option('quick', { type: 'boolean', describe: 'check the file checksums and that every chunk is there (no decompression)' })
      .option('threads', { type: 'number', describe: 'decompression threads (default: one per CPU)' }) as unknown as Argv<VerifyArgs>,
  handler: async (argv) => {
    const bar = createLabelledProgress({ json: argv.json, quiet: argv.quiet });
    const r: VerifySetsResult = await runCancellable(
      (signal) =>
        verifySets(argv.set, {
          quick: argv.quick ?? false,
          ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
          signal,
          onProgress: (p) =>
            bar.update(`${p.phase === 'hash' ? 'decompress' : p.phase === 'chunks' ? 'chunks of' : 'checksum'} ${p.file}`, {
              phase: p.phase,
              bytesDone: p.bytesDone,
              ...(p.phase === 'chunks' ? { note: `${p.chunksDone} chunks` } : { bytesTotal: p.bytesTotal }),
              ...(p.rate !== undefined ? { rate: p.rate } : {}),
            }),
        }),
      { cleanup: bar.done },
    );
    const single = r.sets.length === 1 ? r.sets[0]! : null;
    if (argv.json) {
      const doc = single !== null ? { command: 'verify', ...single } : { command: 'verify', ...r };
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    } else process.stdout.write(`${(single !== null ? formatVerifyOne(r) : formatVerifySets(r)).join('\n')}\n`);
    if (!r.ok) {
      const problems = [...new Set(r.sets.flatMap((s) => s.problems))];
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
      process.stderr.write(`kvmbak: verify failed: ${problems[0]}${more}\n`);
      process.exitCode = 1;
    }
  },
};
