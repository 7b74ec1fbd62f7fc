/**
 * The chunk list of a disk: which chunks, in order, rebuild it. A text file, so that standard tools
 * rebuild the disk without kvmbak:
 *
 *     # kvmbak chunk list 1
 *     # raw-size 10485760
 *     # chunk-size 4194304
 *     # chunks 3
 *     # raw-sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *     3b7a/3b7a0c…(64 hex digits)
 *     5f70/5f70bf…
 *     ab12/ab12e4…
 *
 * Header lines start with `#` (fixed order; raw-sha256 optional: the memory state's list has it, a
 * disk's has it only from older kvmbak); each other line is the path of one chunk file relative to
 * the store folder (DEST/.chunks): the first 4 hex digits of its id, a slash, the id. Every chunk is
 * raw-size/chunk-size bytes long except the last, which holds the rest. The chunk files are gzip
 * members, so their concatenation in list order is a gzip of the whole disk.
 *
 * The list is the disk's identity: each id is the sha256 of its raw chunk, so a list that is intact
 * (its own sha256 is in the set's SHA256SUMS) and chunks that decompress to their ids rebuild the
 * disk exactly, with no whole-disk hash. By hand (coreutils + gzip only; the test runs exactly these
 * lines): every chunk checked against its name, then the disk rebuilt, dd's byte count printed when
 * it is the list's raw size.
 *
 * <by-hand>
 *     cd /backup/.chunks
 *     set -o pipefail
 *     grep -v '^#' /backup/web01/20261126T031500Z/disks/vda.chunks | while read -r C; do zcat "$C" | sha256sum | grep -q "^${C#????/} " || { echo "damaged: $C"; exit 1; }; done
 *     grep -v '^#' /backup/web01/20261126T031500Z/disks/vda.chunks | xargs cat | zcat | LC_ALL=C dd of=/dev/vg0/web01-root bs=4M iflag=fullblock conv=fsync 2>&1 | grep "^$(sed -n 's/^# raw-size //p' /backup/web01/20261126T031500Z/disks/vda.chunks) byte"
 * </by-hand>
 *
 * Reading is strict and bounded: a list whose header is wrong, whose numbers are out of range, whose
 * lines are not chunk paths, or which has fewer or more lines than its header says (a truncated
 * copy) is refused with its path and line number. Lists are read as a stream, line by line: the
 * ids are kept as 32 bytes each (a 4 TiB disk's list holds 10^6 ids in 32 MiB).
 */
import { createReadStream } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChunkError } from './errors.js';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './codec.js';

export const CHUNK_LIST_MAGIC = '# kvmbak chunk list 1';
/** The longest line a valid list has (a header with a 16-digit number, or a chunk path), with room to spare. */
const MAX_LINE = 128;
/** At most 2^32 chunks per disk (16 PiB at 4 MiB): a number in a list beyond it is damage. */
export const MAX_CHUNKS = 2 ** 32;

/** A disk as a list of chunks. */
export interface ChunkList {
  /** Bytes of the whole raw disk. */
  readonly rawSize: number;
  /** Bytes per chunk (every chunk but the last, which holds the rest). */
  readonly chunkSize: number;
  /** sha256 of the whole raw disk, when it was computed. */
  readonly rawSha256: string | undefined;
  /** The chunk ids in disk order, 32 bytes each. */
  readonly ids: Buffer;
}

/** Number of chunks in a list. */
export function chunkCount(list: ChunkList): number {
  return list.ids.byteLength / 32;
}

/** The id (hex) of chunk `i`. */
export function chunkIdAt(list: ChunkList, i: number): string {
  return list.ids.toString('hex', i * 32, i * 32 + 32);
}

/** Raw bytes of chunk `i`. */
export function chunkLength(list: ChunkList, i: number): number {
  return Math.min(list.chunkSize, list.rawSize - i * list.chunkSize);
}

/** The path of a chunk file relative to the store folder: `abcd/abcd…`. */
export function chunkRelativePath(id: string): string {
  return `${id.slice(0, 4)}/${id}`;
}

export function expectedChunkCount(rawSize: number, chunkSize: number): number {
  return Math.ceil(rawSize / chunkSize);
}

/** The list's text, header and lines (for lists of any size prefer writeChunkList, which streams). */
export function* chunkListLines(list: ChunkList): Generator<string> {
  validateChunkList(list);
  yield CHUNK_LIST_MAGIC;
  yield `# raw-size ${list.rawSize}`;
  yield `# chunk-size ${list.chunkSize}`;
  yield `# chunks ${chunkCount(list)}`;
  if (list.rawSha256 !== undefined) yield `# raw-sha256 ${list.rawSha256}`;
  for (let i = 0; i < chunkCount(list); i++) yield chunkRelativePath(chunkIdAt(list, i));
}

export function formatChunkList(list: ChunkList): string {
  let s = '';
  for (const line of chunkListLines(list)) s += `${line}\n`;
  return s;
}

/** Checks a ChunkList value (not a file): sizes in bounds and the id count matching them. */
export function validateChunkList(list: ChunkList, path?: string): void {
  const where = path === undefined ? 'chunk list' : `chunk list ${path}`;
  const bad = (what: string): never => {
    throw new ChunkError(`${where}: ${what}`, 'KVMBAK_CHUNK_LIST', path === undefined ? {} : { path });
  };
  if (!Number.isSafeInteger(list.rawSize) || list.rawSize < 0) bad(`raw size ${list.rawSize} is not a byte count`);
  if (!isValidChunkSize(list.chunkSize)) bad(`chunk size ${list.chunkSize} is not a power of two from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}`);
  if (list.rawSha256 !== undefined && !/^[0-9a-f]{64}$/.test(list.rawSha256)) bad('raw sha256 is not 64 lowercase hex digits');
  if (list.ids.byteLength % 32 !== 0) bad('ids are not a whole number of 32-byte sha256 values');
  const want = expectedChunkCount(list.rawSize, list.chunkSize);
  if (want > MAX_CHUNKS) bad(`${want} chunks is more than the ${MAX_CHUNKS} a list may hold`);
  if (chunkCount(list) !== want) bad(`${chunkCount(list)} chunk ids for ${list.rawSize} bytes in chunks of ${list.chunkSize} (${want} expected)`);
}

function isValidChunkSize(n: number): boolean {
  return Number.isSafeInteger(n) && n >= MIN_CHUNK_SIZE && n <= MAX_CHUNK_SIZE && (n & (n - 1)) === 0;
}

/**
 * Writes a list atomically: a temporary name in the same folder (exclusive), fsync, rename, folder
 * fsync; mode 0600. Streams the lines, so a list of 10^6 chunks never exists as one string.
 */
export async function writeChunkList(path: string, list: ChunkList): Promise<void> {
  validateChunkList(list, path);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    let buf = '';
    for (const line of chunkListLines(list)) {
      buf += `${line}\n`;
      if (buf.length >= 1 << 20) {
        await fh.write(buf);
        buf = '';
      }
    }
    if (buf) await fh.write(buf);
    await fh.sync();
    await fh.close();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

interface Header {
  rawSize: number;
  chunkSize: number;
  count: number;
  rawSha256: string | undefined;
}

const NUMBER = /^(0|[1-9][0-9]{0,15})$/;
const PATH_LINE = /^([0-9a-f]{4})\/([0-9a-f]{64})$/;

/**
 * Parses a list line by line. push() returns the id (hex) for a chunk line, null for a header line;
 * end() checks that nothing is missing.
 */
class ChunkListParser {
  private lineNo = 0;
  private header: Partial<Header> & { step: number } = { step: 0 };
  private seen = 0;

  constructor(private readonly path: string | undefined) {}

  private fail(what: string, line = this.lineNo): never {
    const where = this.path === undefined ? 'chunk list' : `chunk list ${this.path}`;
    throw new ChunkError(`${where}, line ${line}: ${what}`, 'KVMBAK_CHUNK_LIST', { ...(this.path === undefined ? {} : { path: this.path }), line });
  }

  private number(line: string, key: string): number {
    const m = line.startsWith(`# ${key} `) ? line.slice(key.length + 3) : undefined;
    if (m === undefined) this.fail(`expected "# ${key} N", found ${JSON.stringify(line)}`);
    if (!NUMBER.test(m) || !Number.isSafeInteger(Number(m))) this.fail(`${key} ${JSON.stringify(m)} is not a whole number below 2^53`);
    return Number(m);
  }

  get complete(): Header | undefined {
    return this.header.step >= 4 ? (this.header as Header) : undefined;
  }

  push(line: string): string | null {
    this.lineNo++;
    const h = this.header;
    if (h.step === 0) {
      if (line !== CHUNK_LIST_MAGIC) {
        if (line.startsWith('# kvmbak chunk list '))
          this.fail(`format ${JSON.stringify(line.slice(20))} is not one this kvmbak reads (1): written by a newer kvmbak?`);
        this.fail('not a kvmbak chunk list (the first line must be "# kvmbak chunk list 1")');
      }
      h.step = 1;
      return null;
    }
    if (h.step === 1) {
      h.rawSize = this.number(line, 'raw-size');
      h.step = 2;
      return null;
    }
    if (h.step === 2) {
      h.chunkSize = this.number(line, 'chunk-size');
      if (!isValidChunkSize(h.chunkSize)) this.fail(`chunk-size ${h.chunkSize} is not a power of two from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}`);
      h.step = 3;
      return null;
    }
    if (h.step === 3) {
      h.count = this.number(line, 'chunks');
      const want = expectedChunkCount(h.rawSize as number, h.chunkSize as number);
      if (want > MAX_CHUNKS) this.fail(`raw-size ${h.rawSize} needs ${want} chunks, more than the ${MAX_CHUNKS} a list may hold`);
      if (h.count !== want) this.fail(`chunks ${h.count} does not match raw-size ${h.rawSize} / chunk-size ${h.chunkSize} (${want})`);
      h.step = 4;
      return null;
    }
    if (h.step === 4 && this.seen === 0 && line.startsWith('# ')) {
      if (!line.startsWith('# raw-sha256 ')) this.fail(`unexpected header line ${JSON.stringify(line)}`);
      const hex = line.slice(13);
      if (!/^[0-9a-f]{64}$/.test(hex)) this.fail('raw-sha256 is not 64 lowercase hex digits');
      if (h.rawSha256 !== undefined) this.fail('raw-sha256 given twice');
      h.rawSha256 = hex;
      return null;
    }
    const m = PATH_LINE.exec(line);
    if (!m || !m[2].startsWith(m[1])) this.fail(`expected a chunk path "abcd/abcd…(64 hex digits)", found ${JSON.stringify(line.slice(0, 80))}`);
    if (this.seen >= (h.count as number)) this.fail(`more chunk lines than the ${h.count} the header declares`);
    this.seen++;
    return m[2];
  }

  end(trailing: string): Header {
    if (trailing.length > 0) this.fail('the last line has no newline: the list is truncated', this.lineNo + 1);
    const h = this.complete;
    if (!h) this.fail('the header is incomplete: the list is truncated', this.lineNo);
    if (this.seen !== h.count) this.fail(`${this.seen} chunk lines, the header declares ${h.count}: the list is truncated`, this.lineNo);
    return h;
  }
}

/** Lines of a file as a stream, bounded in length. */
async function* fileLines(path: string, parser: ChunkListParser, signal?: AbortSignal): AsyncGenerator<string, string> {
  let rest = '';
  const stream = createReadStream(path, { encoding: 'latin1', highWaterMark: 256 * 1024, signal });
  try {
    for await (const piece of stream as AsyncIterable<string>) {
      let text = rest + piece;
      let nl: number;
      let from = 0;
      while ((nl = text.indexOf('\n', from)) !== -1) {
        yield text.slice(from, nl);
        from = nl + 1;
      }
      text = text.slice(from);
      if (text.length > MAX_LINE) parser.push(text.slice(0, MAX_LINE)); // fails: no valid line is this long
      rest = text;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ChunkError(`chunk list ${path} does not exist`, 'KVMBAK_CHUNK_LIST', { path }, { cause: e });
    }
    throw e;
  }
  return rest;
}

/** Reads, checks and returns a whole list (ids packed, 32 bytes each). */
export async function readChunkList(path: string, signal?: AbortSignal): Promise<ChunkList> {
  const parser = new ChunkListParser(path);
  let ids: Buffer | undefined;
  let n = 0;
  const lines = fileLines(path, parser, signal);
  let r = await lines.next();
  while (!r.done) {
    const id = parser.push(r.value);
    if (id !== null) {
      if (!ids) ids = Buffer.alloc((parser.complete as Header).count * 32);
      ids.write(id, n * 32, 'hex');
      n++;
    }
    r = await lines.next();
  }
  const h = parser.end(r.value);
  return { rawSize: h.rawSize, chunkSize: h.chunkSize, rawSha256: h.rawSha256, ids: ids ?? Buffer.alloc(0) };
}

/** The ids of a list file in order, streamed (constant memory), after checking it as readChunkList does. */
export async function* iterateChunkListFile(path: string, signal?: AbortSignal): AsyncGenerator<string, void> {
  const parser = new ChunkListParser(path);
  const lines = fileLines(path, parser, signal);
  let r = await lines.next();
  while (!r.done) {
    const id = parser.push(r.value);
    if (id !== null) yield id;
    r = await lines.next();
  }
  parser.end(r.value);
}

/** Parses a list held in memory (same rules as readChunkList). */
export function parseChunkList(text: string, path?: string): ChunkList {
  const parser = new ChunkListParser(path);
  const lines = text.split('\n');
  const trailing = lines.pop() as string;
  let ids: Buffer | undefined;
  let n = 0;
  for (const line of lines) {
    if (line.length > MAX_LINE) parser.push(line.slice(0, MAX_LINE));
    const id = parser.push(line);
    if (id !== null) {
      if (!ids) ids = Buffer.alloc((parser.complete as Header).count * 32);
      ids.write(id, n * 32, 'hex');
      n++;
    }
  }
  const h = parser.end(trailing);
  return { rawSize: h.rawSize, chunkSize: h.chunkSize, rawSha256: h.rawSha256, ids: ids ?? Buffer.alloc(0) };
}
