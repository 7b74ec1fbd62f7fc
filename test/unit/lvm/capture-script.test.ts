/**
 * The fixture capture scripts must run the same lvs/vgs/stat argv as the
 * driver, and the lab script must write every base name the hand-made
 * stand-ins use (so lab captures replace them one for one).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LV_FIELDS, LVM_REPORT_OPTIONS, VG_FIELDS } from '../../../src/lvm/index.js';
import { fixtureFiles } from './helpers.js';

const LAB_SCRIPT = fileURLToPath(new URL('../../e2e/guest/capture-lvm-fixtures.sh', import.meta.url));
const NODM_SCRIPT = fileURLToPath(new URL('../../fixtures/lvm/capture-nodm.sh', import.meta.url));

/** Evaluates the script's constants block with bash and returns the values, exactly. */
function constants(script: string): { report: string[]; lvFields: string; vgFields: string; statFormat: string } {
  const text = readFileSync(script, 'utf8');
  const block = /^# --- Keep equal to src\/lvm\/report\.ts.*\n([\s\S]*?)^# -{20,}$/m.exec(text);
  if (!block) throw new Error(`${script}: constants block not found`);
  const out = execFileSync(
    '/bin/bash',
    ['-c', `${block[1]}\nprintf '%s\\0' "\${#REPORT_OPTIONS[@]}" "\${REPORT_OPTIONS[@]}" "$LV_FIELDS" "$VG_FIELDS" "$STAT_FORMAT"`],
    {
      encoding: 'utf8',
    },
  );
  const parts = out.split('\0').slice(0, -1);
  const n = Number(parts[0]);
  return { report: parts.slice(1, 1 + n), lvFields: parts[1 + n], vgFields: parts[2 + n], statFormat: parts[3 + n] };
}

describe.each([
  ['lab capture script', LAB_SCRIPT],
  ['host capture script', NODM_SCRIPT],
])('%s', (_label, script) => {
  it('uses the report options and field lists of src/lvm/report.ts, and the stat format of Lvm.resolve', () => {
    const c = constants(script);
    expect(c.report).toEqual(LVM_REPORT_OPTIONS);
    expect(c.lvFields).toBe(LV_FIELDS.join(','));
    expect(c.vgFields).toBe(VG_FIELDS.join(','));
    expect(c.statFormat).toBe('%F\n%t:%T\n');
  });

  it('is valid bash', () => {
    execFileSync('/bin/bash', ['-n', script]);
  });
});

it('every lab fixture is a real capture the lab script writes (no hand-made stand-ins left)', () => {
  const text = readFileSync(LAB_SCRIPT, 'utf8');
  const written = new Set<string>(['info']);
  for (const m of text.matchAll(/^\s*(?:lvs_report|vgs_report) ([a-z-]+)/gm)) written.add(m[1]);
  for (const m of text.matchAll(/^\s*run_record ([a-z-]+)/gm)) written.add(`${m[1]}.run`);
  const files = fixtureFiles().filter((f) => f.endsWith('.json') && !f.startsWith('nodm-'));
  expect(files.filter((f) => f.endsWith('.handmade.json'))).toEqual([]);
  const lab = files.map((f) => f.replace(/\.json$/, ''));
  expect(lab.length).toBeGreaterThan(10);
  for (const name of lab) expect(written, `${name}.json is not written by the lab script`).toContain(name);
});
