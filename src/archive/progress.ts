import type { ArchiveProgress, ProgressCallback } from './types.js';

const WINDOW_MS = 3000;

/**
 * Turns byte counts into throttled ArchiveProgress events. The rate is
 * measured over the last few seconds, so it follows speed changes (a run of
 * zero chunks, a slow disk) instead of averaging them away.
 */
export class ProgressMeter {
  bytesDone = 0;
  storedBytes = 0;
  private lastEmit = 0;
  private readonly samples: { t: number; bytes: number }[] = [];
  private readonly start = performance.now();

  constructor(
    private phase: ArchiveProgress['phase'],
    private readonly bytesTotal: number | undefined,
    private readonly onProgress: ProgressCallback | undefined,
    private readonly intervalMs = 200,
  ) {
    this.samples.push({ t: this.start, bytes: 0 });
  }

  /** Records progress and emits an event when the interval has passed. */
  add(rawBytes: number, storedBytes = 0): void {
    this.bytesDone += rawBytes;
    this.storedBytes += storedBytes;
    if (!this.onProgress) return;
    const now = performance.now();
    if (now - this.lastEmit >= this.intervalMs) this.emit(now);
  }

  /** Emits an event now (phase changes, the final report). */
  flush(phase?: ArchiveProgress['phase']): void {
    if (phase) this.phase = phase;
    if (this.onProgress) this.emit(performance.now());
  }

  get seconds(): number {
    return (performance.now() - this.start) / 1000;
  }

  private emit(now: number): void {
    this.lastEmit = now;
    this.samples.push({ t: now, bytes: this.bytesDone });
    while (this.samples.length > 2 && now - this.samples[1]!.t >= WINDOW_MS) this.samples.shift();
    const first = this.samples[0]!;
    const dt = (now - first.t) / 1000;
    const rate = dt > 0.05 ? Math.round((this.bytesDone - first.bytes) / dt) : 0;
    const ev: ArchiveProgress = {
      phase: this.phase,
      bytesDone: this.bytesDone,
      rate,
      storedBytes: this.storedBytes,
    };
    if (this.bytesTotal !== undefined) ev.bytesTotal = this.bytesTotal;
    this.onProgress!(ev);
  }
}
