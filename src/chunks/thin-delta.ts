/**
 * `thin_delta` (thin-provisioning-tools 0.9, Debian 12) output → the 4 MiB chunks a thin LV changed.
 *
 * How a backup drives it (the captures in test/fixtures/thin were made exactly so, by
 * test/e2e/guest/capture-thin-delta.sh):
 *
 *     dmsetup message VG-POOL-tpool 0 reserve_metadata_snap     # a consistent view of the pool's metadata
 *     thin_delta -m --thin1 BASE_ID --thin2 NEW_ID /dev/mapper/VG-POOL_tmeta
 *     dmsetup message VG-POOL-tpool 0 release_metadata_snap     # always (in a finally): a held snapshot
 *                                                               # pins metadata blocks until released
 *
 * BASE_ID/NEW_ID are the pool's device ids of the two thin LVs (`lvs -o thin_id`): the previous run's
 * thin snapshot (left) and this run's (right). While the metadata snapshot is held, `dmsetup status`
 * of the pool shows its block number in the "held metadata root" field (`-` when none), and a second
 * reserve fails with EBUSY. `-m` without a reserved snapshot fails ("no current metadata snap").
 *
 * The output (units: pool data blocks of data_block_size 512-byte sectors):
 *
 *     <superblock uuid="" time="1" transaction="2" data_block_size="128" nr_data_blocks="0">
 *       <diff left="2" right="1">
 *         <same begin="0" length="128"/>
 *         <different begin="128" length="64"/>       both mapped, to different data blocks: rewritten
 *         <left_only begin="256" length="64"/>        mapped in the base only: discarded since (reads zeros now)
 *         <right_only begin="768" length="64"/>       mapped in the new one only: written since
 *       </diff>
 *     </superblock>
 *
 * With --verbose each kind is a container of `<range begin=… data_begin=… length=…/>` (different:
 * left_data_begin/right_data_begin). Blocks unmapped in both are not listed: they read as zeros in
 * both. Both forms are parsed; anything else is refused with its line number (a backup then falls
 * back to reading the whole disk).
 */
import { ChunkError } from './errors.js';
import { CHUNK_SIZE } from './codec.js';

export type ThinDeltaKind = 'same' | 'different' | 'left_only' | 'right_only';

/** One run of pool data blocks of the same kind, in the thin LVs' address space. */
export interface ThinDeltaRange {
  kind: ThinDeltaKind;
  /** First block (units of dataBlockBytes). */
  begin: number;
  /** Number of blocks. */
  length: number;
}

export interface ThinDelta {
  /** Pool data block (allocation unit) in 512-byte sectors, and in bytes. */
  dataBlockSectors: number;
  dataBlockBytes: number;
  transaction: number;
  time: number;
  /** Block of the metadata snapshot the delta was read from, when the output names it. */
  metadataSnap: number | undefined;
  /** Device ids compared: --thin1 (left, the base) and --thin2 (right, the new state). */
  left: number;
  right: number;
  /** In ascending order, not overlapping. */
  ranges: ThinDeltaRange[];
}

const KINDS = new Set<string>(['same', 'different', 'left_only', 'right_only']);
const TAG = /<(\/?)([a-z_]+)((?:\s+[a-z_]+="[^"<>]*")*)\s*(\/?)>/y;
const ATTR = /([a-z_]+)="([^"]*)"/g;

function fail(line: number, what: string): never {
  throw new ChunkError(`thin_delta output, line ${line}: ${what}`, 'KVMBAK_THIN_DELTA', { line });
}

function lineAt(text: string, pos: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < pos; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function attrs(raw: string, line: number, allowed: readonly string[], required: readonly string[]): Map<string, number | string> {
  const out = new Map<string, number | string>();
  for (const m of raw.matchAll(ATTR)) {
    const [, key, value] = m;
    if (!allowed.includes(key)) fail(line, `unexpected attribute ${key}`);
    if (out.has(key)) fail(line, `attribute ${key} given twice`);
    if (key === 'uuid') {
      out.set(key, value);
      continue;
    }
    if (!/^(0|[1-9][0-9]{0,15})$/.test(value) || !Number.isSafeInteger(Number(value)))
      fail(line, `${key}="${value}" is not a whole number below 2^53`);
    out.set(key, Number(value));
  }
  for (const key of required) if (!out.has(key)) fail(line, `attribute ${key} is missing`);
  return out;
}

/** Parses the whole output of one `thin_delta` run (plain or --verbose). */
export function parseThinDelta(xml: string): ThinDelta {
  let pos = 0;
  const tags: { close: boolean; name: string; attrs: string; selfClose: boolean; line: number }[] = [];
  while (pos < xml.length) {
    const ws = /\s*/y;
    ws.lastIndex = pos;
    ws.exec(xml);
    pos = ws.lastIndex;
    if (pos >= xml.length) break;
    TAG.lastIndex = pos;
    const m = TAG.exec(xml);
    if (!m) fail(lineAt(xml, pos), `expected an element, found ${JSON.stringify(xml.slice(pos, pos + 40))}`);
    tags.push({ close: m[1] === '/', name: m[2], attrs: m[3], selfClose: m[4] === '/', line: lineAt(xml, pos) });
    pos = TAG.lastIndex;
  }
  let i = 0;
  const next = (): (typeof tags)[number] => {
    const t = tags[i++];
    if (!t) fail(lineAt(xml, xml.length), 'the output ends early (truncated?)');
    return t;
  };
  const sb = next();
  if (sb.close || sb.selfClose || sb.name !== 'superblock') fail(sb.line, `expected <superblock>, found <${sb.close ? '/' : ''}${sb.name}>`);
  const sa = attrs(
    sb.attrs,
    sb.line,
    ['uuid', 'time', 'transaction', 'data_block_size', 'nr_data_blocks', 'metadata_snap'],
    ['time', 'transaction', 'data_block_size'],
  );
  const dataBlockSectors = sa.get('data_block_size') as number;
  // dm-thin allows 64 KiB to 1 GiB, in multiples of 64 KiB.
  if (dataBlockSectors < 128 || dataBlockSectors > 2097152 || dataBlockSectors % 128 !== 0)
    fail(sb.line, `data_block_size ${dataBlockSectors} sectors is not a thin pool chunk size (64 KiB to 1 GiB, multiple of 64 KiB)`);
  const diff = next();
  if (diff.close || diff.selfClose || diff.name !== 'diff') fail(diff.line, `expected <diff>, found <${diff.close ? '/' : ''}${diff.name}>`);
  const da = attrs(diff.attrs, diff.line, ['left', 'right'], ['left', 'right']);

  const ranges: ThinDeltaRange[] = [];
  let end = 0;
  const add = (kind: ThinDeltaKind, a: Map<string, number | string>, line: number): void => {
    const begin = a.get('begin') as number;
    const length = a.get('length') as number;
    if (length === 0) fail(line, 'a range of length 0');
    if (!Number.isSafeInteger(begin + length) || !Number.isSafeInteger((begin + length) * dataBlockSectors * 512))
      fail(line, 'range beyond 2^53 bytes');
    if (begin < end) fail(line, `range at block ${begin} overlaps or precedes the previous one (ending at ${end})`);
    end = begin + length;
    const last = ranges[ranges.length - 1];
    if (last && last.kind === kind && last.begin + last.length === begin) last.length += length;
    else ranges.push({ kind, begin, length });
  };
  for (;;) {
    const t = next();
    if (t.close) {
      if (t.name !== 'diff') fail(t.line, `expected </diff>, found </${t.name}>`);
      break;
    }
    if (!KINDS.has(t.name)) fail(t.line, `unexpected element <${t.name}>`);
    const kind = t.name as ThinDeltaKind;
    if (t.selfClose) {
      add(kind, attrs(t.attrs, t.line, ['begin', 'length'], ['begin', 'length']), t.line);
      continue;
    }
    if (t.attrs.trim() !== '') fail(t.line, `<${kind}> with attributes must be self-closing`);
    for (;;) {
      const r = next();
      if (r.close) {
        if (r.name !== kind) fail(r.line, `expected </${kind}>, found </${r.name}>`);
        break;
      }
      if (r.name !== 'range' || !r.selfClose) fail(r.line, `expected <range/> inside <${kind}>, found <${r.name}>`);
      const allowed = kind === 'different' ? ['begin', 'left_data_begin', 'right_data_begin', 'length'] : ['begin', 'data_begin', 'length'];
      add(kind, attrs(r.attrs, r.line, allowed, allowed), r.line);
    }
  }
  const endSb = next();
  if (!endSb.close || endSb.name !== 'superblock') fail(endSb.line, `expected </superblock>, found <${endSb.close ? '/' : ''}${endSb.name}>`);
  if (i < tags.length) fail(tags[i].line, 'more output after </superblock>');
  return {
    dataBlockSectors,
    dataBlockBytes: dataBlockSectors * 512,
    transaction: sa.get('transaction') as number,
    time: sa.get('time') as number,
    metadataSnap: sa.get('metadata_snap') as number | undefined,
    left: da.get('left') as number,
    right: da.get('right') as number,
    ranges,
  };
}

export interface ChangedChunksOptions {
  /** Bytes per chunk (default 4 MiB). */
  chunkSize?: number;
  /** Bytes of the disk: a changed range beyond it is refused (the delta is then not this disk's). */
  diskSize?: number;
}

/**
 * The indexes (ascending, each once) of the chunks that differ between left and right: every chunk
 * a `different`, `left_only` or `right_only` range touches, even partly.
 */
export function changedChunks(delta: ThinDelta, options: ChangedChunksOptions = {}): number[] {
  const chunkSize = options.chunkSize ?? CHUNK_SIZE;
  const out: number[] = [];
  for (const r of delta.ranges) {
    if (r.kind === 'same') continue;
    const start = r.begin * delta.dataBlockBytes;
    const stop = (r.begin + r.length) * delta.dataBlockBytes;
    if (options.diskSize !== undefined && start >= options.diskSize) {
      throw new ChunkError(
        `thin_delta reports a ${r.kind} range at byte ${start}, beyond the ${options.diskSize}-byte disk: it does not describe this disk`,
        'KVMBAK_THIN_DELTA',
      );
    }
    const first = Math.floor(start / chunkSize);
    const last = Math.floor((Math.min(stop, options.diskSize ?? stop) - 1) / chunkSize);
    for (let c = Math.max(first, out.length ? out[out.length - 1] + 1 : 0); c <= last; c++) out.push(c);
  }
  return out;
}

/** The arguments of the thin_delta run a backup makes (metadata snapshot reserved beforehand). */
export function thinDeltaArgs(baseThinId: number, newThinId: number, metadataDevice: string): string[] {
  return ['-m', '--thin1', String(baseThinId), '--thin2', String(newThinId), metadataDevice];
}

/**
 * The held metadata root from `dmsetup status POOL-tpool` (thin-pool target): its block number
 * while a metadata snapshot is reserved, null when none is.
 */
export function heldMetadataRoot(statusLine: string): number | null {
  // <start> <len> thin-pool <transaction id> <used meta>/<total meta> <used data>/<total data> <held metadata root> ...
  const f = statusLine.trim().split(/\s+/);
  if (f[2] !== 'thin-pool' || f.length < 7) {
    throw new ChunkError(`not a thin-pool status line: ${JSON.stringify(statusLine.trim().slice(0, 80))}`, 'KVMBAK_THIN_DELTA');
  }
  if (f[6] === '-') return null;
  if (!/^[0-9]{1,16}$/.test(f[6]))
    throw new ChunkError(`thin-pool status: held metadata root ${JSON.stringify(f[6])} is not a number or "-"`, 'KVMBAK_THIN_DELTA');
  return Number(f[6]);
}
