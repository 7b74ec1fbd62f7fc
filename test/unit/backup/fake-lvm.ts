/**
 * The fake lvm2 of the backup tests: a CommandRunner (the process boundary
 * kvmbak's Lvm class talks through) answering from the simulated world of
 * fake-lvm-world.ts, whose every answer is built from lab captures. It records
 * each argv, can fail any call with a realistic lvm2 exit and stderr, and lets a
 * test act at a given call (e.g. write to an origin after its snapshot exists).
 */
import { fileURLToPath } from 'node:url';
import type { CommandResult, CommandRunner, CommandRunOptions } from '../../../src/exec/index.js';
import { Lvm } from '../../../src/lvm/index.js';
import {
  FAILURE_STDERR,
  type Templates,
  type WorldLv,
  type WorldSpec,
  type WorldState,
  createWorld,
  invalidate,
  loadTemplates,
  runInWorld,
  setUsage,
  snapshotNamed,
  snapshots,
} from './fake-lvm-world.js';

export const LVM_FIXTURES = fileURLToPath(new URL('../../fixtures/lvm/', import.meta.url));

let templates: Templates | undefined;
/** The captured rows and runs (read once). */
export function lvmTemplates(): Templates {
  templates ??= loadTemplates(LVM_FIXTURES);
  return templates;
}

export const MiB = 1024 * 1024;

export interface FailOptions {
  /** Only calls with this argument (e.g. 'vg0/web-root' or a snapshot's VG/LV). */
  arg?: string;
  /** Matching calls let through first (default 0). */
  skip?: number;
  /** How many matching calls fail (default 1). */
  count?: number;
  exitCode?: number;
  stderr?: string;
}

/** Runs as if inside the command (the command waits for it). */
type Hook = (argv: string[], world: FakeLvm) => void | Promise<void>;

export class FakeLvm implements CommandRunner {
  readonly state: WorldState;
  readonly lvm: Lvm;
  /** Options of every call, to check the environment kvmbak gives lvm2. */
  readonly options: (CommandRunOptions | undefined)[] = [];
  #hooks: { command: string; nth: number; seen: number; fn: Hook; after: boolean }[] = [];

  constructor(dir: string, spec: WorldSpec) {
    this.state = createWorld(dir, lvmTemplates(), spec);
    this.lvm = new Lvm(this);
  }

  async run(file: string, args: readonly string[], options?: CommandRunOptions): Promise<CommandResult> {
    const argv = [file, ...args];
    this.options.push(options);
    await this.#fire(argv, false);
    // A real process takes a moment: let timers and other calls interleave.
    await new Promise((r) => setImmediate(r));
    const res = runInWorld(this.state, argv);
    await this.#fire(argv, true);
    return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode, signal: null };
  }

  async #fire(argv: string[], after: boolean): Promise<void> {
    for (const h of this.#hooks) {
      if (h.command !== argv[0] || h.after !== after) continue;
      h.seen++;
      if (h.seen === h.nth) await h.fn(argv, this);
    }
  }

  /** Runs `fn` at the nth call (1-based) of `command`, before it runs (or after, with `after`). */
  at(command: string, nth: number, fn: Hook, after = false): void {
    this.#hooks.push({ command, nth, seen: 0, fn, after });
  }

  /** Makes calls of `command` fail (see FailOptions), with lvm2's exit code 5 and a real message by default. */
  fail(command: string, o: FailOptions = {}): void {
    this.state.failures.push({
      command,
      ...(o.arg !== undefined ? { arg: o.arg } : {}),
      skip: o.skip ?? 0,
      count: o.count ?? 1,
      exitCode: o.exitCode ?? 5,
      stderr: o.stderr ?? FAILURE_STDERR[command] ?? `  ${command} failed\n`,
    });
  }

  /** Argv of every call of `command`. */
  calls(command?: string): string[][] {
    return this.state.calls.filter((c) => command === undefined || c[0] === command);
  }

  /** Snapshots that exist now. */
  snapshots(): WorldLv[] {
    return snapshots(this.state);
  }

  snapshot(name: string): WorldLv {
    return snapshotNamed(this.state, name);
  }

  lv(vg: string, lv: string): WorldLv {
    const l = this.state.lvs.find((x) => x.vg === vg && x.lv === lv);
    if (!l) throw new Error(`no LV ${vg}/${lv}`);
    return l;
  }

  setUsage(name: string, percent: number): void {
    setUsage(this.state, name, percent);
  }

  invalidate(name: string): void {
    invalidate(this.state, name);
  }
}
