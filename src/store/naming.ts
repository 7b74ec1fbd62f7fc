/**
 * Names on disk: DEST/DOMAIN/<set id>, where a set id is the UTC start time
 * in compact ISO 8601 basic form (20261126T031500Z), with '-1', '-2', ...
 * appended when several sets of a domain start within the same second.
 */
import { ConfigError } from '../errors.js';

const SET_ID_RE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z(?:-([1-9]\d{0,5}))?$/;

/** Checks that a domain name can be used as one folder name; throws ConfigError otherwise. */
export function assertDomainName(domain: string): void {
  const problem =
    typeof domain !== 'string' || domain.length === 0
      ? 'is empty'
      : domain.includes('\0')
        ? 'contains a NUL character'
        : domain.includes('/')
          ? "contains '/'"
          : domain === '.' || domain === '..'
            ? `is '${domain}'`
            : Buffer.byteLength(domain) > 255
              ? 'is longer than 255 bytes'
              : null;
  if (problem !== null) {
    throw new ConfigError(
      `invalid domain name ${JSON.stringify(domain)}: it ${problem}, so it cannot name a backup folder; give the libvirt domain name`,
      'domain',
    );
  }
}

/** True when `name` passes assertDomainName. */
export function isValidDomainName(name: string): boolean {
  try {
    assertDomainName(name);
    return true;
  } catch {
    return false;
  }
}

/** The set id for a start time, with an optional collision suffix (seq >= 1). */
export function formatSetId(time: Date, seq = 0): string {
  if (Number.isNaN(time.getTime())) throw new ConfigError('invalid time for a backup set name', 'now');
  const base = time
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
  return seq > 0 ? `${base}-${seq}` : base;
}

export interface ParsedSetId {
  id: string;
  /** Start time, to the second (UTC). */
  time: Date;
  /** Collision suffix: 0 for none, 1 for '-1', ... */
  seq: number;
}

/** Parses a set id; null when `name` is not one. */
export function parseSetId(name: string): ParsedSetId | null {
  const m = SET_ID_RE.exec(name);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  const time = new Date(ms);
  // Reject impossible dates (Date.UTC would roll 20260231 over into March).
  if (formatSetId(time) !== name.replace(/-\d+$/, '')) return null;
  return { id: name, time, seq: m[7] === undefined ? 0 : Number(m[7]) };
}

/** Orders set ids by time, then collision suffix. */
export function compareSetIds(a: Pick<ParsedSetId, 'time' | 'seq'>, b: Pick<ParsedSetId, 'time' | 'seq'>): number {
  return a.time.getTime() - b.time.getTime() || a.seq - b.seq;
}

/** The journal of the run writing set `id`: DEST/DOMAIN/.journal-<id>.json (outside the set folder). */
export function journalFileName(id: string): string {
  return `.journal-${id}.json`;
}

/** The set id a journal file name refers to; null when `name` is not a journal's. */
export function parseJournalFileName(name: string): string | null {
  const m = /^\.journal-(.+)\.json$/.exec(name);
  return m && parseSetId(m[1]) !== null ? m[1] : null;
}

/** The domain lock's file name inside DEST/DOMAIN. */
export const LOCK_FILE = '.lock';
