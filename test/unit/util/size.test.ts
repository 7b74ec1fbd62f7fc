import { describe, expect, it } from 'vitest';
import { formatBytes, parseSize } from '../../../src/util/size.js';
import { isKvmbakError } from '../../../src/errors.js';

describe('parseSize', () => {
  it.each([
    ['512', 512],
    ['64M', 64 * 1024 ** 2],
    ['64m', 64 * 1024 ** 2],
    ['1.5G', 1.5 * 1024 ** 3],
    ['2GiB', 2 * 1024 ** 3],
    ['100MB', 100e6],
    ['1T', 1024 ** 4],
    [' 8 k ', 8192],
  ])('%s → %d', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '-1G', '1X', '1..2G', '0x10'])('rejects %j with a clear ConfigError', (text) => {
    let err: unknown;
    try {
      parseSize(text, '--snapshot-size');
    } catch (e) {
      err = e;
    }
    expect(isKvmbakError(err)).toBe(true);
    expect((err as Error).message).toMatch(/^--snapshot-size: .* is not a size; write a number/);
  });
});

describe('formatBytes', () => {
  it('uses binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(250 * 1024 ** 3)).toBe('250 GiB');
  });
});
