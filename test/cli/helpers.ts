/** Shared by the CLI tests: where the built CLI is, building it when needed, and running it. */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import ts from 'typescript';
import { join, resolve } from 'node:path';

export const root = resolve(import.meta.dirname, '../..');
export const cli = join(root, 'dist', 'cli.js');

/** Newest mtime under a folder (sources the bundle is built from). */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** `npm run test:cli` builds first; when a test file runs on its own, build a missing or stale bundle. */
export function ensureBuilt(): void {
  if (!existsSync(cli) || statSync(cli).mtimeMs < Math.max(newest(join(root, 'src')), newest(join(root, 'cli')))) {
    execFileSync('npx', ['tsup'], { cwd: root, stdio: 'ignore' });
  }
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** Called with all stderr so far, each time more arrives; may act on the child (e.g. send SIGINT). */
  onStderr?: (text: string, child: ReturnType<typeof spawn>) => void;
}

/** Runs `node dist/cli.js ...args`. */
export function kvmbak(args: string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.env !== undefined ? { env: options.env } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

/**
 * The fake lvm2 executables (test/fixtures/bin) load the world module as plain
 * JavaScript: writes it, transpiled, into `dir` and returns its path.
 */
export async function writeFakeWorldModule(dir: string): Promise<string> {
  const source = readFileSync(join(root, 'test', 'unit', 'backup', 'fake-lvm-world.ts'), 'utf8');
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  const path = join(dir, 'fake-lvm-world.mjs');
  await writeFile(path, js.outputText);
  return path;
}
