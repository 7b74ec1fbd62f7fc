import type { Argv, CommandModule } from 'yargs';
import { type SetVerifyResult, verifySet } from '../../src/index.js';
import { createLabelledProgress, formatBytes, formatSeconds } from '../render/index.js';
import { type GlobalArgs } from './restore.js';
import { runCancellable } from '../signals.js';

interface VerifyArgs extends GlobalArgs {
  set: string;
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

/** One line per file: file level, and for images what decompressing found. */
export function formatVerify(r: SetVerifyResult): string[] {
  const lines = [`verify ${r.path} (${r.domain}, ${r.createdAt}, mode ${r.mode}${r.quick ? ', quick: file checksums only' : ''})`];
  const width = Math.max(...r.files.map((f) => f.file.length));
  for (const f of r.files) {
    const img = r.images.find((i) => i.file === f.file);
    let status = STATUS_WORD[f.status] ?? f.status;
    let detail = '';
    if (img !== undefined && img.status !== 'not-checked') {
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

export const verifyCommand: CommandModule<GlobalArgs, VerifyArgs> = {
  command: 'verify <set>',
  describe: 'Check a backup set: every file against its checksum, every image decompressed and its data checksum',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('set', { type: 'string', demandOption: true, describe: 'the set folder, DEST/DOMAIN/YYYYMMDDTHHMMSSZ' })
      .option('quick', { type: 'boolean', describe: 'check the file checksums only (no decompression)' })
      .option('threads', { type: 'number', describe: 'decompression threads (default: one per CPU)' }) as unknown as Argv<VerifyArgs>,
  handler: async (argv) => {
    const bar = createLabelledProgress({ json: argv.json, quiet: argv.quiet });
    const r: SetVerifyResult = await runCancellable(
      (signal) =>
        verifySet(argv.set, {
          quick: argv.quick ?? false,
          ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
          signal,
          onProgress: (p) =>
            bar.update(`${p.phase === 'hash' ? 'decompress' : 'checksum'} ${p.file}`, {
              phase: p.phase,
              bytesDone: p.bytesDone,
              bytesTotal: p.bytesTotal,
              ...(p.rate !== undefined ? { rate: p.rate } : {}),
            }),
        }),
      { cleanup: bar.done },
    );
    if (argv.json) process.stdout.write(`${JSON.stringify({ command: 'verify', ...r }, null, 2)}\n`);
    else process.stdout.write(`${formatVerify(r).join('\n')}\n`);
    if (!r.ok) {
      const more = r.problems.length > 1 ? ` (and ${r.problems.length - 1} more problem${r.problems.length > 2 ? 's' : ''})` : '';
      process.stderr.write(`kvmbak: verify failed: ${r.problems[0]}${more}\n`);
      process.exitCode = 1;
    }
  },
};
