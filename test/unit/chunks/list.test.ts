import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  chunkCount,
  chunkIdAt,
  chunkLength,
  formatChunkList,
  isChunkError,
  iterateChunkListFile,
  parseChunkList,
  readChunkList,
  validateChunkList,
  writeChunkList,
  type ChunkList,
} from '../../../src/index.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const id = (n: number): string => createHash('sha256').update(String(n)).digest('hex');

function sample(count: number, rawSize = count * 4 * MiB - 100): ChunkList {
  const ids = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) ids.write(id(i), i * 32, 'hex');
  return { rawSize, chunkSize: 4 * MiB, rawSha256: id(-1), ids };
}

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

describe('chunk list files', () => {
  it('writes the documented text and reads it back (file, stream and memory alike)', async () => {
    const list = sample(3);
    const text = formatChunkList(list);
    expect(text).toBe(
      [
        '# kvmbak chunk list 1',
        `# raw-size ${3 * 4 * MiB - 100}`,
        '# chunk-size 4194304',
        '# chunks 3',
        `# raw-sha256 ${id(-1)}`,
        `${id(0).slice(0, 4)}/${id(0)}`,
        `${id(1).slice(0, 4)}/${id(1)}`,
        `${id(2).slice(0, 4)}/${id(2)}`,
        '',
      ].join('\n'),
    );
    const path = join(dir, 'vda.chunks');
    await writeChunkList(path, list);
    expect(readFileSync(path, 'utf8')).toBe(text);
    const back = await readChunkList(path);
    expect(back).toEqual(list);
    expect(parseChunkList(text)).toEqual(list);
    const streamed: string[] = [];
    for await (const x of iterateChunkListFile(path)) streamed.push(x);
    expect(streamed).toEqual([id(0), id(1), id(2)]);
    expect(chunkCount(back)).toBe(3);
    expect(chunkIdAt(back, 2)).toBe(id(2));
    expect(chunkLength(back, 2)).toBe(4 * MiB - 100);
    // raw-sha256 is optional
    const bare = { ...list, rawSha256: undefined };
    expect(parseChunkList(formatChunkList(bare))).toEqual(bare);
  });

  it('streams a large list with bounded memory (20 000 chunks = an 80 GiB disk)', async () => {
    const list = sample(20_000);
    const path = join(dir, 'big.chunks');
    await writeChunkList(path, list);
    const back = await readChunkList(path);
    expect(back.ids.equals(list.ids)).toBe(true);
  });

  const good = formatChunkList(sample(3));
  const lines = good.split('\n');
  const cases: [string, string, RegExp][] = [
    ['an empty file', '', /line 1: the header is incomplete: the list is truncated|line 0: the header is incomplete/],
    ['not a chunk list', 'hello\n', /line 1: not a kvmbak chunk list/],
    [
      'a newer format',
      good.replace('chunk list 1', 'chunk list 2'),
      /line 1: format "2" is not one this kvmbak reads \(1\): written by a newer kvmbak\?/,
    ],
    ['truncated mid-line', good.slice(0, good.length - 20), /line 8: the last line has no newline: the list is truncated/],
    ['truncated at a line end', `${lines.slice(0, 7).join('\n')}\n`, /line 7: 2 chunk lines, the header declares 3: the list is truncated/],
    ['header only', `${lines.slice(0, 3).join('\n')}\n`, /the header is incomplete: the list is truncated/],
    ['an extra line', `${good}${lines[5]}\n`, /line 9: more chunk lines than the 3 the header declares/],
    [
      'count not matching the size',
      good.replace('# chunks 3', '# chunks 4'),
      /line 4: chunks 4 does not match raw-size 12582812 \/ chunk-size 4194304 \(3\)/,
    ],
    [
      'a size beyond 2^53',
      good.replace(/# raw-size \d+/, '# raw-size 99999999999999999'),
      /line 2: raw-size "99999999999999999" is not a whole number below 2\^53/,
    ],
    ['a negative size', good.replace(/# raw-size \d+/, '# raw-size -1'), /line 2: raw-size "-1" is not a whole number/],
    ['a leading zero', good.replace('# chunk-size 4194304', '# chunk-size 04194304'), /line 3: chunk-size "04194304" is not a whole number/],
    [
      'a chunk size not a power of two',
      good.replace('# chunk-size 4194304', '# chunk-size 4194305'),
      /line 3: chunk-size 4194305 is not a power of two/,
    ],
    [
      'a huge chunk size',
      good.replace('# chunk-size 4194304', '# chunk-size 1073741824'),
      /line 3: chunk-size 1073741824 is not a power of two from 65536 to 67108864/,
    ],
    ['a wrong folder', good.replace(`${id(1).slice(0, 4)}/`, 'ffff/'), /line 7: expected a chunk path/],
    ['upper-case hex', good.replace(id(1), id(1).toUpperCase()), /line 7: expected a chunk path/],
    ['a path outside the store', good.replace(`${id(1).slice(0, 4)}/${id(1)}`, `../../etc/passwd`), /line 7: expected a chunk path/],
    ['a very long line', good.replace(id(1), 'a'.repeat(100000)), /line 7: expected a chunk path/],
    ['an unknown header', good.replace('# raw-sha256', '# raw-md5'), /line 5: unexpected header line/],
    ['a bad raw-sha256', good.replace(/# raw-sha256 [0-9a-f]+/, '# raw-sha256 xyz'), /line 5: raw-sha256 is not 64 lowercase hex digits/],
  ];
  it.each(cases)('refuses %s with the line number, from a file and from memory', async (_name, text, message) => {
    const path = join(dir, 'bad.chunks');
    writeFileSync(path, text);
    const err = await readChunkList(path).catch((e: unknown) => e);
    expect(isChunkError(err, 'KVMBAK_CHUNK_LIST')).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain(`chunk list ${path}`);
    const err2 = await (async () => {
      for await (const _ of iterateChunkListFile(path)) void _;
    })().catch((e: unknown) => e);
    expect((err2 as Error).message).toMatch(message);
    expect(() => parseChunkList(text)).toThrow(message);
  });

  it('says when the file is missing', async () => {
    await expect(readChunkList(join(dir, 'nope'))).rejects.toThrow(/chunk list .*nope does not exist/);
  });

  it('validates ChunkList values before writing', async () => {
    expect(() => validateChunkList({ ...sample(2), rawSize: 1 })).toThrow(/2 chunk ids for 1 bytes in chunks of 4194304 \(1 expected\)/);
    expect(() => validateChunkList({ ...sample(2), chunkSize: 3000 })).toThrow(/chunk size 3000 is not a power of two/);
    expect(() => validateChunkList({ ...sample(2), rawSize: -5 })).toThrow(/raw size -5 is not a byte count/);
    await expect(writeChunkList(join(dir, 'x'), { ...sample(2), ids: Buffer.alloc(33) })).rejects.toThrow(/not a whole number of 32-byte/);
  });
});
