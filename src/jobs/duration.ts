import { ConfigError } from '../errors.js';

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

/**
 * Parses a duration as admins write it: `90` (seconds), `30s`, `15m`, `26h`,
 * `2d`, `1w`, or a sum such as `1d12h`. Returns seconds; throws a ConfigError
 * naming `option` otherwise.
 */
export function parseDuration(text: string | number, option: string): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text <= 0) throw new ConfigError(`${option}: ${text} is not a duration above 0`, option);
    return text;
  }
  const s = text.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(s) && Number(s) > 0) return Number(s);
  let total = 0;
  let rest = s;
  const part = /^(\d+(?:\.\d+)?)\s*([smhdw])/;
  while (rest.length > 0) {
    const m = part.exec(rest);
    if (!m) {
      total = NaN;
      break;
    }
    total += Number(m[1]) * UNITS[m[2]!]!;
    rest = rest.slice(m[0].length).trimStart();
  }
  if (s === '' || !(total > 0)) {
    throw new ConfigError(`${option}: '${text}' is not a duration; write e.g. 90s, 15m, 26h or 2d`, option);
  }
  return total;
}

/** Seconds for people: 93784 → "1d 2h", 125 → "2m 5s". */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}
