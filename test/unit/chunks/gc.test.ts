/**
 * Garbage collection: what it removes, and that it is crash-safe (kill -9 of a GC process mid-sweep)
 * and safe against a writer running at the same time. The GC runs in a real child process (the
 * library transpiled to plain JS), so the kill and the concurrency are real.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChunkStore, chunkIdAt, writeChunkList, writeDiskToStore, type ChunkList, type GcResult } from '../../../src/index.js';
import { diskImage, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

let built: Promise<string> | undefined;
/** src/ transpiled to JS in a temporary folder (the child loads only what chunks/ imports), plus the child script. */
function buildChild(): Promise<string> {
  built ??= (async () => {
    const { dir } = tempDir('kvmbak-gc-child-');
    const files = (await readdir(join(ROOT, 'src'), { recursive: true }))
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      .map((f) => `src/${f}`);
    for (const f of files) {
      const js = ts.transpileModule(await readFile(join(ROOT, f), 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
        fileName: f,
      }).outputText;
      await mkdir(dirname(join(dir, f)), { recursive: true });
      await writeFile(join(dir, f.replace(/\.ts$/, '.js')), js);
    }
    await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
    await writeFile(join(dir, 'gc-child.mjs'), CHILD);
    return dir;
  })();
  return built;
}
afterAll(async () => {
  if (built) await rm(await built, { recursive: true, force: true });
});

/**
 * node gc-child.mjs STORE LISTS_JSON MODE [GO_FILE]: collects garbage and prints the result as JSON.
 * MODE 'kill-in-mark' / 'kill-in-sweep': SIGKILL itself at the first progress event of that phase.
 * MODE 'pause-in-sweep': at the first sweep progress event, print {"paused":true} and block (the
 * whole process, GC included) until GO_FILE exists.
 */
const CHILD = `
import { existsSync } from 'node:fs';
import { ChunkStore } from './src/chunks/index.js';
const [root, listsJson, mode, goFile] = process.argv.slice(2);
const lists = JSON.parse(listsJson);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
let paused = false;
const store = await ChunkStore.open(root);
const result = await store.collectGarbage({
  lists: () => lists,
  onProgress(e) {
    if (mode === 'kill-in-' + e.phase) process.kill(process.pid, 'SIGKILL');
    if (mode === 'pause-in-sweep' && e.phase === 'sweep' && !paused) {
      paused = true;
      process.stdout.write(JSON.stringify({ paused: true, removedSoFar: e.chunksRemoved }) + '\\n');
      while (!existsSync(goFile)) Atomics.wait(sleeper, 0, 0, 20);
    }
  },
});
process.stdout.write(JSON.stringify(result) + '\\n');
`;

function runChild(
  root: string,
  lists: string[],
  mode: string,
  goFile = '',
): { lines: AsyncGenerator<Record<string, any>>; exit: Promise<{ code: number | null; signal: string | null; stderr: string }> } {
  const ready = buildChild();
  let stderr = '';
  const queue: Record<string, any>[] = [];
  let wake: (() => void) | undefined;
  let done = false;
  const exit = ready.then(
    (dir) =>
      new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => {
        const proc = spawn(process.execPath, [join(dir, 'gc-child.mjs'), root, JSON.stringify(lists), mode, goFile], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let buf = '';
        proc.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            queue.push(JSON.parse(buf.slice(0, i)));
            buf = buf.slice(i + 1);
            wake?.();
          }
        });
        proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        proc.on('exit', (code, signal) => {
          done = true;
          wake?.();
          resolve({ code, signal, stderr });
        });
      }),
  );
  async function* lines(): AsyncGenerator<Record<string, any>> {
    for (;;) {
      while (queue.length) yield queue.shift() as Record<string, any>;
      if (done) return;
      await new Promise<void>((r) => (wake = r));
    }
  }
  return { lines: lines(), exit };
}

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const OLD = Date.now() / 1000 - 3600;

/** A store with two referenced disks (their lists written) and `garbage` unreferenced old chunks. */
async function fixture(garbage: number): Promise<{ store: ChunkStore; lists: string[]; listValues: ChunkList[]; garbageContents: Buffer[] }> {
  const store = await ChunkStore.forDestination(dir);
  const lists: string[] = [];
  const listValues: ChunkList[] = [];
  for (const seed of [1, 2]) {
    writeFileSync(join(dir, `d${seed}`), diskImage(3 * 4 * MiB + 777, seed));
    const { list } = await writeDiskToStore(join(dir, `d${seed}`), store);
    await writeChunkList(join(dir, `d${seed}.chunks`), list);
    lists.push(join(dir, `d${seed}.chunks`));
    listValues.push(list);
  }
  const garbageContents: Buffer[] = [];
  // Garbage left by sets pruned long ago (written directly: the subject here is the GC, not put).
  for (let i = 0; i < garbage; i++) {
    const raw = randomBytes(64);
    garbageContents.push(raw);
    const path = store.pathOf(createHash('sha256').update(raw).digest('hex'));
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(path, gzipSync(raw), { mode: 0o600 });
    utimesSync(path, OLD, OLD);
  }
  // The referenced chunks are old too: only the mark keeps them.
  for (const l of listValues) for (let i = 0; i < l.ids.length / 32; i++) utimesSync(store.pathOf(chunkIdAt(l, i)), OLD, OLD);
  await store.close();
  return { store: await ChunkStore.forDestination(dir), lists, listValues, garbageContents };
}

function countChunks(root: string): number {
  let n = 0;
  for (const d of readdirSync(root)) if (/^[0-9a-f]{4}$/.test(d)) n += readdirSync(join(root, d)).filter((f) => /^[0-9a-f]{64}$/.test(f)).length;
  return n;
}

async function expectAllReferencedIntact(store: ChunkStore, lists: ChunkList[]): Promise<void> {
  for (const l of lists) for (let i = 0; i < l.ids.length / 32; i++) await store.get(chunkIdAt(l, i));
}

describe('collectGarbage', () => {
  it('removes exactly the unreferenced chunks and leftover temporary files', async () => {
    const { store, lists, listValues } = await fixture(40);
    const before = countChunks(store.root);
    const tmp = join(store.pathOf(chunkIdAt(listValues[0], 0)), '..', '.tmp-deadbeef-1-abc');
    writeFileSync(tmp, 'partial');
    const r = (await store.collectGarbage({ lists: () => lists })) as Extract<GcResult, { status: 'collected' }>;
    expect(r.status).toBe('collected');
    expect(r.listsRead).toBe(2);
    expect(r.chunksRemoved).toBe(40);
    expect(r.tempFilesRemoved).toBe(1);
    expect(r.missingCount).toBe(0);
    expect(r.bytesFreed).toBeGreaterThan(40 * 64);
    expect(countChunks(store.root)).toBe(before - 40);
    expect(existsSync(tmp)).toBe(false);
    await expectAllReferencedIntact(store, listValues);
    expect(readdirSync(join(store.root, '.gc'))).toEqual([]);
  });

  it('accepts ChunkList values, keeps chunks younger than the grace period, and reports referenced chunks that are missing', async () => {
    const { store, listValues } = await fixture(5);
    const young = await store.put(randomBytes(100));
    await store.close();
    const gone = chunkIdAt(listValues[1], 3); // random data: used once
    await rm(store.pathOf(gone));
    const s = await ChunkStore.forDestination(dir);
    const r = await s.collectGarbage({ lists: () => listValues, graceMs: 60_000 });
    expect(r).toMatchObject({ status: 'collected', chunksRemoved: 5, missingCount: 1, missing: [{ id: gone, list: '#1' }] });
    expect(await s.has(young.id)).toBe(true);
  });

  it('removes nothing when a list is damaged', async () => {
    const { store, lists } = await fixture(10);
    const before = countChunks(store.root);
    const text = await readFile(lists[1], 'utf8');
    await writeFile(lists[1], text.slice(0, text.length - 30)); // truncated
    await expect(store.collectGarbage({ lists: () => lists })).rejects.toThrow(/the list is truncated/);
    expect(countChunks(store.root)).toBe(before);
    expect(readdirSync(join(store.root, '.gc'))).toEqual([]);
  });

  it('does not run while a writer is announced, and runs once it has closed', async () => {
    const { store, lists } = await fixture(10);
    const writer = await ChunkStore.forDestination(dir);
    await writer.put(Buffer.from('a backup in progress'));
    const busy = await store.collectGarbage({ lists: () => lists });
    expect(busy.status).toBe('busy');
    expect((busy as Extract<GcResult, { status: 'busy' }>).writers[0]).toMatchObject({
      status: 'alive',
      owner: { kind: 'writer', pid: process.pid },
    });
    expect(readdirSync(join(store.root, '.gc'))).toEqual([]);
    await writer.close();
    // the grace period keeps the writer's own (unreferenced) chunk out of the count
    expect(await store.collectGarbage({ lists: () => lists, graceMs: 600_000 })).toMatchObject({ status: 'collected', chunksRemoved: 10 });
  });

  it('kill -9 of the GC process during the mark removes nothing', async () => {
    const { store, lists, listValues } = await fixture(300);
    const before = countChunks(store.root);
    const { exit } = runChild(store.root, lists, 'kill-in-mark');
    expect(await exit).toMatchObject({ signal: 'SIGKILL' });
    expect(countChunks(store.root)).toBe(before);
    await expectAllReferencedIntact(store, listValues);
  });

  it('kill -9 of the GC process mid-sweep leaves every referenced chunk intact; the next GC finishes the job', async () => {
    const { store, lists, listValues } = await fixture(800);
    const before = countChunks(store.root);
    const { exit } = runChild(store.root, lists, 'kill-in-sweep');
    const r = await exit;
    expect(r, r.stderr).toMatchObject({ signal: 'SIGKILL' });
    const after = countChunks(store.root);
    expect(after).toBeLessThan(before); // it was sweeping...
    expect(after).toBeGreaterThan(before - 800); // ...and was killed before the end
    await expectAllReferencedIntact(store, listValues);
    // its presence file is left behind, stale: a writer does not wait for it, the next GC removes it
    expect(readdirSync(join(store.root, '.gc')).filter((f) => !f.startsWith('.'))).toHaveLength(1);
    const w = await ChunkStore.forDestination(dir);
    await w.put(Buffer.from('written after the crash'));
    await w.close();
    // (a grace period keeps the chunk just written: unreferenced, it would go otherwise)
    const again = await store.collectGarbage({ lists: () => lists, graceMs: 600_000 });
    expect(again).toMatchObject({ status: 'collected', chunksRemoved: after - (before - 800) });
    expect(countChunks(store.root)).toBe(before - 800 + 1); // + the young chunk written after the crash
    await expectAllReferencedIntact(store, listValues);
    expect(readdirSync(join(store.root, '.gc'))).toEqual([]);
  });

  it('a writer that starts during a GC waits for it; the chunks it writes or reuses survive', async () => {
    const { store, lists, listValues, garbageContents } = await fixture(400);
    const go = join(dir, 'go');
    const child = runChild(store.root, lists, 'pause-in-sweep', go);
    const first = await child.lines.next();
    expect(first.value).toMatchObject({ paused: true });

    // A backup starts now: a new chunk, and chunks equal to garbage the GC may be about to remove.
    const writer = await ChunkStore.forDestination(dir);
    let settled = false;
    const fresh = randomBytes(1000);
    const puts = Promise.all([writer.put(fresh), ...garbageContents.slice(0, 50).map((g) => writer.put(g))]).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 1000));
    expect(settled).toBe(false); // waiting for the GC
    writeFileSync(go, '');
    const result = (await child.lines.next()).value;
    expect(result).toMatchObject({ status: 'collected', chunksRemoved: 400 });
    expect((await child.exit).code).toBe(0);
    const written = await puts;
    await writer.close();
    for (const w of written) expect(await store.has(w.id)).toBe(true);
    expect((await store.get(written[0].id)).equals(fresh)).toBe(true);
    for (const [i, g] of garbageContents.slice(0, 50).entries()) expect((await store.get(written[i + 1].id)).equals(g)).toBe(true);
    await expectAllReferencedIntact(store, listValues);
  });
});
