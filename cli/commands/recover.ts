import type { Argv, CommandModule } from 'yargs';
import { recover } from '../../src/index.js';
import { asUsage } from '../errors.js';

interface RecoverArgs {
  uri?: string;
  json?: boolean;
  dest?: string;
  domain?: string;
}

export const recoverCommand: CommandModule<object, RecoverArgs> = {
  command: 'recover [domain]',
  describe: 'Finish or undo interrupted backups: bring VMs back, remove leftover snapshots, delete partial sets',
  builder: (y: Argv) =>
    y
      .positional('domain', { type: 'string', describe: 'only this domain (needs --dest)' })
      .option('dest', { alias: 'd', type: 'string', describe: 'backup destination whose interrupted runs to recover' }) as unknown as Argv<RecoverArgs>,
  handler: async (argv) => {
    let r;
    try {
      r = await recover({
        ...(argv.dest !== undefined ? { dest: argv.dest } : {}),
        ...(argv.domain !== undefined ? { domain: argv.domain } : {}),
        ...(argv.uri !== undefined ? { uri: argv.uri } : {}),
      });
    } catch (e) {
      throw asUsage(e);
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
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    if (!ok) {
      for (const e of r.errors) process.stderr.write(`kvmbak: ${e}\n`);
      process.exitCode = 1;
    }
  },
};
