/**
 * Test helpers for the lvm driver: the fixture loader (lab capture `NAME.json`
 * preferred over `NAME.handmade.json`) and a fake CommandRunner that plays
 * captured output and checks the exact argv of every call.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { CommandRunner, CommandRunOptions, CommandResult } from '../../../src/exec/index.js';

export const FIXTURES = fileURLToPath(new URL('../../fixtures/lvm/', import.meta.url));

/** Path of fixture NAME: `NAME.json` when present (a real capture), else `NAME.handmade.json`. */
export function fixturePath(name: string): string {
  const real = `${FIXTURES}${name}.json`;
  if (existsSync(real)) return real;
  const handmade = `${FIXTURES}${name}.handmade.json`;
  if (existsSync(handmade)) return handmade;
  throw new Error(`fixture ${name} is missing: neither ${name}.json nor ${name}.handmade.json in ${FIXTURES}`);
}

/** True when fixture NAME is still the hand-made stand-in. */
export function isHandmade(name: string): boolean {
  return fixturePath(name).endsWith('.handmade.json');
}

/** The text of a report fixture (stdout of lvs/vgs). */
export function fixture(name: string): string {
  return readFileSync(fixturePath(name), 'utf8');
}

export interface RunRecord {
  argv: string[];
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** A recorded command run (`NAME.run.json` / `NAME.run.handmade.json`). */
export function record(name: string): RunRecord {
  return JSON.parse(readFileSync(fixturePath(`${name}.run`), 'utf8')) as RunRecord;
}

/** Every fixture file name in the folder. */
export function fixtureFiles(): string[] {
  return readdirSync(FIXTURES);
}

/** The lab's VG (the one the lab captures were made in). */
export function labVg(): string {
  return (JSON.parse(fixture('info')) as { vg: string }).vg;
}

/** A report fixture with some LV rows taken out (the state before those LVs were made). */
export function without(name: string, ...lvNames: string[]): string {
  const doc = JSON.parse(fixture(name)) as { report: Array<{ lv: Array<{ lv_name: string }> }> };
  for (const section of doc.report) section.lv = section.lv.filter((r) => !lvNames.includes(r.lv_name));
  return JSON.stringify(doc);
}

/** lvs/vgs output as a successful run. */
export function ok(stdout = '', stderr = ''): CommandResult {
  return { stdout, stderr, exitCode: 0, signal: null };
}

/** The result a recorded run gives. */
export function replay(rec: RunRecord): CommandResult {
  return { stdout: rec.stdout, stderr: rec.stderr, exitCode: rec.exitCode, signal: null };
}

// The exact report argv, written out here independently of src/lvm/report.ts.
export const REPORT = ['--reportformat', 'json', '--units', 'b', '--nosuffix', '--binary', '--config', 'report/list_item_separator=","'];
export const LV_FIELDS =
  'lv_name,vg_name,lv_uuid,lv_full_name,lv_path,lv_dm_path,lv_size,lv_attr,lv_tags,lv_active,lv_active_locally,' +
  'lv_device_open,lv_skip_activation,segtype,lv_layout,lv_role,origin,origin_uuid,origin_size,pool_lv,' +
  'snap_percent,data_percent,metadata_percent,lv_snapshot_invalid,lv_kernel_major,lv_kernel_minor';
export const VG_FIELDS = 'vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,vg_attr,vg_tags,lv_count,snap_count,pv_count';

/** argv of `lvs` for targets (none: every LV, and no `--`). */
export function lvsArgv(...targets: string[]): string[] {
  return ['lvs', ...REPORT, '-o', LV_FIELDS, ...(targets.length ? ['--', ...targets] : [])];
}
export function vgsArgv(...targets: string[]): string[] {
  return ['vgs', ...REPORT, '-o', VG_FIELDS, ...(targets.length ? ['--', ...targets] : [])];
}

export interface Step {
  /** The exact argv expected, program first. */
  argv: string[];
  /** What the command "does". */
  reply: CommandResult | Error;
}

export interface Call {
  argv: string[];
  options: CommandRunOptions | undefined;
}

/**
 * A fake runner at the process boundary: plays `steps` in order, failing the
 * test when a call's argv differs from the next step's or when steps run out.
 */
export class ScriptedRunner implements CommandRunner {
  readonly calls: Call[] = [];
  readonly #steps: Step[];

  constructor(steps: Step[]) {
    this.#steps = [...steps];
  }

  async run(file: string, args: readonly string[], options?: CommandRunOptions): Promise<CommandResult> {
    const argv = [file, ...args];
    this.calls.push({ argv, options });
    const step = this.#steps.shift();
    if (!step) throw new Error(`unexpected command: ${JSON.stringify(argv)}`);
    expect(argv).toEqual(step.argv);
    if (step.reply instanceof Error) throw step.reply;
    return step.reply;
  }

  /** All steps were used. */
  get done(): boolean {
    return this.#steps.length === 0;
  }
}
