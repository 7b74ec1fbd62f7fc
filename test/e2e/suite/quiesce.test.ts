// kvmbak --mode quiesce against a real qemu-guest-agent. lab-linux is the lab's own Debian image
// booted again inside the lab (test/e2e/guest/fixture.sh): root on a qcow2 overlay (a file disk,
// left out with --exclude vda), data on an LV that the guest mounts at /mnt/data, qemu-ga with an
// fsfreeze hook, so every freeze and thaw is logged in the guest's journal, which the guest
// forwards to its serial console, a file here. To hang the agent, the guest's
// kvmbak-lab-agent-stop (test/e2e/image/) stops qemu-ga with SIGSTOP and continues it when the
// host writes "cont" to the virtio port kvmbak.resume.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backup, readManifest } from '../../../src/index.js';
import {
  LogFollower,
  agentAnswers,
  agentCommand,
  domState,
  guestWriteFile,
  kvmbakLvs,
  lab,
  lvmSettled,
  pipeline,
  runCli,
  sendResume,
  sh,
  virsh,
  waitForAgent,
  type LabFixture,
} from './lab.js';

/** --agent-timeout where the agent is stopped: each call to it gives up after this. */
const AGENT_TIMEOUT = 3;
/**
 * How long a kvmbak command facing a stopped agent may take before it counts as hung itself (and
 * is killed): a few agent timeouts plus the command's own work on a busy 2-core host (planning
 * alone took 30 s there), far below "forever". The agent stays stopped for longer.
 */
const HUNG_AFTER_MS = 180_000;
const FREEZE = /executing fsfreeze hook with arg 'freeze'/;
const THAW = /executing fsfreeze hook with arg 'thaw'/;
const STOPPED = /stopping qemu-ga \(pid \d+\) with SIGSTOP/;

/**
 * lab-linux is defined by the fixture and runs only for this suite, which runs last
 * (vitest.config.ts; guest/fixture.sh says why): started here, destroyed at the end. Its agent
 * answers about a minute after the start with nested KVM; this is the limit.
 */
const BOOT_WAIT_MS = 8 * 60_000;

describe('kvmbak --mode quiesce with a real guest agent (lab-linux)', () => {
  let fx: LabFixture;
  let dom: string;

  /** `kvmbak backup` of lab-linux's data disk in mode quiesce, as image files, with JSON events. */
  function quiesceBackup(dest: string, agentTimeout: number): string[] {
    const args = ['backup', dom, '--dest', dest, '-c', fx.uri, '--format', 'image', '--mode', 'quiesce'];
    return [...args, '--exclude', 'vda', '--agent-timeout', String(agentTimeout), '--json'];
  }
  let work: string;
  /** The agent is stopped and waits for "cont" on kvmbak.resume. */
  let agentStopped = false;
  /** A test left its stopped agent and interrupted run to the next one: keep them. */
  let handOver = false;

  function freshDest(): string {
    return mkdtempSync(join(work, 'dest-'));
  }

  function sets(dest: string): string[] {
    try {
      return readdirSync(join(dest, dom)).filter((n) => !n.startsWith('.'));
    } catch {
      return [];
    }
  }

  /** Stops qemu-ga in the guest (SIGSTOP, one second after this returns) and waits until it is. */
  async function stopAgent(): Promise<void> {
    const log = new LogFollower(fx.linux.serialLog);
    await agentCommand(dom, 'guest-exec', { path: '/usr/local/sbin/kvmbak-lab-agent-stop', arg: ['1'] });
    agentStopped = true;
    await log.waitFor([STOPPED]);
  }

  /**
   * Continues a stopped agent, waits until it answers, and thaws the guest: commands libvirt sent
   * to the stopped agent run when it continues, a freeze among them.
   */
  async function continueAgent(): Promise<void> {
    if (!agentStopped) return;
    await sendResume(fx.linux.resumeSocket);
    agentStopped = false;
    await waitForAgent(dom, 60_000);
    await agentCommand(dom, 'guest-fsfreeze-thaw');
    expect(await agentCommand(dom, 'guest-fsfreeze-status')).toBe('thawed');
  }

  beforeAll(async () => {
    fx = lab();
    dom = fx.linux.domain;
    if (fx.linux.error !== null) throw new Error(`the lab has no inner Linux guest with an agent: ${fx.linux.error}`);
    work = mkdtempSync('/var/tmp/kvmbak-e2e-quiesce-');
    if ((await domState(dom)) !== 'running') await virsh('start', dom);
    await waitForAgent(dom, BOOT_WAIT_MS);
  }, BOOT_WAIT_MS + 60_000);
  afterEach(async () => {
    if (handOver) return;
    await continueAgent();
    expect(await kvmbakLvs()).toEqual([]);
  });
  afterAll(async () => {
    if (work) rmSync(work, { recursive: true, force: true });
    if (dom && (await domState(dom)) !== 'shut off') await virsh('destroy', dom);
  });

  it('a quiesce backup freezes and thaws the guest through its agent (both in the guest log); the set holds what the guest had just written', async () => {
    const mounts = (await agentCommand(dom, 'guest-get-fsinfo')) as { mountpoint: string }[];
    expect(mounts.map((m) => m.mountpoint)).toContain(fx.linux.dataMount);
    // Written through the agent without fsync: only in the guest's page cache until the freeze.
    const marker = `kvmbak quiesce marker ${Date.now()}\n`;
    await guestWriteFile(dom, `${fx.linux.dataMount}/marker.txt`, marker);
    const log = new LogFollower(fx.linux.serialLog);
    const dest = freshDest();
    const r = await backup({ domain: dom, dest, uri: fx.uri, format: 'image', mode: 'quiesce', exclude: ['vda'], agentTimeoutSeconds: 10 });
    expect(r).toMatchObject({ mode: 'quiesce', stateBefore: 'running', stateAfter: 'running', downtimeMs: 0 });
    expect(r.skipped.map((s) => s.target)).toEqual(['vda']);
    expect(r.disks.map((d) => d.target)).toEqual(['vdb']);
    // qemu-ga logs the hook runs: freeze (before freezing), then thaw (after thawing).
    const text = await log.waitFor([FREEZE, THAW]);
    console.log(
      `[guest log]\n${text
        .split('\n')
        .filter((l) => /qemu-ga/.test(l))
        .join('\n')}`,
    );
    expect(await agentCommand(dom, 'guest-fsfreeze-status')).toBe('thawed');
    // The image is a clean ext4 with the marker in it: the freeze flushed the guest's cache.
    const m = await readManifest(r.setPath);
    const raw = join(work, 'lab-linux-vdb.raw');
    const st = await pipeline([['zcat', [join(r.setPath, m.disks[0]!.image!.file)]]], { stdout: raw });
    expect(st.map((s) => s.code)).toEqual([0]);
    const fsck = await sh('e2fsck', ['-f', '-n', raw], { check: false });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    const cat = await sh('debugfs', ['-R', 'cat /marker.txt', raw]);
    expect(cat.stdout).toBe(marker);
  });

  it('with the agent stopped (SIGSTOP), a quiesce backup fails within the agent timeout and --quiesce-fallback pause backs up instead', async () => {
    await stopAgent();
    const dest = freshDest();
    const args = quiesceBackup(dest, AGENT_TIMEOUT);
    let freezeAt = 0;
    const onEvent = (e: Record<string, unknown>): void => {
      if (e.type === 'phase' && e.phase === 'freeze') freezeAt = performance.now();
    };
    const failed = await runCli(args, { deadlineMs: HUNG_AFTER_MS, onEvent });
    console.log(
      `[measure] quiesce backup with a stopped agent (--agent-timeout ${AGENT_TIMEOUT}) failed ${((performance.now() - freezeAt) / 1000).toFixed(1)} s ` +
        `after the freeze began (${(failed.ms / 1000).toFixed(1)} s in all)`,
    );
    expect(failed.hung, 'kvmbak backup hung on the stopped agent').toBe(false);
    expect(failed.code, failed.stderr).toBe(1);
    expect(failed.stderr).toMatch(/guest agent of lab-linux did not freeze .*qemu-guest-agent/);
    expect(await domState(dom)).toBe('running');
    expect(sets(dest)).toEqual([]);
    expect(await kvmbakLvs()).toEqual([]);

    const fell = await runCli([...args, '--quiesce-fallback', 'pause'], { deadlineMs: HUNG_AFTER_MS + 120_000, onEvent });
    console.log(
      `[measure] quiesce backup falling back to pause: ${((performance.now() - freezeAt) / 1000).toFixed(1)} s from the freeze to the end ` +
        `(${(fell.ms / 1000).toFixed(1)} s in all)`,
    );
    expect(fell.hung, 'kvmbak backup --quiesce-fallback pause hung on the stopped agent').toBe(false);
    expect(fell.code, fell.stderr).toBe(0);
    expect(fell.stderr).toMatch(/falling back to --mode pause/);
    expect(await domState(dom)).toBe('running');
    expect(sets(dest)).toHaveLength(1);
    const m = await readManifest(join(dest, dom, sets(dest)[0]!));
    expect(m.mode).toBe('pause');
    // kvmbak did not wait for the agent to come back: it is still stopped.
    expect(await agentAnswers(dom, 2)).toBe(false);
  });

  // The agent stops (its fsfreeze hook arranges it) after a freeze that worked, with kvmbak killed
  // in the window before its thaw: the guest stays frozen and the next agent call goes unanswered.
  let killedDest = '';
  it('kill -9 in the window of a quiesce backup, then the agent stops: the guest stays frozen, the run is left for recover', async () => {
    // The guest's fsfreeze hook stops the agent 20 s after its next run (once), well after the
    // freeze returned and kvmbak was killed.
    await guestWriteFile(dom, '/run/kvmbak-lab-stop-agent-after-freeze', '20');
    const log = new LogFollower(fx.linux.serialLog);
    killedDest = freshDest();
    let killed = false;
    const run = await runCli(quiesceBackup(killedDest, 60), {
      onEvent: (e, kill) => {
        if (!killed && e.type === 'phase' && e.phase === 'snapshot') {
          killed = true;
          kill();
        }
      },
    });
    expect(run.signal, run.stderr).toBe('SIGKILL');
    await lvmSettled();
    await log.waitFor([FREEZE, STOPPED], 90_000);
    agentStopped = true;
    handOver = true;
    expect(await domState(dom)).toBe('running');
    expect(readdirSync(join(killedDest, dom)).some((n) => n.startsWith('.journal'))).toBe(true);
  });

  // recover bounds its agent calls (a timeout set before the thaw, the previous one put back).
  it("kvmbak recover then returns within the agent timeout, even with libvirt's default agent timeout (block): the VM runs, no snapshot is left", async () => {
    expect(handOver, 'the previous test left no stopped agent and interrupted run').toBe(true);
    handOver = false;
    try {
      // libvirt's own default for a domain's agent timeout: block (wait for the agent forever).
      await virsh('guest-agent-timeout', dom, '--timeout', '-2');
      const rec = await runCli(['recover', '--dest', killedDest, '-c', fx.uri], { deadlineMs: HUNG_AFTER_MS });
      console.log(
        `[measure] recover with a stopped agent: ${(rec.ms / 1000).toFixed(1)} s (${rec.hung ? 'hung, killed' : `exit ${rec.code}`})\n${rec.stdout}${rec.stderr}`,
      );
      expect(rec.hung, 'kvmbak recover hung on the stopped agent').toBe(false);
      // The guest stays frozen while its agent is stopped: recover says it could not thaw it, removes
      // the snapshots, and keeps the journal (and the partial set, which has no manifest) for a later run.
      expect(rec.code, rec.stderr).toBe(1);
      expect(rec.stderr).toMatch(/could not bring lab-linux back/);
      expect(await domState(dom)).toBe('running');
      expect(await kvmbakLvs()).toEqual([]);
      for (const id of sets(killedDest)) expect(existsSync(join(killedDest, dom, id, 'manifest.json'))).toBe(false);
      // Once the agent answers again, the next recover thaws the guest and deletes the partial set.
      await continueAgent();
      const again = await runCli(['recover', '--dest', killedDest, '-c', fx.uri], { deadlineMs: HUNG_AFTER_MS });
      expect(again.code, again.stderr).toBe(0);
      expect(sets(killedDest)).toEqual([]);
    } finally {
      // What a hung recover left (snapshots, journal) goes with a second one, the agent answering.
      await continueAgent();
      await runCli(['recover', '--dest', killedDest, '-c', fx.uri], { deadlineMs: HUNG_AFTER_MS });
    }
  });
});
