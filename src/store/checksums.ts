/**
 * SHA256SUMS in the exact format of GNU `sha256sum` (text mode): one line
 * `<64 hex digits><space><space><relative path>\n` per file, sorted by path
 * (byte order), so `cd SET && sha256sum -c SHA256SUMS` checks a set without
 * kvmbak. Paths never need sha256sum's backslash escaping: set paths cannot
 * hold backslashes or newlines (relativePathProblem).
 *
 * manifest.json is not listed: it is written after SHA256SUMS (its presence
 * marks the set complete) and records every data file's sha256 itself;
 * verifySetFiles checks that both lists agree.
 */
import { ConfigError } from '../errors.js';
import { relativePathProblem } from '../util/fs.js';

export interface ChecksumEntry {
  /** Path relative to the set folder, e.g. 'disks/vda.img.gz'. */
  file: string;
  /** Lowercase hex sha256. */
  sha256: string;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Renders SHA256SUMS text; throws ConfigError on a bad path, a bad hash or a repeated file. */
export function formatChecksums(entries: readonly ChecksumEntry[]): string {
  const seen = new Set<string>();
  for (const e of entries) {
    const problem = relativePathProblem(e.file);
    if (problem !== null) throw new ConfigError(`checksum entry ${JSON.stringify(e.file)}: the path ${problem}`, 'file');
    if (!SHA256_RE.test(e.sha256)) {
      throw new ConfigError(`checksum entry ${e.file}: ${JSON.stringify(e.sha256)} is not a sha256 (64 lowercase hex digits)`, 'sha256');
    }
    if (seen.has(e.file)) throw new ConfigError(`checksum entry ${e.file} is listed twice`, 'file');
    seen.add(e.file);
  }
  return [...entries]
    .sort((a, b) => byteOrder(a.file, b.file))
    .map((e) => `${e.sha256}  ${e.file}\n`)
    .join('');
}

export interface ParsedChecksums {
  entries: ChecksumEntry[];
  /** Lines that are not `<sha256>  <path>` (1-based line numbers in the messages). */
  problems: string[];
}

/** Parses SHA256SUMS text (text ' ' or binary '*' markers accepted, as sha256sum -c does). */
export function parseChecksums(text: string): ParsedChecksums {
  const entries: ChecksumEntry[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (!m) {
      // the line itself is not quoted: a file that is not a checksum list may hold secrets
      problems.push(`line ${i + 1} is not "<sha256>  <file>"`);
      return;
    }
    entries.push({ sha256: m[1].toLowerCase(), file: m[2] });
  });
  return { entries, problems };
}
