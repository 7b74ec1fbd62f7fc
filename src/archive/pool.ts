import { Worker } from 'node:worker_threads';
import { ArchiveError } from './errors.js';
import { counters } from './counters.js';
import { WORKER_SOURCE } from './worker-source.js';

export interface GzipReply {
  id: number;
  ab: ArrayBuffer;
  out: ArrayBuffer;
  outOff: number;
  outLen: number;
  /** The chunk was incompressible and went in as stored deflate blocks. */
  stored: boolean;
}

export type GunzipReply =
  | { id: number; ab: ArrayBuffer; zero: true }
  | { id: number; ab: ArrayBuffer; zero: false; out: ArrayBuffer; outOff: number; outLen: number };

/** A failure reported by the worker for one task (bad data, not a crash). */
export class WorkerTaskError extends Error {
  constructor(
    message: string,
    readonly kind: 'truncated' | 'corrupt' | 'length' | 'internal',
    readonly zlibCode: string | undefined,
  ) {
    super(message);
  }
}

interface Task {
  msg: Record<string, unknown> & { id: number };
  transfer: ArrayBuffer[];
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
}

/**
 * A fixed-size pool of compression threads for one operation. Workers start
 * on demand (a tiny image uses one), run one task each at a time, and are
 * terminated by destroy() — or at once by fail() on abort or error, which
 * rejects every pending task.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private failure: unknown;
  private destroyed: Promise<void> | undefined;

  constructor(private readonly size: number) {}

  gzip(ab: ArrayBuffer, len: number, level: number, memLevel: number, strategy = 0): Promise<GzipReply> {
    return this.run({ op: 'gzip', ab, len, level, memLevel, strategy }, [ab]) as Promise<GzipReply>;
  }

  gunzip(ab: ArrayBuffer, len: number, expect: number): Promise<GunzipReply> {
    return this.run({ op: 'gunzip', ab, len, expect }, [ab]) as Promise<GunzipReply>;
  }

  private run(body: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<unknown> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const task: Task = { msg: { ...body, id: this.nextId++ }, transfer, resolve, reject };
      const idle = this.slots.find((s) => s.task === undefined);
      if (idle) this.start(idle, task);
      else if (this.slots.length < this.size) this.start(this.spawn(), task);
      else this.queue.push(task);
    });
  }

  /** Starts up to `n` workers now (a thread takes ~20 ms to start: better while the files are opened and read). */
  warm(n: number): void {
    while (this.failure === undefined && this.slots.length < Math.min(n, this.size)) this.spawn();
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, stdout: false, stderr: false });
    counters.workersAlive++;
    const slot: Slot = { worker, task: undefined };
    this.slots.push(slot);
    worker.on('message', (m: { id: number; error?: { message: string; kind: WorkerTaskError['kind']; code?: string } }) => {
      const task = slot.task;
      if (!task || task.msg.id !== m.id) return;
      slot.task = undefined;
      if (m.error) task.reject(new WorkerTaskError(m.error.message, m.error.kind, m.error.code));
      else task.resolve(m);
      const next = this.queue.shift();
      if (next) this.start(slot, next);
    });
    worker.on('error', (e) => {
      this.fail(new ArchiveError(`a compression worker thread failed: ${e.message}`, 'KVMBAK_ARCHIVE_WORKER', {}, { cause: e }));
    });
    worker.once('exit', (code) => {
      counters.workersAlive--;
      if (this.destroyed === undefined) {
        this.fail(new ArchiveError(`a compression worker thread exited unexpectedly (code ${code})`, 'KVMBAK_ARCHIVE_WORKER'));
      }
    });
    return slot;
  }

  private start(slot: Slot, task: Task): void {
    slot.task = task;
    slot.worker.postMessage(task.msg, task.transfer);
  }

  /** Rejects every pending task with `err` and terminates the workers. */
  fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    const tasks = [...this.queue.splice(0), ...this.slots.flatMap((s) => (s.task ? [s.task] : []))];
    for (const s of this.slots) s.task = undefined;
    for (const t of tasks) t.reject(this.failure);
    void this.destroy();
  }

  /** Terminates all workers; resolves when they are gone (the same promise on every call). */
  destroy(): Promise<void> {
    if (this.destroyed) return this.destroyed;
    if (this.failure === undefined) this.failure = new ArchiveError('worker pool destroyed', 'KVMBAK_ARCHIVE_WORKER');
    for (const t of this.queue.splice(0)) t.reject(this.failure);
    const slots = this.slots.splice(0);
    for (const s of slots) if (s.task) s.task.reject(this.failure);
    this.destroyed = Promise.all(slots.map((s) => s.worker.terminate())).then(() => undefined);
    return this.destroyed;
  }
}
