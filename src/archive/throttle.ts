import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../errors.js';

/**
 * Caps how fast a source is read (`bwlimit`), so a backup leaves the
 * storage to the guests: every read is charged before it is issued, and
 * waits until the bytes read so far, this one included, fit the rate since
 * the first read. Idle time earns no credit, so there is never a burst above
 * the cap, and the measured rate of a whole run stays at or under it.
 */
export class ReadThrottle {
  readonly bytesPerSecond: number;
  #next = 0;

  constructor(bytesPerSecond: number) {
    if (!(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0)) {
      throw new ConfigError(`bwlimit must be a rate above 0 bytes per second, got ${String(bytesPerSecond)}`, 'bwlimit');
    }
    this.bytesPerSecond = bytesPerSecond;
  }

  /** Waits until `bytes` more may be read. Rejects when `signal` aborts. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    this.#next = Math.max(this.#next, now) + (bytes / this.bytesPerSecond) * 1000;
    const wait = this.#next - now;
    if (wait >= 1) await sleep(wait, undefined, signal ? { signal } : {});
  }
}
