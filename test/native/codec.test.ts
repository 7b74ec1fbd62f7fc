/** The addon's gzip-member codec (native/codec.cc, libdeflate), against node's zlib. */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { constants, gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { loadNative, nativeCandidates } from '../../src/native.js';

const codec = loadNative();
const text = Buffer.from('kvmbak gzip member codec test line, with some words repeated\n'.repeat(4000));
const random = randomBytes(100_000);

function gz(input: Uint8Array, level: number): Buffer {
  const out = Buffer.alloc(codec.gzipCompressBound(input.byteLength));
  const n = codec.gzipCompress(input, level, out);
  expect(n).toBeGreaterThan(0);
  return out.subarray(0, n);
}

describe('native gzip codec', { timeout: 30_000 }, () => {
  it('names its library', () => {
    expect(codec.codecInfo()).toEqual({ library: 'libdeflate', version: expect.stringMatching(/^1\.\d+/) });
  });

  it('every level 0..12 writes one gzip member that zlib (and so zcat) reads back', () => {
    for (let level = 0; level <= 12; level++) {
      for (const data of [text, random, Buffer.alloc(0), Buffer.from([7])]) {
        const member = gz(data, level);
        expect(member[0]).toBe(0x1f);
        expect(member[1]).toBe(0x8b);
        expect(gunzipSync(member).equals(data)).toBe(true);
      }
    }
    // level 0 stores; higher levels shrink text
    expect(gz(text, 0).byteLength).toBeGreaterThan(text.byteLength);
    expect(gz(text, 6).byteLength).toBeLessThan(text.byteLength / 10);
  });

  it('compresses a view at its offset (Buffer slices of a shared ArrayBuffer)', () => {
    const big = Buffer.concat([random.subarray(0, 1000), text]);
    expect(gunzipSync(gz(big.subarray(1000), 3)).equals(text)).toBe(true);
  });

  it('returns 0 when the output is too small', () => {
    expect(codec.gzipCompress(random, 6, Buffer.alloc(100))).toBe(0);
    expect(codec.gzipCompressBound(random.byteLength)).toBeGreaterThanOrEqual(random.byteLength + 18);
  });

  it('decompresses its own members and zlib members, reporting the bytes used on each side', () => {
    for (const member of [gz(text, 3), gzipSync(text, { level: 3 }), gzipSync(text, { level: 9, strategy: constants.Z_RLE })]) {
      const out = Buffer.alloc(text.byteLength);
      expect(codec.gzipDecompress(member, out)).toEqual({ result: 'ok', inBytes: member.byteLength, outBytes: text.byteLength });
      expect(out.equals(text)).toBe(true);
    }
  });

  it('stops after one member: data after it shows as inBytes < input length', () => {
    const a = gz(text, 1);
    const both = Buffer.concat([a, gz(random, 1)]);
    const r = codec.gzipDecompress(both, Buffer.alloc(text.byteLength));
    expect(r).toEqual({ result: 'ok', inBytes: a.byteLength, outBytes: text.byteLength });
  });

  it('refuses damage: a flipped byte, a wrong CRC-32 or ISIZE, a cut, not gzip; a too small output', () => {
    const m = gz(text, 6);
    const out = Buffer.alloc(text.byteLength);
    const flip = (at: number) => {
      const b = Buffer.from(m);
      b[at] = b[at]! ^ 0x10;
      return b;
    };
    expect(codec.gzipDecompress(flip(m.byteLength >> 1), out).result).toBe('bad-data');
    expect(codec.gzipDecompress(flip(m.byteLength - 6), out).result).toBe('bad-data'); // CRC-32
    expect(codec.gzipDecompress(flip(m.byteLength - 3), out).result).toBe('bad-data'); // ISIZE
    expect(codec.gzipDecompress(m.subarray(0, m.byteLength - 100), out).result).not.toBe('ok');
    expect(codec.gzipDecompress(text, out).result).toBe('bad-data');
    expect(codec.gzipDecompress(m, Buffer.alloc(100))).toEqual({ result: 'no-space', inBytes: 0, outBytes: 0 });
  });

  it('bad arguments are TypeErrors', () => {
    const out = Buffer.alloc(1000);
    expect(() => codec.gzipCompress(text, 13, out)).toThrow(TypeError);
    expect(() => codec.gzipCompress(text, 1.5, out)).toThrow(TypeError);
    expect(() => codec.gzipCompress('text' as unknown as Uint8Array, 1, out)).toThrow(/input must be a Uint8Array/);
    expect(() => codec.gzipCompress(new Uint16Array(4) as unknown as Uint8Array, 1, out)).toThrow(TypeError);
    expect(() => codec.gzipDecompress(text, null as unknown as Uint8Array)).toThrow(/output must be a Uint8Array/);
    expect(() => codec.gzipCompressBound(-1)).toThrow(TypeError);
  });

  it('runs in several worker threads at once (per-thread libdeflate state)', async () => {
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { gunzipSync } = require('node:zlib');
      const codec = require(workerData.addon);
      const data = Buffer.from(String(workerData.seed).repeat(300000));
      const out = Buffer.alloc(codec.gzipCompressBound(data.length));
      let ok = true;
      for (let i = 0; i < 20; i++) {
        const n = codec.gzipCompress(data, 1 + (i % 9), out);
        const back = Buffer.alloc(data.length);
        ok = ok && codec.gzipDecompress(out.subarray(0, n), back).result === 'ok' && back.equals(data) && gunzipSync(out.subarray(0, n)).equals(data);
      }
      parentPort.postMessage(ok);`;
    const addon = nativeCandidates().find((p) => existsSync(p))!;
    const results = await Promise.all(
      [1, 2, 3].map(
        (seed) =>
          new Promise<unknown>((resolve, reject) => {
            const w = new Worker(src, { eval: true, workerData: { addon, seed } });
            w.once('message', (m) => {
              resolve(m);
              void w.terminate();
            });
            w.once('error', reject);
          }),
      ),
    );
    expect(results).toEqual([true, true, true]);
  });
});
