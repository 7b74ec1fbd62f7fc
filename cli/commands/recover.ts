import type { Argv, CommandModule } from 'yargs';
import { type RecoverProgress, recover } from '../../src/index.js';
import { asUsage, errLine, escapeControl, withFlags } from '../errors.js';
import { abortOnSignals } from '../signals.js';

interface RecoverArgs {
  uri?: string;
  json?: boolean;
  quiet?: boolean;
  dest?: string;
  domain?: string;
  'agent-timeout'?: number;
}

/** RecoverOptions field → flag (library messages name the fields). */
const RECOVER_FLAGS: Readonly<Record<string, string>> = { dest: '--dest', uri: '--uri', agentTimeoutSeconds: '--agent-timeout' };

/** Progress on stderr: phase lines on a terminal, JSON lines under --json, nothing with --quiet. */
function recoverProgress(argv: RecoverArgs): (e: RecoverProgress) => void {
  return (e) => {
    if (argv.quiet) return;
    if (argv.json) process.stderr.write(`${JSON.stringify({ event: 'recover', ...e })}\n`);
    else if (e.type === 'warning') errLine(`kvmbak: warning: ${e.message}`);
    else if (process.stderr.isTTY) errLine(`kvmbak: ${e.message}`);
  };
}

export const recoverCommand: CommandModule<object, RecoverArgs> = {
  command: 'recover [domain]',
  describe: 'Finish or undo interrupted backups: bring VMs back, remove leftover snapshots, delete partial sets',
  builder: (y: Argv) =>
    y
      .positional('domain', { type: 'string', describe: 'only this domain (needs --dest)' })
      .option('dest', { alias: 'd', type: 'string', describe: 'backup destination whose interrupted runs to recover' })
      .option('agent-timeout', {
        type: 'number',
        describe: 'seconds to wait for a guest agent to thaw (default 10)',
      }) as unknown as Argv<RecoverArgs>,
  handler: async (argv) => {
    const sig = abortOnSignals();
    let r;
    try {
      r = await recover({
        ...(argv.dest !== undefined ? { dest: argv.dest } : {}),
        ...(argv.domain !== undefined ? { domain: argv.domain } : {}),
        ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
        ...(argv['agent-timeout'] !== undefined ? { agentTimeoutSeconds: argv['agent-timeout'] } : {}),
        signal: sig.signal,
        onProgress: recoverProgress(argv),
      });
    } catch (e) {
      throw asUsage(withFlags(e, RECOVER_FLAGS));
    } finally {
      sig.dispose();
    }
    const ok = r.errors.length === 0;
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ok, ...r }, null, 2)}\n`);
    } else {
      const lines: string[] = [];
      for (const run of r.runs) {
        const head = `${run.domain} ${run.setId}`.trim();
        if (run.skipped !== undefined) lines.push(`${head}: left alone: ${run.skipped}`);
        for (const a of run.actions) lines.push(`${head}: ${a}`);
      }
      for (const s of r.orphanSnapshots) lines.push(`removed orphaned snapshot ${s}`);
      if (lines.length === 0) lines.push('nothing to recover');
      process.stdout.write(`${lines.map((l) => escapeControl(l)).join('\n')}\n`);
    }
    if (!ok) {
      for (const e of r.errors) errLine(`kvmbak: ${e}`);
      process.exitCode = 1;
    }
  },
};
