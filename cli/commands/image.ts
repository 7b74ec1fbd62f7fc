import { readFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { packImage, unpackImage, type ImageIndex, type PackResult, type UnpackResult } from '../../src/index.js';
import { UsageError } from '../errors.js';
import { createProgressRenderer, formatBytes, formatRate, formatSeconds } from '../render/index.js';
import { runCancellable } from '../signals.js';

interface GlobalArgs {
  json?: boolean;
  quiet?: boolean;
}

interface PackArgs extends GlobalArgs {
  source: string;
  dest: string;
  level: number;
  threads?: number;
  'chunk-size': string;
  force?: boolean;
}

interface UnpackArgs extends GlobalArgs {
  image: string;
  dest: string;
  threads?: number;
  sha256?: string;
  size?: number;
  index?: string;
  force?: boolean;
}

function pct(part: number, whole: number): string {
  return whole > 0 ? `${((part / whole) * 100).toFixed(1)}%` : '-';
}

async function readIndex(path: string): Promise<ImageIndex & { sha256?: string }> {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`--index ${path}: cannot read it as JSON (${(e as Error).message}); give the output of 'kvmbak image pack --json'`);
  }
  const { chunkSize, bytes, members, storedBytes, sha256 } = doc;
  if (typeof chunkSize !== 'number' || typeof bytes !== 'number' || !Array.isArray(members)) {
    throw new UsageError(`--index ${path}: no chunkSize/bytes/members in it; give the output of 'kvmbak image pack --json'`);
  }
  return {
    chunkSize,
    bytes,
    members: members as number[],
    ...(typeof storedBytes === 'number' ? { storedBytes } : {}),
    ...(typeof sha256 === 'string' ? { sha256 } : {}),
  };
}

const pack: CommandModule<GlobalArgs, PackArgs> = {
  command: 'pack <source> <dest>',
  describe: 'Compress a block device or file into a multi-member gzip image (zcat restores it)',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('source', { type: 'string', demandOption: true, describe: 'block device or file to read' })
      .positional('dest', { type: 'string', demandOption: true, describe: 'image to write (e.g. disk.img.gz)' })
      .option('level', { type: 'number', default: 3, describe: 'gzip level 1-9' })
      .option('threads', { type: 'number', describe: 'compression threads (default: one per CPU)' })
      .option('chunk-size', { type: 'string', default: '4M', describe: 'raw bytes per gzip member, multiple of 4K' })
      .option('force', { alias: 'f', type: 'boolean', describe: 'replace DEST if it exists' }) as unknown as Argv<PackArgs>,
  handler: async (argv) => {
    const progress = createProgressRenderer({ label: 'pack', json: argv.json, quiet: argv.quiet });
    const r: PackResult = await runCancellable(
      (signal) =>
        packImage(argv.source, argv.dest, {
          level: argv.level,
          chunkSize: argv['chunk-size'],
          ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
          overwrite: argv.force ?? false,
          signal,
          onProgress: progress.update,
        }),
      { cleanup: progress.done },
    );
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, command: 'image pack', source: argv.source, dest: argv.dest, ...r }, null, 2)}\n`);
      return;
    }
    process.stdout.write(
      [
        `packed ${argv.source} (${formatBytes(r.bytes)}) into ${argv.dest} (${formatBytes(r.storedBytes)}, ${pct(r.storedBytes, r.bytes)}) ` +
          `in ${formatSeconds(r.seconds)}, ${formatRate(r.bytes / Math.max(r.seconds, 1e-6))}`,
        `  members      ${r.members.length} of ${formatBytes(r.chunkSize)}, level ${r.level}; ${r.zeroChunks} all-zero, ${r.storedChunks} stored (incompressible)`,
        `  sha256       ${r.sha256}  (raw data)`,
        `  file sha256  ${r.fileSha256}  (${argv.dest})`,
        '',
      ].join('\n'),
    );
  },
};

const unpack: CommandModule<GlobalArgs, UnpackArgs> = {
  command: 'unpack <image> <dest>',
  describe: 'Decompress a gzip image onto a block device (in place) or into a new file',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('image', { type: 'string', demandOption: true, describe: 'gzip image (any gzip file works)' })
      .positional('dest', { type: 'string', demandOption: true, describe: 'block device, or a file to create' })
      .option('threads', { type: 'number', describe: 'decompression threads (default: one per CPU)' })
      .option('sha256', { type: 'string', describe: 'fail unless the raw data has this sha256' })
      .option('size', { type: 'number', describe: 'raw bytes the image must hold (checks a device is big enough first)' })
      .option('index', {
        type: 'string',
        describe: "JSON from 'kvmbak image pack --json': decompress in parallel, check sizes and sha256 first",
      })
      .option('force', { alias: 'f', type: 'boolean', describe: 'replace DEST if it is an existing file' }) as unknown as Argv<UnpackArgs>,
  handler: async (argv) => {
    const index = argv.index === undefined ? undefined : await readIndex(argv.index);
    const expectSha256 = argv.sha256 ?? index?.sha256;
    if (index === undefined && argv.size === undefined && expectSha256 === undefined && !argv.quiet) {
      // gzip members are self-contained: a copy cut exactly between two of them is itself valid gzip
      const note = 'without --index, --size or --sha256, an image cut exactly at a gzip member boundary cannot be told from a complete one';
      process.stderr.write(argv.json ? `${JSON.stringify({ type: 'note', message: note })}\n` : `kvmbak: note: ${note}\n`);
    }
    const progress = createProgressRenderer({ label: 'unpack', json: argv.json, quiet: argv.quiet });
    const r: UnpackResult = await runCancellable(
      (signal) =>
        unpackImage(argv.image, argv.dest, {
          ...(index ? { index } : {}),
          ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
          ...(expectSha256 !== undefined ? { expectSha256 } : {}),
          ...(argv.size !== undefined ? { expectBytes: argv.size } : {}),
          overwrite: argv.force ?? false,
          signal,
          onProgress: progress.update,
        }),
      { cleanup: progress.done },
    );
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, command: 'image unpack', image: argv.image, dest: argv.dest, ...r }, null, 2)}\n`);
      return;
    }
    process.stdout.write(
      [
        `unpacked ${argv.image} (${formatBytes(r.storedBytes)}) onto ${argv.dest} (${formatBytes(r.bytes)}${r.destKind === 'block' ? ', block device' : ''}) ` +
          `in ${formatSeconds(r.seconds)}, ${formatRate(r.bytes / Math.max(r.seconds, 1e-6))}, ${r.mode === 'parallel' ? 'parallel' : 'streamed'}`,
        `  sha256       ${r.sha256}  (raw data${r.verified ? ', verified' : ''})`,
        '',
      ].join('\n'),
    );
  },
};

/** `kvmbak image pack|unpack`: the disk-image engine on its own, for manual work and scripts. */
export const imageCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'image',
  describe: 'Pack a disk into a gzip image or unpack one (the engine behind backup/restore)',
  builder: (y: Argv<GlobalArgs>) =>
    y.command(pack).command(unpack).demandCommand(1, "Name an action: 'kvmbak image pack' or 'kvmbak image unpack'.") as unknown as Argv<GlobalArgs>,
  handler: () => undefined,
};
