import { ConfigError } from '../errors.js';
import { formatBytes, parseSize } from '../util/size.js';

export const GiB = 1024 ** 3;

/** How big a classic snapshot's COW area is asked to be. */
export type SnapshotSizeRequest = { kind: 'default' } | { kind: 'bytes'; bytes: number } | { kind: 'percent'; percent: number };

/**
 * Parses `--snapshot-size`: an absolute size (`2G`, `512M`) or a share of
 * each LV (`10%`, `25%`). Undefined means the default (10% of the LV, at
 * least 1 GiB, never more than the LV).
 */
export function parseSnapshotSize(text: string | number | undefined): SnapshotSizeRequest {
  if (text === undefined || text === '') return { kind: 'default' };
  if (typeof text === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text);
    if (m) {
      const percent = Number(m[1]);
      if (percent <= 0 || percent > 100) {
        throw new ConfigError(
          `snapshotSize: ${text} is out of range; give a share between 1% and 100% of each LV, or a size like 2G`,
          'snapshotSize',
        );
      }
      return { kind: 'percent', percent };
    }
  }
  const bytes = parseSize(text, 'snapshotSize');
  if (bytes <= 0) {
    throw new ConfigError('snapshotSize: must be more than 0; give a size like 2G or a share like 10%', 'snapshotSize');
  }
  return { kind: 'bytes', bytes };
}

/**
 * The COW size for a classic snapshot of an LV of `lvSize` bytes, rounded
 * up to whole extents: the request, by default 10% of the LV but at least
 * 1 GiB, and never more than the LV itself (a snapshot as big as its origin
 * can never overflow).
 */
export function snapshotSizeFor(lvSize: number, extentSize: number, req: SnapshotSizeRequest): number {
  let bytes: number;
  switch (req.kind) {
    case 'default':
      bytes = Math.max(Math.ceil(lvSize * 0.1), GiB);
      break;
    case 'percent':
      bytes = Math.ceil((lvSize * req.percent) / 100);
      break;
    case 'bytes':
      bytes = req.bytes;
      break;
  }
  bytes = Math.min(bytes, lvSize);
  const ext = extentSize > 0 ? extentSize : 4 * 1024 * 1024;
  return Math.max(ext, Math.ceil(bytes / ext) * ext);
}

export function describeShortfall(vg: string, need: number, free: number): string {
  return (
    `volume group ${vg} has ${formatBytes(free)} free but the snapshots need ${formatBytes(need)}; ` +
    `free space in ${vg}, give a smaller \`snapshotSize\`, or leave disks out with \`exclude\``
  );
}
