/**
 * systemd units for unattended backups:
 *   kvmbak.service          runs `kvmbak backup --config FILE` (the file's domains or all)
 *   kvmbak.timer            starts it on a calendar (default nightly), Persistent=, randomized delay
 *   kvmbak-recover.service  at boot, `kvmbak recover --dest D` for every destination of the
 *                           file: a VM that was saved or paused when the host went down
 *                           comes back, leftover snapshots and partial sets go.
 * Every file carries a marker line: install replaces and uninstall removes
 * only files kvmbak wrote, never an administrator's own unit of that name.
 */
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ConfigError, KvmbakError } from '../errors.js';
import { errnoCode, writeFileAtomic } from '../util/fs.js';
import type { KvmbakConfig } from './config.js';

const run = promisify(execFile);

export const SYSTEMD_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_ON_CALENDAR = '*-*-* 02:30:00';
export const DEFAULT_RANDOMIZED_DELAY_SECONDS = 1800;
export const UNIT_NAMES = ['kvmbak.service', 'kvmbak.timer', 'kvmbak-recover.service'] as const;
const MARKER = '# Written by `kvmbak systemd install`; `kvmbak systemd uninstall` removes it.';

export interface SystemdUnitOptions {
  /** The command that runs kvmbak, e.g. [process.execPath, '/usr/lib/node_modules/kvmbak/dist/cli.js']. */
  command: readonly string[];
  /** The configuration file (absolute); its destinations get the recover unit. */
  config: KvmbakConfig;
  /** systemd calendar expression (default nightly at 02:30). */
  onCalendar?: string;
  /** Random delay added to each start, seconds (default 1800). */
  randomizedDelaySeconds?: number;
}

export interface SystemdUnit {
  name: (typeof UNIT_NAMES)[number];
  text: string;
}

/** One ExecStart= word, quoted and escaped as systemd parses it (no shell is involved). */
export function systemdWord(arg: string): string {
  if (/[\n\r\0]/.test(arg)) throw new ConfigError(`a unit command cannot hold a line break or NUL: ${JSON.stringify(arg)}`, 'command');
  const escaped = arg.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[A-Za-z0-9/._:=@+,-]+$/.test(escaped) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** A path for RequiresMountsFor= (space-separated list: spaces escaped). */
function mountPath(p: string): string {
  return p.replace(/%/g, '%%').replace(/\\/g, '\\\\').replace(/ /g, '\\x20');
}

/** The destinations named in the configuration file (the top and every domain section). */
export function configDestinations(config: KvmbakConfig): string[] {
  const all = [config.global.dest, ...Object.values(config.domains).map((d) => d.dest)].filter((d): d is string => d !== undefined);
  return [...new Set(all)].sort();
}

/** The three units' text. */
export function systemdUnits(o: SystemdUnitOptions): SystemdUnit[] {
  const onCalendar = o.onCalendar ?? DEFAULT_ON_CALENDAR;
  if (onCalendar.trim() === '' || /[\n\r]/.test(onCalendar))
    throw new ConfigError(`onCalendar: ${JSON.stringify(onCalendar)} is not a calendar expression`, 'onCalendar');
  const delay = o.randomizedDelaySeconds ?? DEFAULT_RANDOMIZED_DELAY_SECONDS;
  if (!(Number.isInteger(delay) && delay >= 0))
    throw new ConfigError(`randomizedDelaySeconds must be a whole number >= 0, got ${delay}`, 'randomizedDelaySeconds');
  const cmd = (...args: string[]): string => [...o.command, ...args].map(systemdWord).join(' ');
  const dests = configDestinations(o.config);
  const uri = o.config.global.uri !== undefined ? ['--uri', o.config.global.uri] : [];
  const mounts = dests.length > 0 ? [`RequiresMountsFor=${dests.map(mountPath).join(' ')}`] : [];
  const libvirt = ['Wants=libvirtd.service', 'After=libvirtd.service virtqemud.service libvirt-guests.service local-fs.target'];
  const lines = (...ls: string[]): string => `${[MARKER, ...ls].join('\n')}\n`;
  return [
    {
      name: 'kvmbak.service',
      text: lines(
        '[Unit]',
        'Description=kvmbak: back up the configured libvirt domains',
        ...libvirt,
        ...mounts,
        '',
        '[Service]',
        'Type=oneshot',
        `ExecStart=${cmd('backup', '--config', o.config.file)}`,
        // SIGTERM cancels the run cleanly (VM resumed, snapshots removed): give it time to.
        'TimeoutStopSec=10min',
        'Nice=10',
        'IOSchedulingClass=best-effort',
        'IOSchedulingPriority=7',
        'UMask=0077',
      ),
    },
    {
      name: 'kvmbak.timer',
      text: lines(
        '[Unit]',
        'Description=kvmbak: scheduled backups',
        '',
        '[Timer]',
        `OnCalendar=${onCalendar}`,
        'Persistent=true',
        `RandomizedDelaySec=${delay}`,
        'Unit=kvmbak.service',
        '',
        '[Install]',
        'WantedBy=timers.target',
      ),
    },
    {
      name: 'kvmbak-recover.service',
      text: lines(
        '[Unit]',
        'Description=kvmbak: bring back VMs and clean up after backups interrupted by a crash or power loss',
        ...libvirt,
        ...mounts,
        'Before=kvmbak.service',
        '',
        '[Service]',
        'Type=oneshot',
        // On the file's libvirt connection (the backups use it): the default one may hold other domains.
        ...(dests.length > 0 ? dests.map((d) => `ExecStart=${cmd('recover', '--dest', d, ...uri)}`) : [`ExecStart=${cmd('recover', ...uri)}`]),
        'RemainAfterExit=yes',
        'UMask=0077',
        '',
        '[Install]',
        'WantedBy=multi-user.target',
      ),
    },
  ];
}

export interface InstallOptions extends SystemdUnitOptions {
  /** Where the units go (default /etc/systemd/system). */
  unitDir?: string;
  /** Run systemctl daemon-reload and enable the timer and the recover unit (default true). */
  systemctl?: boolean;
}

async function ownedOrAbsent(path: string): Promise<boolean> {
  try {
    return (await readFile(path, 'utf8')).startsWith(MARKER);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return true;
    throw e;
  }
}

/** systemd's own parser judges the calendar expression (when systemd-analyze is there). */
async function checkCalendar(spec: string): Promise<void> {
  try {
    await run('systemd-analyze', ['calendar', spec]);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    const why = String((e as { stderr?: unknown }).stderr ?? '')
      .trim()
      .split('\n')[0];
    throw new ConfigError(
      `onCalendar: ${JSON.stringify(spec)} is not a calendar expression systemd accepts${why ? ` (${why})` : ''}; e.g. "*-*-* 02:30:00" or "daily"`,
      'onCalendar',
    );
  }
}

async function systemctl(...args: string[]): Promise<void> {
  try {
    await run('systemctl', args);
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '')
      .trim()
      .split('\n')[0];
    throw new KvmbakError(`systemctl ${args.join(' ')} failed: ${stderr || (e as Error).message}`, 'KVMBAK_SYSTEMCTL', { cause: e });
  }
}

/** Writes the units (0644, as systemd's own) and enables the timer and the boot-time recover unit. Returns the paths written. */
export async function installSystemdUnits(o: InstallOptions): Promise<string[]> {
  const dir = o.unitDir ?? SYSTEMD_UNIT_DIR;
  const units = systemdUnits(o);
  await checkCalendar(o.onCalendar ?? DEFAULT_ON_CALENDAR);
  for (const u of units) {
    if (!(await ownedOrAbsent(join(dir, u.name)))) {
      throw new KvmbakError(`${join(dir, u.name)} exists and was not written by kvmbak; move it away first`, 'KVMBAK_UNIT_EXISTS');
    }
  }
  const written: string[] = [];
  for (const u of units) {
    await writeFileAtomic(join(dir, u.name), u.text, 0o644);
    written.push(join(dir, u.name));
  }
  if (o.systemctl ?? true) {
    await systemctl('daemon-reload');
    await systemctl('enable', 'kvmbak.timer', 'kvmbak-recover.service');
    await systemctl('start', 'kvmbak.timer');
  }
  return written;
}

/** Stops and disables the timer, removes the units kvmbak wrote. Returns the paths removed. */
export async function uninstallSystemdUnits(o: { unitDir?: string; systemctl?: boolean } = {}): Promise<string[]> {
  const dir = o.unitDir ?? SYSTEMD_UNIT_DIR;
  const mine: string[] = [];
  for (const name of UNIT_NAMES) {
    const path = join(dir, name);
    if (
      (await ownedOrAbsent(path)) &&
      (await readFile(path).then(
        () => true,
        () => false,
      ))
    )
      mine.push(path);
  }
  if ((o.systemctl ?? true) && mine.length > 0) {
    await systemctl('disable', '--now', 'kvmbak.timer').catch(() => undefined);
    await systemctl('disable', 'kvmbak-recover.service').catch(() => undefined);
  }
  for (const p of mine) await rm(p, { force: true });
  if ((o.systemctl ?? true) && mine.length > 0) await systemctl('daemon-reload');
  return mine;
}
