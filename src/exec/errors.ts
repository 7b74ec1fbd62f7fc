/** Errors of the CommandRunner: the program could not be run to its end. */
import { KvmbakError, type KvmbakErrorOptions } from '../errors.js';

/** Debian packages providing the programs kvmbak runs, for the "install X" hint. */
export const PACKAGE_OF_PROGRAM: Readonly<Record<string, string>> = Object.freeze({
  lvm: 'lvm2',
  lvs: 'lvm2',
  vgs: 'lvm2',
  pvs: 'lvm2',
  lvcreate: 'lvm2',
  lvremove: 'lvm2',
  lvextend: 'lvm2',
  lvchange: 'lvm2',
  lvrename: 'lvm2',
  vgchange: 'lvm2',
  stat: 'coreutils',
  dd: 'coreutils',
  blockdev: 'util-linux',
  virsh: 'libvirt-clients',
  ssh: 'openssh-client',
});

/** Renders a command for messages: arguments with spaces or quotes are JSON-quoted. Display only, never executed. */
export function formatCommand(file: string, args: readonly string[]): string {
  const show = (s: string): string => (s === '' || /[\s"'\\$`]/.test(s) ? JSON.stringify(s) : s);
  return [file, ...args].map(show).join(' ');
}

function defineName(ctor: { prototype: object }, name: string): void {
  Object.defineProperty(ctor.prototype, 'name', { value: name, enumerable: false, configurable: true, writable: true });
}

function baseName(file: string): string {
  const i = file.lastIndexOf('/');
  return i >= 0 ? file.slice(i + 1) : file;
}

/** The program does not exist (ENOENT): names the program and, when known, the package to install. */
export class CommandNotFoundError extends KvmbakError {
  readonly command: string;
  readonly aptPackage: string | undefined;

  constructor(file: string, searchPath: string, options: KvmbakErrorOptions = {}) {
    const pkg = PACKAGE_OF_PROGRAM[baseName(file)];
    const where = file.includes('/') ? `${file} does not exist` : `${file} was not found in PATH (${searchPath})`;
    const fix = pkg ? `install the ${pkg} package (apt-get install ${pkg})` : `install the program that provides ${baseName(file)} or fix PATH`;
    super(`${where}: ${fix}`, 'KVMBAK_COMMAND_NOT_FOUND', options);
    this.command = file;
    this.aptPackage = pkg;
  }
}
defineName(CommandNotFoundError, 'CommandNotFoundError');

/** The program ran longer than its time budget and was killed. */
export class CommandTimeoutError extends KvmbakError {
  readonly command: string;
  readonly args: readonly string[];
  readonly timeoutMs: number;
  readonly stdout: string;
  readonly stderr: string;

  constructor(file: string, args: readonly string[], timeoutMs: number, stdout: string, stderr: string) {
    super(
      `${formatCommand(file, args)} did not finish within ${timeoutMs} ms and was killed; ` +
        'check why it hangs (for lvm2: a suspended device or a held lock) or allow it more time',
      'KVMBAK_COMMAND_TIMEOUT',
    );
    this.command = file;
    this.args = [...args];
    this.timeoutMs = timeoutMs;
    this.stdout = stdout;
    this.stderr = stderr;
  }
}
defineName(CommandTimeoutError, 'CommandTimeoutError');

/** The program printed more than the runner accepts; it was killed. */
export class CommandOutputTooLargeError extends KvmbakError {
  readonly command: string;
  readonly args: readonly string[];
  readonly stream: 'stdout' | 'stderr';
  readonly limitBytes: number;

  constructor(file: string, args: readonly string[], stream: 'stdout' | 'stderr', limitBytes: number) {
    super(
      `${formatCommand(file, args)} wrote more than ${limitBytes} bytes to ${stream} and was killed; ` +
        'raise maxOutputBytes if that much output is expected',
      'KVMBAK_COMMAND_OUTPUT_TOO_LARGE',
    );
    this.command = file;
    this.args = [...args];
    this.stream = stream;
    this.limitBytes = limitBytes;
  }
}
defineName(CommandOutputTooLargeError, 'CommandOutputTooLargeError');
