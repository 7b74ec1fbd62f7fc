import { describe, expect, it } from 'vitest';
import { ReadThrottle } from '../../../src/archive/throttle.js';
import { parseDuration } from '../../../src/jobs/index.js';

describe('ReadThrottle', () => {
  it('keeps the rate of a run at or under the cap, with no burst after idle time', async () => {
    const t = new ReadThrottle(1_000_000);
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) await t.take(50_000);
    // 250 kB at 1 MB/s: at least 250 ms.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(245);
    await new Promise((r) => setTimeout(r, 200));
    const t1 = performance.now();
    await t.take(100_000);
    expect(performance.now() - t1).toBeGreaterThanOrEqual(95);
  });

  it('rejects a cap that is not above 0, and stops waiting on abort', async () => {
    expect(() => new ReadThrottle(0)).toThrow('bwlimit must be a rate above 0 bytes per second, got 0');
    const t = new ReadThrottle(1000);
    const ac = new AbortController();
    const p = t.take(1_000_000, ac.signal);
    ac.abort();
    await expect(p).rejects.toThrow();
  });
});

describe('parseDuration', () => {
  it('reads seconds, units and sums', () => {
    expect(parseDuration('90', 'x')).toBe(90);
    expect(parseDuration('26h', 'x')).toBe(93_600);
    expect(parseDuration('1d12h', 'x')).toBe(129_600);
    expect(() => parseDuration('soon', '--max-age')).toThrow("--max-age: 'soon' is not a duration; write e.g. 90s, 15m, 26h or 2d");
  });
});
