/** Child processes without a shell: the CommandRunner interface and its local implementation. */
export {
  COMMAND_BASE_ENV,
  LocalCommandRunner,
  type CommandRunner,
  type LocalCommandRunnerOptions,
  type CommandRunOptions,
  type CommandResult,
} from './runner.js';
export { CommandNotFoundError, CommandOutputTooLargeError, CommandTimeoutError, PACKAGE_OF_PROGRAM, formatCommand } from './errors.js';
