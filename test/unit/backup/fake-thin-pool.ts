/**
 * One simulated thin pool behind the process boundary, for the thin_delta step and recover: the
 * answers of `lvs -o <thin fields>`, `dmsetup message ... reserve_metadata_snap` /
 * `release_metadata_snap`, `dmsetup status` and `thin_delta`, all replayed from the runs captured
 * in the lab by test/e2e/guest/capture-thin-delta.sh (test/fixtures/thin, pool `pool64k`), with
 * the VG and pool names replaced. The pool's state is whether its metadata snapshot is held; the
 * two thin volumes are the capture's base snapshot (thin id 2) and origin (thin id 1), so
 * thin_delta of base against current answers the captured delta. Every other command goes to
 * the inner runner (the fake lvm world).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CommandResult, CommandRunner, CommandRunOptions } from '../../../src/exec/index.js';
import { Lvm, THIN_LV_FIELDS, thinPoolDevices } from '../../../src/lvm/index.js';
import { AbortError } from '../../../src/errors.js';
import { formatReport } from './fake-lvm-world.js';
import { lvmTemplates } from './fake-lvm.js';
import { fixture } from '../lvm/helpers.js';

const DIR = fileURLToPath(new URL('../../fixtures/thin/', import.meta.url));
const CAPTURED_POOL = 'pool64k';

interface RunRecord {
  argv: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

interface Info {
  changedChunks: number[];
  pools: { pool: string; tpool: string; tmeta: string; snapThinId: number; originThinId: number }[];
}

function record(name: string): RunRecord {
  return JSON.parse(readFileSync(`${DIR}${CAPTURED_POOL}-${name}.run.json`, 'utf8')) as RunRecord;
}

export const thinInfo = JSON.parse(readFileSync(`${DIR}info.json`, 'utf8')) as Info;
const captured = thinInfo.pools.find((p) => p.pool === CAPTURED_POOL)!;

/** The held metadata root `dmsetup status` shows in the capture while the snapshot is reserved. */
export const HELD_ROOT = Number(record('status-held').stdout.trim().split(/\s+/)[6]);

/**
 * `lvs` of a VG as lvm2 printed it in the lab (test/fixtures/lvm/lvs-thin.json: a thin pool, a thin
 * origin and a thin snapshot of it), renamed, the snapshot tagged `tags`. With `snapshotOrigin` ''
 * the snapshot is what lvs reports once its origin was removed: a plain thin volume.
 */
export function thinVgReport(
  names: { vg: string; pool: string; origin: string; snapshot: string },
  tags: string,
  snapshotOrigin = names.origin,
): string {
  return fixture('lvs-thin')
    .replaceAll('kvmbak-fx-db-02-snap', names.snapshot)
    .replaceAll('kvmbak-fx-db-02', names.origin)
    .replaceAll('kvmbak-fx-pool', names.pool)
    .replaceAll('vgkvmbak', names.vg)
    .replaceAll('"kvmbak,kvmbak-run-fx"', JSON.stringify(tags))
    .replaceAll(`"origin":"${names.origin}"`, `"origin":"${snapshotOrigin}"`)
    .replaceAll('"public,snapshot,thinsnapshot"', snapshotOrigin === '' ? '"public"' : '"public,snapshot,thinsnapshot"');
}

export interface FakeThinPoolSpec {
  vg: string;
  pool: string;
  /** The previous run's thin snapshot (thin id of the captured base). */
  base: string;
  /** This run's thin snapshot (thin id of the captured origin). */
  current: string;
}

type Hook = (argv: string[]) => void | Promise<void>;

export class FakeThinPool implements CommandRunner {
  readonly spec: FakeThinPoolSpec;
  readonly lvm: Lvm;
  /** The pool's metadata snapshot is reserved. */
  held = false;
  /** Calls this pool answered, program first. */
  readonly calls: string[][] = [];
  readonly #inner: CommandRunner;
  readonly #tpool: string;
  readonly #tmeta: string;
  #failures: { command: string; arg: string; reply: RunRecord }[] = [];
  #hooks: { command: string; fn: Hook }[] = [];

  constructor(inner: CommandRunner, spec: FakeThinPoolSpec) {
    this.#inner = inner;
    this.spec = spec;
    const dev = thinPoolDevices(spec.vg, spec.pool);
    this.#tpool = dev.tpool;
    this.#tmeta = dev.tmeta;
    this.lvm = new Lvm(this);
  }

  /** The next call of `command` with `arg` in its argv answers with the captured run `name` (names replaced). */
  failNext(command: string, arg: string, name: string): void {
    this.#failures.push({ command, arg, reply: this.#renamed(record(name)) });
  }

  /** Runs `fn` inside the next call of `command` (before it answers). */
  during(command: string, fn: Hook): void {
    this.#hooks.push({ command, fn });
  }

  /** Replaces the capture's VG, pool and dm names by this pool's. */
  #renamed(r: RunRecord): RunRecord {
    const swap = (s: string): string => s.replaceAll(captured.tpool, this.#tpool).replaceAll(captured.tmeta, this.#tmeta);
    return { argv: r.argv.map(swap), exitCode: r.exitCode, stdout: swap(r.stdout), stderr: swap(r.stderr) };
  }

  async run(file: string, args: readonly string[], options?: CommandRunOptions): Promise<CommandResult> {
    const argv = [file, ...args];
    const mine = file === 'dmsetup' || file === 'thin_delta' || (file === 'lvs' && args.includes(THIN_LV_FIELDS.join(',')));
    if (!mine) return this.#inner.run(file, args, options);
    this.calls.push(argv);
    const hook = this.#hooks.findIndex((h) => h.command === file);
    if (hook !== -1) {
      const [h] = this.#hooks.splice(hook, 1);
      await h!.fn(argv);
    }
    if (options?.signal?.aborted) throw new AbortError();
    const failure = this.#failures.findIndex((f) => f.command === file && argv.includes(f.arg));
    if (failure !== -1) {
      const [f] = this.#failures.splice(failure, 1);
      return this.#result(f!.reply);
    }
    return this.#result(this.#answer(argv));
  }

  #result(r: RunRecord): CommandResult {
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, signal: null };
  }

  #answer(argv: string[]): RunRecord {
    const [file, ...args] = argv;
    if (file === 'lvs') return this.#lvs(argv);
    if (file === 'dmsetup' && args[0] === 'status') {
      if (args[1] !== this.#tpool) {
        const r = record('status-missing');
        return { ...r, argv };
      }
      return this.#renamed(record(this.held ? 'status-held' : 'status-released'));
    }
    if (file === 'dmsetup' && args[0] === 'message' && args[1] === this.#tpool && args[2] === '0') {
      if (args[3] === 'reserve_metadata_snap') {
        if (this.held) return this.#renamed(record('reserve-again'));
        this.held = true;
        return this.#renamed(record('reserve'));
      }
      if (args[3] === 'release_metadata_snap') {
        if (!this.held) return this.#renamed(record('release-again'));
        this.held = false;
        return this.#renamed(record('release'));
      }
    }
    if (
      file === 'thin_delta' &&
      JSON.stringify(args) === JSON.stringify(['-m', '--thin1', String(captured.snapThinId), '--thin2', String(captured.originThinId), this.#tmeta])
    ) {
      return this.#renamed(record(this.held ? 'delta' : 'delta-nosnap'));
    }
    return { argv, exitCode: 3, stdout: '', stderr: `fake thin pool: unexpected call ${JSON.stringify(argv)}\n` };
  }

  /** The captured thin-id report, one row per LV asked for (a thin volume of this pool when it is base or current). */
  #lvs(argv: string[]): RunRecord {
    const rec = record('lvs-thin');
    const rows = (JSON.parse(rec.stdout) as { report: { lv: Record<string, string>[] }[] }).report[0]!.lv;
    const thinRow = rows.find((r) => r.segtype === 'thin')!;
    const targets = argv.slice(argv.indexOf('--') + 1);
    const out: Record<string, string>[] = [];
    for (const t of targets) {
      const [vg, lv] = t.split('/');
      const id =
        vg === this.spec.vg && lv === this.spec.base
          ? captured.snapThinId
          : vg === this.spec.vg && lv === this.spec.current
            ? captured.originThinId
            : null;
      if (id === null) {
        const missing = lvmTemplates().lvsMissingLv;
        const stderr = missing.stderr.replaceAll(missing.argv[missing.argv.length - 1]!, t);
        return { argv, exitCode: missing.exitCode, stdout: formatReport('lv', [], THIN_LV_FIELDS), stderr };
      }
      out.push({ ...thinRow, lv_name: lv!, vg_name: vg!, lv_full_name: t, pool_lv: this.spec.pool, thin_id: String(id) });
    }
    return { argv, exitCode: 0, stdout: formatReport('lv', out, THIN_LV_FIELDS), stderr: '' };
  }
}
