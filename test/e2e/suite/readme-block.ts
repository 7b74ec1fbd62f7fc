// Running the README's by-hand code blocks in the lab exactly as written: a block is read from
// README.md, its variable lines get the lab's values, every other line runs unchanged under
// `bash -e -o pipefail`.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

const README = join(process.cwd(), 'README.md');

/** The first ```sh block under the README heading `heading` (up to the next `## `) that contains `marker`. */
export function readmeBlock(heading: string, marker: string): string {
  const text = readFileSync(README, 'utf8');
  const start = text.indexOf(heading);
  expect(start, `README.md has no section "${heading}"`).toBeGreaterThanOrEqual(0);
  const end = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const block = blocks.find((b) => b.includes(marker));
  expect(block, `README.md's section "${heading}" shows no block with ${marker}`).toBeDefined();
  return block!;
}

const shellQuote = (v: string): string => `'${v.replace(/'/g, `'\\''`)}'`;

/** The block with its variable lines set to `values` (each must be there exactly once). */
export function fillIn(block: string, values: Record<string, string>): string {
  const seen: string[] = [];
  const script = block
    .split('\n')
    .map((line) => {
      const m = /^([A-Z]+)=\S*(\s+#.*)?$/.exec(line);
      if (!m) return line;
      seen.push(m[1]!);
      expect(values, `README variable ${m[1]} has no value in this test`).toHaveProperty(m[1]!);
      return `${m[1]}=${shellQuote(values[m[1]!]!)}`;
    })
    .join('\n');
  expect(seen.sort()).toEqual(Object.keys(values).sort());
  return script;
}

/** Runs `script` under `bash -e -o pipefail` from `/`, in the C locale; stdout and stderr together. */
export function bash(script: string, env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-e', '-o', 'pipefail', '-c', script], {
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env, LC_ALL: 'C' },
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}
