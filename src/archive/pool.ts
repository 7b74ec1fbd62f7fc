import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadNative } from '../native.js';
import { packageRoot } from '../paths.js';
import { ArchiveError } from './errors.js';
import { counters } from './counters.js';
import type { FailureReply, GunzipReply, GzipReply, Sha256Reply, TaskFailureKind, WorkerReply, WorkerRequest } from './messages.js';

export type { GunzipReply, GzipReply, Sha256Reply } from './messages.js';

/** A failure reported by the worker for one task (bad data, not a crash). */
export class WorkerTaskError extends Error {
  constructor(
    message: string,
    readonly kind: TaskFailureKind,
    readonly zlibCode: string | undefined,
  ) {
    super(message);
  }
}

const WORKER_FILE = 'archive-worker.js';
let workerPath: URL | string | undefined;

/**
 * The worker module: next to the bundle that imports this code (dist/ of the
 * package, for the library and the CLI alike), else the package's dist/
 * (running from the TypeScript sources, as under vitest: build it first).
 * The addon is loaded here once first, so a missing or broken addon fails
 * with its own clear message instead of a worker's.
 */
export function archiveWorkerPath(): URL | string {
  if (workerPath !== undefined) return workerPath;
  loadNative();
  const here = new URL(`./${WORKER_FILE}`, import.meta.url);
  if (existsSync(here)) return (workerPath = here);
  const built = join(packageRoot(), 'dist', WORKER_FILE);
  if (existsSync(built)) return (workerPath = built);
  throw new ArchiveError(`the archive worker ${built} is missing; build kvmbak (npm run build:ts)`, 'KVMBAK_ARCHIVE_WORKER');
}

/** A new archive worker thread. */
export function startArchiveWorker(): Worker {
  return new Worker(archiveWorkerPath(), { stdout: false, stderr: false });
}

type Request = WorkerRequest & { id: number };

interface Task {
  msg: Request;
  transfer: ArrayBuffer[];
  resolve: (v: WorkerReply) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
  /** A task was posted and its reply has not come yet (even when fail() already rejected the task). */
  busy: boolean;
}

/** How long destroy() lets a busy worker finish its task before terminating it anyway. */
const SETTLE_MS = 2000;

export interface WorkerPoolOptions {
  /**
   * Idle workers do not keep the process alive (a worker is referenced only while it runs a task):
   * for a long-lived pool that its owner may never destroy, such as a chunk store's.
   */
  unrefIdle?: boolean;
}

/** Resolves once the slot's worker has replied to its task in flight (or exited), or after SETTLE_MS. */
function settled(slot: Slot): Promise<void> {
  if (!slot.busy) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      slot.worker.off('message', done);
      slot.worker.off('exit', done);
      resolve();
    };
    const timer = setTimeout(done, SETTLE_MS);
    slot.worker.on('message', done);
    slot.worker.on('exit', done);
  });
}

/**
 * A fixed-size pool of codec threads for one operation. Workers start on
 * demand (a tiny image uses one), run one task each at a time, and are
 * terminated by destroy() — or at once by fail() on abort or error, which
 * rejects every pending task.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private failure: unknown;
  private destroyed: Promise<void> | undefined;

  constructor(
    private readonly size: number,
    private readonly options: WorkerPoolOptions = {},
  ) {}

  /**
   * One gzip member of the first `len` bytes of `ab`, at libdeflate `level`,
   * into `out` (at least gzipCompressBound(len) bytes); with `sample`, an
   * incompressible chunk is stored instead. Both buffers come back in the reply.
   */
  gzip(ab: ArrayBuffer, len: number, out: ArrayBuffer, level: number, sample: boolean): Promise<GzipReply> {
    return this.run({ op: 'gzip', id: 0, ab, len, out, level, sample }, [ab, out]) as Promise<GzipReply>;
  }

  /** Decompresses the member in the first `len` bytes of `ab` into `out`, which it must fill with exactly `expect` bytes. */
  gunzip(ab: ArrayBuffer, len: number, out: ArrayBuffer, expect: number, hash = false): Promise<GunzipReply> {
    return this.run({ op: 'gunzip', id: 0, ab, len, out, expect, ...(hash ? { hash } : {}) }, [ab, out]) as Promise<GunzipReply>;
  }

  /** sha256 of the first `len` bytes of `ab` (handed back in the reply). */
  sha256(ab: ArrayBuffer, len: number): Promise<Sha256Reply> {
    return this.run({ op: 'sha256', id: 0, ab, len }, [ab]) as Promise<Sha256Reply>;
  }

  private run(body: Request, transfer: ArrayBuffer[]): Promise<WorkerReply> {
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
    const worker = startArchiveWorker();
    counters.workersAlive++;
    const slot: Slot = { worker, task: undefined, busy: false };
    if (this.options.unrefIdle) worker.unref();
    this.slots.push(slot);
    worker.on('message', (m: WorkerReply) => {
      slot.busy = false;
      const task = slot.task;
      if (!task || task.msg.id !== m.id) return;
      slot.task = undefined;
      if ('error' in m) {
        const f = m as FailureReply;
        task.reject(new WorkerTaskError(f.error.message, f.error.kind, f.error.code));
      } else task.resolve(m);
      const next = this.queue.shift();
      if (next) this.start(slot, next);
      else if (this.options.unrefIdle) slot.worker.unref();
    });
    worker.on('error', (e) => {
      this.fail(new ArchiveError(`an archive worker thread failed: ${e.message}`, 'KVMBAK_ARCHIVE_WORKER', {}, { cause: e }));
    });
    worker.once('exit', (code) => {
      counters.workersAlive--;
      if (this.destroyed === undefined) {
        this.fail(new ArchiveError(`an archive worker thread exited unexpectedly (code ${code})`, 'KVMBAK_ARCHIVE_WORKER'));
      }
    });
    return slot;
  }

  private start(slot: Slot, task: Task): void {
    slot.task = task;
    slot.busy = true;
    if (this.options.unrefIdle) slot.worker.ref();
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
    // A worker is terminated between tasks, not in the middle of one: node 20 aborts the whole
    // process when a worker is terminated while node:zlib is setting up a stream in it (the
    // worker's diagnosis of a corrupt member). Its task is rejected already; at most one task's time.
    this.destroyed = Promise.all(slots.map(async (s) => (await settled(s), await s.worker.terminate()))).then(() => undefined);
    return this.destroyed;
  }
}
