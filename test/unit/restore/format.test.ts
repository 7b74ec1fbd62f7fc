/** The CLI's human rendering of restore plans and results (cli/commands/restore.ts), on real results. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatPlan } from '../../../cli/commands/restore.js';
import { Lvm } from '../../../src/lvm/index.js';
import { restore } from '../../../src/restore/index.js';
import { type TestEnv, buildSet, testEnv } from './helpers.js';

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
      { hypervisor: env.hv, lvm: new Lvm(env.lvm) },
    );
    expect(formatPlan(r.plan)).toEqual([
      `restore plan for ${built.set.path}`,
      `  backup of web-01 taken ${built.manifest.createdAt} on testhost, mode save`,
      '  1. replace domain web-01 (shut off)',
      `  2. vda: overwrite vg0/web-root (8.0 MiB, existing) and write 321 KiB from disks/vda.img.gz, checking its sha256`,
      `  3. vdb: create vg1/data (192 KiB, linear) and write 192 KiB from disks/vdb.img.gz, checking its sha256`,
      '  4. undefine web-01, define domain web-01 with disks vdb → vg1/data',
      `  5. resume web-01 from memory.state (where it was at ${built.manifest.createdAt})`,
      '  note: vg0/web-root is larger than the disk was (8.0 MiB > 321 KiB); the bytes past 321 KiB are left as they are',
      '  note: the disks change in the domain XML, so the memory state is resumed with domain.xml rewritten (libvirt requires it to match the saved domain); if libvirt refuses, restore with --no-memory',
    ]);
  });
});
