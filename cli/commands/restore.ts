import type { Argv, CommandModule } from 'yargs';
import {
  RESTORE_OPTION_NAMES,
  checkRestoreOptions,
  parseDiskMap,
  restore,
  type RestoreOptions,
  type RestorePlan,
  type RestoreProgress,
  type RestoreResult,
} from '../../src/index.js';
import { asUsage } from '../errors.js';
import { runCancellable } from '../signals.js';
import { type ProgressRenderer, createProgressRenderer, formatBytes, formatSeconds } from '../render/index.js';

export interface GlobalArgs {
  uri?: string;
  json?: boolean;
  quiet?: boolean;
}

interface RestoreArgs extends GlobalArgs {
  set: string;
  name?: string;
  vg?: string;
  map?: string[];
  'thin-pool'?: string;
  memory: boolean;
  start: boolean;
  force?: boolean;
  'in-place'?: boolean;
  'dry-run'?: boolean;
  threads?: number;
}

/**
 * Progress on stderr: a bar per disk being written (TTY), phase lines (TTY),
 * JSON lines (--json), nothing (--quiet).
 */
function restoreProgress(args: GlobalArgs): { onProgress: (e: RestoreProgress) => void; done: () => void } {
  const tty = process.stderr.isTTY === true;
  let bar: ProgressRenderer | null = null;
  let label = '';
  const barFor = (l: string): ProgressRenderer => {
    if (bar === null || label !== l) {
      bar?.done();
      label = l;
      bar = createProgressRenderer({ label: l, json: args.json, quiet: args.quiet });
    }
    return bar;
  };
  return {
    onProgress: (e) => {
      if (e.type === 'write') {
        barFor(`write ${e.target}`).update({
          phase: e.phase,
          bytesDone: e.bytesDone,
          ...(e.bytesTotal !== undefined ? { bytesTotal: e.bytesTotal } : {}),
          rate: e.rate,
          note: e.lv,
        });
      } else if (e.type === 'check') {
        barFor(`check ${e.file}`).update({ phase: 'check', bytesDone: e.bytesDone, bytesTotal: e.bytesTotal });
      } else if (args.quiet) {
        // nothing
      } else if (args.json) {
        barFor('restore').update({ phase: e.type === 'phase' ? e.phase : 'warning', note: e.message });
      } else if (e.type === 'warning') {
        bar?.done();
        process.stderr.write(`kvmbak: warning: ${withFlags(e.message)}\n`);
      } else if (tty) {
        bar?.done();
        process.stderr.write(`${e.message}\n`);
      }
    },
    done: () => bar?.done(),
  };
}

/** The library names its option fields in backquotes (`force`); the command line has flags for them. */
const FLAGS: Readonly<Record<string, string>> = {
  force: '--force',
  inPlace: '--in-place',
  name: '--name',
  vg: '--vg',
  map: '--map',
  thinPool: '--thin-pool',
  noMemory: '--no-memory',
  noStart: '--no-start',
  threads: '--threads',
  dryRun: '--dry-run',
};

/** A library message with its option fields as the flags a user types. */
export function withFlags(text: string): string {
  return text.replace(/`(\w+)`/g, (whole, field: string) => FLAGS[field] ?? whole);
}

/** The same for an error's message (the error itself is kept: its code and fields still apply). */
function errorWithFlags(e: unknown): unknown {
  if (e instanceof Error) e.message = withFlags(e.message);
  return e;
}

/** The plan as numbered lines. */
export function formatPlan(plan: RestorePlan): string[] {
  const s = plan.source;
  return [
    `restore plan for ${plan.set}`,
    `  backup of ${s.domain} taken ${s.createdAt} on ${s.host}, mode ${s.mode}`,
    ...plan.steps.map((step, i) => `  ${i + 1}. ${withFlags(step)}`),
    ...plan.warnings.map((w) => `  note: ${withFlags(w)}`),
  ];
}

export function formatResult(r: RestoreResult): string[] {
  const how = r.memoryRestored ? 'resumed from its memory state' : r.started ? 'started' : 'defined, not started';
  const lines = [`restored ${r.domain} from ${r.set} in ${formatSeconds(r.seconds)}: ${how}, now ${r.stateAfter}`];
  for (const d of r.disks) {
    const how = d.created ? ' (created)' : d.swapped ? ' (new LV swapped in, old one removed)' : ' (overwritten in place)';
    const from = d.mode === 'chunks' ? '  from the chunk store' : '';
    const zeros =
      d.skipZeros && d.bytesWritten < d.rawBytes ? `  ${formatBytes(d.rawBytes - d.bytesWritten)} of zero chunks left unwritten (new thin LV)` : '';
    // a chunked disk without a whole-disk sha256 is proven chunk by chunk (each against its id)
    const check = d.sha256 === null ? 'every chunk sha256 ok' : 'sha256 ok';
    lines.push(`  ${d.target}  ${d.lv}${how}  ${formatBytes(d.rawBytes)}${from}  ${check}${zeros}  ${formatSeconds(d.seconds)}`);
  }
  for (const x of r.replaced) lines.push(`  replaced domain ${x.name} (${x.uuid}, was ${x.state})`);
  for (const lv of r.leftoverLvs) lines.push(`  could not remove the old LV ${lv}: lvremove it`);
  return lines;
}

export const restoreCommand: CommandModule<GlobalArgs, RestoreArgs> = {
  command: 'restore <set>',
  describe: 'Restore a backup set: LVs, disk images, the domain, its memory state',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('set', { type: 'string', demandOption: true, describe: 'the set folder, DEST/DOMAIN/YYYYMMDDTHHMMSSZ' })
      .option('name', { type: 'string', describe: 'restore a copy under this name (new UUID and MACs; it boots from its disks)' })
      .option('vg', { type: 'string', describe: 'restore every disk into this volume group (same LV names)' })
      .option('map', { type: 'string', array: true, describe: 'restore one disk into an LV: --map vda=/dev/VG/LV (repeatable)' })
      .option('thin-pool', { type: 'string', describe: 'create the LVs of thin disks as thin volumes in this pool' })
      .option('memory', { type: 'boolean', default: true, describe: 'resume from the memory state (--no-memory: boot from the disks)' })
      .option('start', {
        type: 'boolean',
        default: true,
        describe: 'run the domain afterwards (--no-start: leave it shut off, or paused with a memory state)',
      })
      .option('force', {
        alias: 'f',
        type: 'boolean',
        describe: 'replace existing LVs (a new LV is written beside each, then swapped in) and an existing domain of the same name/UUID',
      })
      .option('in-place', { type: 'boolean', describe: 'with --force: write over the existing LVs (when the VG has no room for a second copy)' })
      .option('dry-run', { alias: 'n', type: 'boolean', describe: 'print the plan, change nothing' })
      .option('threads', { type: 'number', describe: 'decompression threads (default: one per CPU)' }) as unknown as Argv<RestoreArgs>,
  handler: async (argv) => {
    let options: RestoreOptions;
    try {
      options = {
        set: argv.set,
        ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
        ...(argv.name !== undefined ? { name: argv.name } : {}),
        ...(argv.vg !== undefined ? { vg: argv.vg } : {}),
        ...(argv.map !== undefined ? { map: parseDiskMap(argv.map) } : {}),
        ...(argv['thin-pool'] !== undefined ? { thinPool: argv['thin-pool'] } : {}),
        ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
        force: argv.force ?? false,
        ...(argv['in-place'] ? { inPlace: true } : {}),
        noMemory: !argv.memory,
        noStart: !argv.start,
        dryRun: argv['dry-run'] ?? false,
      };
      checkRestoreOptions(options);
    } catch (e) {
      throw asUsage(errorWithFlags(e));
    }
    const progress = restoreProgress(argv);
    const r: RestoreResult = await runCancellable(
      (signal) => restore({ ...options, signal, onProgress: progress.onProgress }).catch((e: unknown) => Promise.reject(errorWithFlags(e))),
      {
        cleanup: progress.done,
        usageOptions: RESTORE_OPTION_NAMES,
      },
    );
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, command: 'restore', ...r }, null, 2)}\n`);
      return;
    }
    const lines = r.dryRun ? [...formatPlan(r.plan), 'dry run: nothing was changed'] : formatResult(r);
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
