/**
 * A Prometheus textfile-collector file (node_exporter --collector.textfile):
 * per domain, the last run's result, times and figures, from the last-run
 * records of the destinations involved — so a domain not in tonight's run
 * keeps its series. Replaced atomically (node_exporter reads only *.prom
 * names; the temporary file is hidden and named otherwise).
 */
import type { LastRun } from './last-run.js';
import { writeFileAtomic } from '../util/fs.js';

interface Metric {
  name: string;
  help: string;
  value: (r: LastRun) => number | null;
}

const seconds = (iso: string | null): number | null => (iso === null ? null : Date.parse(iso) / 1000);

const METRICS: Metric[] = [
  { name: 'kvmbak_last_run_success', help: '1 when the last backup run of the domain succeeded, else 0.', value: (r) => (r.ok ? 1 : 0) },
  { name: 'kvmbak_last_run_timestamp_seconds', help: 'End of the last backup run (Unix time).', value: (r) => seconds(r.finishedAt) },
  {
    name: 'kvmbak_last_success_timestamp_seconds',
    help: 'End of the last successful backup run (Unix time).',
    value: (r) => seconds(r.lastSuccessAt),
  },
  { name: 'kvmbak_last_run_duration_seconds', help: 'Duration of the last backup run.', value: (r) => r.durationSeconds },
  { name: 'kvmbak_last_run_read_bytes', help: 'Raw bytes read from the snapshots by the last run.', value: (r) => r.bytesRead },
  { name: 'kvmbak_last_run_written_bytes', help: 'Bytes written to the backup set by the last run.', value: (r) => r.bytesWritten },
  { name: 'kvmbak_last_run_downtime_seconds', help: 'Seconds the VM was stopped or paused by the last run.', value: (r) => r.downtimeSeconds },
];

function label(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The text of the metrics file for these records (one per domain and destination). */
export function renderMetrics(records: readonly { dest: string; run: LastRun }[]): string {
  const out: string[] = [];
  for (const m of METRICS) {
    out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} gauge`);
    for (const { dest, run } of records) {
      const v = m.value(run);
      if (v === null || !Number.isFinite(v)) continue;
      out.push(`${m.name}{domain="${label(run.domain)}",dest="${label(dest)}"} ${v}`);
    }
  }
  return `${out.join('\n')}\n`;
}

/**
 * Writes the metrics file atomically. Mode 0644: the exporter usually runs
 * as its own user, and the file holds only figures and domain names.
 */
export async function writeMetricsFile(path: string, records: readonly { dest: string; run: LastRun }[]): Promise<void> {
  await writeFileAtomic(path, renderMetrics(records), 0o644);
}
