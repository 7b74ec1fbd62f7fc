import { formatBytes, formatDuration, formatRate } from './format.js';

/**
 * What a long operation reports; the library's progress events fit as they
 * are (ArchiveProgress and others with the same shape). `note` is shown after
 * the numbers (e.g. "snapshot 12% used").
 */
export interface ProgressEvent {
  phase: string;
  bytesDone?: number;
  bytesTotal?: number;
  /** Bytes per second. */
  rate?: number;
  note?: string;
}

export interface ProgressRendererOptions {
  /** Shown in front of the bar and as `label` in JSON lines, e.g. 'pack vda'. */
  label: string;
  /** JSON lines of events instead of a bar. */
  json?: boolean;
  /** Nothing at all. */
  quiet?: boolean;
  /** Default process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Minimum time between two redraws of the bar (default 100 ms). */
  intervalMs?: number;
}

export interface ProgressRenderer {
  /** Feeds one event (bound: can be passed as an onProgress callback). */
  update: (event: ProgressEvent) => void;
  /** Clears the bar (call before printing results, on success and on error). */
  done: () => void;
}

const BAR_WIDTH = 24;

/**
 * Progress on stderr, never stdout: a redrawn one-line bar (bytes, percent,
 * rate, ETA) when stderr is a TTY; one JSON object per event and line under
 * --json; nothing with --quiet or when stderr is not a terminal.
 */
export function createProgressRenderer(options: ProgressRendererOptions): ProgressRenderer {
  const stream = options.stream ?? process.stderr;
  const interval = options.intervalMs ?? 100;
  if (options.quiet) return { update: () => undefined, done: () => undefined };
  if (options.json) {
    return {
      update: (ev) => {
        stream.write(`${JSON.stringify({ type: 'progress', label: options.label, time: new Date().toISOString(), ...ev })}\n`);
      },
      done: () => undefined,
    };
  }
  if (!stream.isTTY) return { update: () => undefined, done: () => undefined };

  let last = 0;
  let drawn = false;
  const draw = (ev: ProgressEvent): void => {
    const width = Math.max(40, (stream.columns ?? 80) - 1);
    const line = renderLine(options.label, ev, width);
    stream.write(`\r${line}\x1b[K`);
    drawn = true;
  };
  return {
    update: (ev) => {
      const now = performance.now();
      // always draw phase changes and the end; otherwise at most every `interval`
      if (now - last >= interval || ev.phase === 'sync' || (ev.bytesTotal !== undefined && ev.bytesDone === ev.bytesTotal)) {
        last = now;
        draw(ev);
      }
    },
    done: () => {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}

/** One status line, cut to `width` columns. Exported for tests. */
export function renderLine(label: string, ev: ProgressEvent, width: number): string {
  const done = ev.bytesDone ?? 0;
  const parts: string[] = [label];
  const total = ev.bytesTotal;
  if (total !== undefined && total > 0) {
    const frac = Math.min(1, done / total);
    const filled = Math.round(frac * BAR_WIDTH);
    parts.push(`[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`, `${Math.floor(frac * 100)}%`.padStart(4));
    parts.push(`${formatBytes(done)} / ${formatBytes(total)}`);
  } else {
    parts.push(formatBytes(done));
  }
  if (ev.phase === 'sync') parts.push('syncing to disk…');
  else if (ev.rate !== undefined && ev.rate > 0) {
    parts.push(formatRate(ev.rate));
    if (total !== undefined && total > done) parts.push(`ETA ${formatDuration((total - done) / ev.rate)}`);
  }
  if (ev.note) parts.push(ev.note);
  const line = parts.join('  ');
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

/** One bar at a time, under a label that changes (a file, a disk): a new label clears the old bar and starts a fresh one. */
export interface LabelledProgress {
  update: (label: string, event: ProgressEvent) => void;
  /** Clears the current bar (before printing anything else, and at the end). */
  done: () => void;
}

export function createLabelledProgress(options: Omit<ProgressRendererOptions, 'label'>): LabelledProgress {
  let bar: ProgressRenderer | null = null;
  let label = '';
  return {
    update: (l, event) => {
      if (bar === null || l !== label) {
        bar?.done();
        label = l;
        bar = createProgressRenderer({ ...options, label: l });
      }
      bar.update(event);
    },
    done: () => {
      bar?.done();
      bar = null;
    },
  };
}
