/** Process-wide counters of the archive engine, for debugging and tests (sharp's `counters()`). */
export const counters = {
  /** Archive operations (pack/unpack/hash) running now. */
  operations: 0,
  /** Chunk buffers in use across all operations: from "read started" to "written" (pack: to "found all-zero" for a zero chunk, which needs no buffer after). */
  chunksInFlight: 0,
  /** Highest chunksInFlight since the last reset. */
  peakChunksInFlight: 0,
  /** Compression worker threads alive. */
  workersAlive: 0,
};

export interface ArchiveCounters {
  operations: number;
  chunksInFlight: number;
  peakChunksInFlight: number;
  workersAlive: number;
}

/** A snapshot of the archive engine's counters; `resetPeak` starts a new peak measurement. */
export function archiveCounters(options: { resetPeak?: boolean } = {}): ArchiveCounters {
  const snap = { ...counters };
  if (options.resetPeak) counters.peakChunksInFlight = counters.chunksInFlight;
  return snap;
}

/** A chunk entered the pipeline (read started). */
export function chunkStarted(): void {
  counters.chunksInFlight++;
  if (counters.chunksInFlight > counters.peakChunksInFlight) counters.peakChunksInFlight = counters.chunksInFlight;
}

/** `n` chunks left the pipeline (written, or dropped when a run ends). */
export function chunksFinished(n = 1): void {
  counters.chunksInFlight -= n;
}
