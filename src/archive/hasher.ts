import type { Worker } from 'node:worker_threads';
import { ArchiveError } from './errors.js';
import { counters } from './counters.js';
import type { DigestReply, UpdateReply, WorkerRequest } from './messages.js';
import { startArchiveWorker } from './pool.js';

/**
 * sha256 of a stream of chunks on its own thread. Chunks are hashed in the
 * order they are given; update() lends the buffer to the thread and gives it
 * back when hashed, zeros() needs no buffer at all.
 */
export class HashWorker {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve: (v: never) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private failure: unknown;
  private destroyed: Promise<void> | undefined;

  constructor() {
    this.worker = startArchiveWorker();
    counters.workersAlive++;
    this.worker.on('message', (m: { id: number }) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      w.resolve(m as never);
    });
    this.worker.on('error', (e) =>
      this.fail(new ArchiveError(`the hash worker thread failed: ${e.message}`, 'KVMBAK_ARCHIVE_WORKER', {}, { cause: e })),
    );
    this.worker.once('exit', (code) => {
      counters.workersAlive--;
      if (this.destroyed === undefined)
        this.fail(new ArchiveError(`the hash worker thread exited unexpectedly (code ${code})`, 'KVMBAK_ARCHIVE_WORKER'));
    });
  }

  private call<T>(msg: WorkerRequest & { id: number }, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: never) => void, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /** Hashes the first `len` bytes of `ab`; resolves to `ab` once done. */
  async update(ab: ArrayBuffer, len: number): Promise<ArrayBuffer> {
    const r = await this.call<UpdateReply>({ op: 'update', id: 0, ab, len }, [ab]);
    return r.ab;
  }

  /** Hashes `len` zero bytes. */
  zeros(len: number): void {
    const msg: WorkerRequest = { op: 'zeros', len };
    if (this.failure === undefined && len > 0) this.worker.postMessage(msg);
  }

  /** The sha256 of everything given so far, as hex. */
  async digest(): Promise<string> {
    return (await this.call<DigestReply>({ op: 'digest', id: 0 })).hex;
  }

  fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
    void this.destroy();
  }

  destroy(): Promise<void> {
    if (this.destroyed) return this.destroyed;
    if (this.failure === undefined) this.failure = new ArchiveError('hash worker destroyed', 'KVMBAK_ARCHIVE_WORKER');
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
    this.destroyed = this.worker.terminate().then(() => undefined);
    return this.destroyed;
  }
}
