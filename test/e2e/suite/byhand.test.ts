// The README's restore by hand into other LVs, run as the README shows it: its code block is read
// from README.md, the variable lines get this lab's values, every other line runs unchanged under
// `bash -e -o pipefail`. Then the domain must run again from its saved memory on the new LV, and
// the LV must hold the manifest's rawSha256. lab-one is put back on its own LV afterwards.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, readManifest, type BackupResult } from '../../../src/index.js';
import { domState, lab, sh, sha256Of, virsh, type LabFixture } from './lab.js';
import { bash, fillIn, readmeBlock } from './readme-block.js';

const DOMAIN = 'lab-one';
const NEW_LV = 'lab-one-byhand';

describe('restore by hand into other LVs, exactly as the README shows it', () => {
  let fx: LabFixture;
  let work: string;
  let set: BackupResult;

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-byhand-');
    if ((await domState(DOMAIN)) !== 'running') await virsh('start', DOMAIN);
    const dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    set = await backup({ domain: DOMAIN, dest, uri: fx.uri, format: 'image', mode: 'save' });
  });

  afterAll(async () => {
    // lab-one back on its own LV, running, for the other suites.
    await virsh('destroy', DOMAIN).catch(() => undefined);
    await virsh('undefine', DOMAIN).catch(() => undefined);
    if (set) await virsh('define', join(set.setPath, 'domain.xml'));
    await virsh('start', DOMAIN);
    await sh('lvremove', ['-q', '-y', `${fx.vg}/${NEW_LV}`], { check: false });
    rmSync(work, { recursive: true, force: true });
  });

  it('the README lines restore lab-one onto a new LV: it resumes from its memory there, the LV holds rawSha256, SHA256SUMS still matches', async () => {
    const m = await readManifest(set.setPath);
    expect(m.disks).toHaveLength(1);
    const d = m.disks[0]!;
    const script = fillIn(readmeBlock('## Restore without kvmbak', 'virsh restore memory.state --xml'), {
      SET: set.setPath,
      OLD: d.source,
      IMG: d.image!.file,
      SIZE: String(d.lvSize),
      VG: fx.vg,
      LV: NEW_LV,
    });
    // The README's precondition: the domain is shut off.
    await virsh('destroy', DOMAIN);
    const run = await bash(script, { LIBVIRT_DEFAULT_URI: fx.uri });
    expect(run.code, `${script}\n---\n${run.out}`).toBe(0);

    expect((await virsh('domstate', '--reason', DOMAIN)).stdout.trim()).toBe('running (restored)');
    const newPath = `/dev/${fx.vg}/${NEW_LV}`;
    for (const xml of [(await virsh('dumpxml', DOMAIN)).stdout, (await virsh('dumpxml', '--inactive', DOMAIN)).stdout]) {
      expect(xml).toContain(`'${newPath}'`);
      expect(xml).not.toContain(`'${d.source}'`);
    }
    expect(await sha256Of(newPath, d.image!.rawBytes)).toBe(d.image!.rawSha256);
    const sums = await new Promise<number | null>((resolve) => {
      spawn('sha256sum', ['-c', '--strict', 'SHA256SUMS'], { cwd: set.setPath, stdio: 'ignore' }).on('close', resolve);
    });
    expect(sums).toBe(0);
  });
});
