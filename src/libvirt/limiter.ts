/**
 * A small FIFO concurrency limiter, used to run at most one
 * virDomainSaveFlags/virDomainRestoreFlags at a time per process.
 *
 * Why: every native libvirt call runs on libuv's thread pool, which by
 * default has only 4 threads (UV_THREADPOOL_SIZE) shared with fs, dns, zlib
 * and crypto. A save or restore holds its thread for as long as it takes to
 * write or read the guest's RAM (seconds to minutes). Letting several run at
 * once would starve the archive stage's file and gzip work. Processes that
 * save several domains in parallel on purpose should raise the pool size
 * before the first async call (UV_THREADPOOL_SIZE=16 in the environment of
 * the node process; setting process.env later has no effect) and can then
 * use a larger limit.
 */
import { AbortError } from '../errors.js';

export interface LimiterCounters {
  /** Tasks running now. */
  active: number;
  /** Tasks waiting for a slot. */
  queued: number;
}

export class Limiter {
  readonly #max: number;
  #active = 0;
  readonly #queue: Array<() => void> = [];

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('Limiter: max must be an integer >= 1');
    this.#max = max;
  }

  counters(): LimiterCounters {
    return { active: this.#active, queued: this.#queue.length };
  }

  /**
   * Runs `task` when a slot is free. An abort while waiting rejects with
   * AbortError and gives up the place in the queue; once started, the task
   * runs to completion.
   */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#acquire(signal);
    try {
      return await task();
    } finally {
      this.#release();
    }
  }

  #acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new AbortError('The operation was aborted', { cause: signal.reason }));
    if (this.#active < this.#max) {
      this.#active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#queue.indexOf(grant);
        if (i >= 0) this.#queue.splice(i, 1);
        reject(new AbortError('The operation was aborted', { cause: signal?.reason }));
      };
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.#active++;
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(grant);
    });
  }

  #release(): void {
    this.#active--;
    const next = this.#queue.shift();
    if (next !== undefined) next();
  }
}

/** One save or restore at a time in this process. */
export const saveRestoreLimiter = new Limiter(1);
