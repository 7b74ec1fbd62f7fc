/** The CLI's human rendering of restore plans and results (cli/commands/restore.ts), on real results. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatPlan, formatResult } from '../../../cli/commands/restore.js';
import { Lvm } from '../../../src/lvm/index.js';
import { restore } from '../../../src/restore/index.js';
import { type TestEnv, buildSet, dropWeb01, testEnv } from './helpers.js';

let env: TestEnv;
beforeEach(async () => {
  env = await testEnv();
});
afterEach(async () => {
  await env.cleanup();
});

describe('formatPlan', () => {
  it('numbers the steps after a line about the backup, notes last', async () => {
    const built = await buildSet(env);
    env.lvm.addVg('vg1');
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 8 << 20 });
    const r = await restore(
      { set: built.set.path, force: true, map: { vdb: 'vg1/data' }, dryRun: true },
      { hypervisor: env.hv, lvm: new Lvm(env.lvm), lvSuffix: () => 's1' },
    );
    expect(formatPlan(r.plan)).toEqual([
      `restore plan for ${built.set.path}`,
      `  backup of web-01 taken ${built.manifest.createdAt} on testhost, mode save`,
      '  1. vda: create a new LV vg0/web-root-kvmbak-new-s1 (321 KiB, linear) beside vg0/web-root and write 321 KiB from disks/vda.img.gz, checking its sha256',
      `  2. vdb: create vg1/data (192 KiB, linear) and write 192 KiB from disks/vdb.img.gz, checking its sha256`,
      '  3. replace domain web-01 (shut off)',
      '  4. swap the new LVs in (lvrename): vg0/web-root-kvmbak-new-s1 → web-root; the old ones are removed once the domain is defined',
      '  5. undefine web-01, define domain web-01 with disks vdb → vg1/data',
      `  6. resume web-01 from memory.state (where it was at ${built.manifest.createdAt})`,
      "  note: vg0/web-root holds 8.0 MiB; it is replaced by an LV of the disk's recorded size, 321 KiB",
      '  note: the disks change in the domain XML, so the memory state is resumed with domain.xml rewritten (libvirt requires it to match the saved domain); if libvirt refuses, restore with --no-memory',
    ]);
  });
});

describe('a chunked set (a disk identified by its chunk list, no whole-disk sha256)', () => {
  it('the plan says each chunk is checked; the result line says every chunk sha256 was', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause' });
    await dropWeb01(env.hv);
    const deps = { hypervisor: env.hv, lvm: new Lvm(env.lvm) };
    const plan = await restore({ set: built.set.path, dryRun: true }, deps);
    expect(formatPlan(plan.plan).filter((l) => /^ {2}\d\. vd[ab]:/.test(l))).toEqual([
      "  1. vda: create vg0/web-root (321 KiB, linear) and write 321 KiB from disks/vda.chunks (chunks from the chunk store), checking each chunk's sha256",
      "  2. vdb: create vg0/web-data-01 (192 KiB, linear) and write 192 KiB from disks/vdb.chunks (chunks from the chunk store), checking each chunk's sha256",
    ]);
    const r = await restore({ set: built.set.path, noStart: true }, deps);
    const lines = formatResult(r);
    expect(lines.slice(1).map((l) => l.replace(/ {2}[\d.]+ (ms|s)$/, ''))).toEqual([
      '  vda  vg0/web-root (created)  321 KiB  from the chunk store  every chunk sha256 ok',
      '  vdb  vg0/web-data-01 (created)  192 KiB  from the chunk store  every chunk sha256 ok',
    ]);
    expect(lines.join('\n')).not.toContain('undefined');
  });
});
