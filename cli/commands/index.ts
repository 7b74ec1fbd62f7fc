import type { CommandModule } from 'yargs';
import { backupCommand, inspectCommand } from './backup.js';
import { configCommand } from './config.js';
import { statusCommand } from './status.js';
import { systemdCommand } from './systemd.js';
import { imageCommand } from './image.js';
import { listCommand } from './list.js';
import { pruneCommand } from './prune.js';
import { recoverCommand } from './recover.js';
import { restoreCommand } from './restore.js';
import { verifyCommand } from './verify.js';

/** Every kvmbak subcommand, one module each. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  backupCommand,
  inspectCommand,
  restoreCommand,
  verifyCommand,
  listCommand,
  pruneCommand,
  recoverCommand,
  imageCommand,
  configCommand,
  statusCommand,
  systemdCommand,
];
