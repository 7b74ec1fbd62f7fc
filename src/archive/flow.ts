/** Small flow-control primitives for the archive pipelines. */
import { AbortError } from '../errors.js';

/** Counts free slots; acquire() waits for one. abort() rejects every waiter, now and later. */
export class Semaphore {
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: unknown;
  private failed = false;

  constructor(private free: number) {}

  acquire(): Promise<void> {
    if (this.failed) return Promise.reject(this.failure);
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  release(): void {
    const w = this.waiters.shift();
    if (w) w.resolve();
    else this.free++;
  }

  abort(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }
}

/** A FIFO handed from one async loop to another; shift() resolves to `undefined` once closed and drained. */
export class AsyncQueue<T> {
  private items: T[] = [];
  private waiter: { resolve: (v: T | undefined) => void; reject: (e: unknown) => void } | undefined;
  private closed = false;
  private failure: unknown;
  private failed = false;

  push(item: T): void {
    if (this.closed || this.failed) throw new Error('push on a closed queue');
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(item);
    } else this.items.push(item);
  }

  close(): void {
    this.closed = true;
    if (this.waiter && this.items.length === 0) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(undefined);
    }
  }

  abort(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.failure = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }

  /** Items not yet taken (for cleanup after a failure). */
  drain(): T[] {
    return this.items.splice(0);
  }

  shift(): Promise<T | undefined> {
    if (this.failed) return Promise.reject(this.failure);
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}

/** Marks a promise's rejection as handled (it is awaited or drained later), avoiding unhandled-rejection noise. */
export function settleQuietly<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/**
 * The failure and I/O bookkeeping shared by one parallel pack or unpack run:
 * the first failure (or the signal's abort) is kept and handed to `onFail`
 * (which stops the queues and workers); every read and write is tracked so
 * the files are never closed under one still running.
 */
export class RunTracker {
  #failure: unknown;
  #failed = false;
  readonly #io = new Set<Promise<unknown>>();
  readonly #onFail: (e: unknown) => void;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.fail(new AbortError('The operation was aborted', { cause: this.#signal?.reason }));

  constructor(signal: AbortSignal | undefined, onFail: (e: unknown) => void) {
    this.#signal = signal;
    this.#onFail = onFail;
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  get failed(): boolean {
    return this.#failed;
  }

  /** Records the first failure and stops the run; later ones are ignored. */
  fail(e: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#failure = e;
    this.#onFail(e);
  }

  /** Tracks an I/O promise until it settles (its rejection is handled by whoever awaits it). */
  track<T>(p: Promise<T>): Promise<T> {
    this.#io.add(p);
    void p.then(
      () => this.#io.delete(p),
      () => this.#io.delete(p),
    );
    return settleQuietly(p);
  }

  /** Runs the stages to their end (a stage's error fails the run), waits for all I/O, throws the failure. */
  async finish(stages: Promise<void>[]): Promise<void> {
    await Promise.all(stages.map((p) => p.catch((e: unknown) => this.fail(e))));
    // never close the files under a read or write still running
    while (this.#io.size > 0) await Promise.allSettled([...this.#io]);
    if (this.#failed) throw this.#failure;
  }

  dispose(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }
}
