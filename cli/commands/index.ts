import type { CommandModule } from 'yargs';
import { backupCommand, inspectCommand } from './backup.js';
import { imageCommand } from './image.js';
import { recoverCommand } from './recover.js';

/** Every kvmbak subcommand, one module each. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [backupCommand, inspectCommand, recoverCommand, imageCommand];
