import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import ts from 'typescript';
import { type Manifest, type ManifestDisk, manifestFormatFor } from '../../../src/manifest/index.js';
import { type BackupSet, commitSet, createSet, openChunkStore, openSetFile, storeChunked, writeSetFile } from '../../../src/store/index.js';
import { sampleManifest } from '../manifest/sample.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

export async function tempDir(prefix = 'kvmbak-store-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export const sha256 = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');

/** A small raw disk image as multi-member gzip: 3 chunks of 64 KiB, the second all zeroes. */
export function makeImage(): { raw: Buffer; gz: Buffer; members: number[]; chunkSize: number } {
  const chunkSize = 64 * 1024;
  const raw = Buffer.alloc(3 * chunkSize);
  for (let i = 0; i < chunkSize; i++) raw[i] = (i * 7) & 0xff;
  raw.fill('kvmbak', 2 * chunkSize);
  const parts: Buffer[] = [];
  const members: number[] = [];
  let offset = 0;
  for (let i = 0; i < 3; i++) {
    const part = gzipSync(raw.subarray(i * chunkSize, (i + 1) * chunkSize), { level: 3 });
    members.push(offset);
    offset += part.length;
    parts.push(part);
  }
  return { raw, gz: Buffer.concat(parts), members, chunkSize };
}

export interface BuiltSet {
  set: BackupSet;
  manifest: Manifest;
  raw: Buffer;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * A raw disk of 4 MiB chunks, one per tag: the chunk of tag 'zero' is all zeroes, any other is
 * its tag's text repeated (so equal tags make equal chunks, shared in the store).
 */
export function taggedDisk(tags: readonly string[]): Buffer {
  const raw = Buffer.alloc(tags.length * CHUNK);
  tags.forEach((tag, i) => {
    if (tag !== 'zero') raw.fill(`chunk ${tag} of a kvmbak test disk\n`, i * CHUNK, (i + 1) * CHUNK);
  });
  return raw;
}

/** The chunked disk of a set built with format 'chunks' (default: taggedDisk of 3 shared chunks and one of its own). */
function chunkedDiskFor(domain: string, now: Date, disk: Buffer | undefined): Buffer {
  return disk ?? taggedDisk(['shared-1', 'zero', 'shared-2', `${domain} ${now.toISOString()}`]);
}

export interface BuildSetOptions {
  commit?: boolean;
  mode?: 'save' | 'pause';
  /** 'image' (default): disks/vda.img.gz and memory.state; 'chunks': both in DEST/.chunks (kvmbak/2). */
  format?: 'image' | 'chunks';
  /** The raw disk for format 'chunks' (default: see chunkedDiskFor). */
  disk?: Buffer;
  /** Format 'chunks': the thin_delta base the disk's entry records. */
  base?: { lv: string; thinId: number };
}

/**
 * Writes a real set: domain.xml, memory.state (streamed), disks/vda.img.gz (positional writes), or
 * with format 'chunks' the disk and the memory state into the real chunk store (storeChunked);
 * commits unless told not to.
 */
export async function buildSet(dest: string, domain: string, now: Date, options: BuildSetOptions = {}): Promise<BuiltSet> {
  const set = await createSet(dest, domain, { now });
  const mode = options.mode ?? 'save';
  const xml = await writeSetFile(set, 'domain.xml', `<domain type='kvm'><name>${domain}</name></domain>\n`);
  if (options.format === 'chunks') return buildChunkedSet(set, now, mode, xml.sha256, options);

  let memory: Manifest['memory'] = null;
  if (mode === 'save') {
    const state = Buffer.from(`LibvirtQemudSave ${domain} ${now.toISOString()}\n`.repeat(100));
    const w = await openSetFile(set, 'memory.state');
    await new Promise<void>((resolve, reject) => {
      const s = w.createWriteStream();
      s.on('error', reject);
      s.end(state, () => resolve());
    });
    const { bytes } = await w.commit();
    memory = { file: 'memory.state', bytes, sha256: sha256(state) };
  }

  const img = makeImage();
  const w = await openSetFile(set, 'disks/vda.img.gz');
  // Members written out of order at their offsets, as parallel compressors would.
  for (const i of [2, 0, 1]) {
    const end = i + 1 < img.members.length ? img.members[i + 1] : img.gz.length;
    await w.handle.write(img.gz, img.members[i], end - img.members[i], img.members[i]);
  }
  await w.commit();

  const base = sampleManifest();
  const manifest: Manifest = {
    ...base,
    createdAt: now.toISOString(),
    domain: { ...base.domain, name: domain },
    mode,
    memory,
    domainXml: { file: 'domain.xml', sha256: xml.sha256 },
    disks: [
      {
        ...base.disks[0],
        capacity: img.raw.length,
        physical: img.raw.length,
        lvSize: img.raw.length,
        image: {
          file: 'disks/vda.img.gz',
          rawBytes: img.raw.length,
          rawSha256: sha256(img.raw),
          storedBytes: img.gz.length,
          fileSha256: sha256(img.gz),
          chunkSize: img.chunkSize,
          members: img.members,
          zeroChunks: 1,
        },
      },
    ],
  };
  if (options.commit !== false) await commitSet(set, manifest);
  return { set, manifest, raw: img.raw };
}

async function* bytesOf(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b;
}

async function buildChunkedSet(set: BackupSet, now: Date, mode: 'save' | 'pause', xmlSha256: string, options: BuildSetOptions): Promise<BuiltSet> {
  const raw = chunkedDiskFor(set.domain, now, options.disk);
  const store = await openChunkStore(set.dest);
  let memory: Manifest['memory'] = null;
  let disk;
  try {
    await mkdir(join(set.path, 'disks'), { mode: 0o700 });
    disk = await storeChunked(store, bytesOf(raw), set, 'disks/vda.chunks', { concurrency: 2 });
    if (mode === 'save') {
      const state = Buffer.from(`LibvirtQemudSave ${set.domain} ${now.toISOString()}\n`.repeat(100));
      const m = await storeChunked(store, bytesOf(state), set, 'memory.chunks', { concurrency: 2 });
      memory = { bytes: state.length, sha256: sha256(state), chunks: { ...m.chunks, file: 'memory.chunks' } };
    }
  } finally {
    await store.close();
  }
  const base = sampleManifest();
  const { image: _image, ...diskBase } = base.disks[0];
  const chunks = options.base !== undefined ? { ...disk.chunks, base: options.base } : disk.chunks;
  const vda: ManifestDisk = { ...diskBase, capacity: raw.length, physical: raw.length, lvSize: raw.length, chunks };
  const manifest: Manifest = {
    ...base,
    createdAt: now.toISOString(),
    domain: { ...base.domain, name: set.domain },
    mode,
    memory,
    domainXml: { file: 'domain.xml', sha256: xmlSha256 },
    disks: [vda],
  };
  manifest.format = manifestFormatFor(manifest);
  if (options.commit !== false) await commitSet(set, manifest);
  return { set, manifest, raw };
}

/** Every path under `dir` (relative) with its permission bits. */
export async function modes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      out[relative(dir, p)] = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) await visit(p);
    }
  };
  await visit(dir);
  return out;
}

let builtModules: Promise<string> | undefined;

/**
 * The store's sources (and the chunk store's, which store/ imports) transpiled to plain ESM
 * JavaScript in a temporary folder, so that child node processes can run the real code (locks
 * and journals across processes). Built once per test file with the project's own TypeScript
 * compiler.
 */
export function buildChildModules(): Promise<string> {
  builtModules ??= (async () => {
    const out = await tempDir('kvmbak-child-');
    // all of src/: the child loads only what store/ imports (chunks/, and the archive/ it uses)
    const files = (await readdir(join(root, 'src'), { recursive: true }))
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      .map((f) => `src/${f}`);
    for (const f of files) {
      const source = await readFile(join(root, f), 'utf8');
      const js = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
        fileName: f,
      }).outputText;
      const target = join(out, f.replace(/\.ts$/, '.js'));
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, js);
    }
    await writeFile(join(out, 'package.json'), '{"type":"module"}\n');
    await writeFile(join(out, 'child.mjs'), CHILD_SCRIPT);
    return out;
  })();
  return builtModules;
}

export async function removeChildModules(): Promise<void> {
  if (builtModules) await rm(await builtModules, { recursive: true, force: true });
  builtModules = undefined;
}

/**
 * The child: `node child.mjs <command> <json args>`. It prints JSON lines: {event:'ready'} then
 * waits for a 'go' line on stdin (when asked), runs the command, prints its result, then obeys:
 * 'hold' (wait until stdin closes, then release), 'exit' (exit without releasing), 'kill' (SIGKILL itself).
 * Command 'gc' collects DEST's chunk store (collectDestinationGarbage) and SIGKILLs itself at the
 * first progress event of phase `killIn` ('mark' or 'sweep'), printing {event:'dying', progress} first.
 */
const CHILD_SCRIPT = `
import { createInterface } from 'node:readline';
import * as store from './src/store/index.js';
const [command, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => { lines.once('line', resolve); lines.once('close', () => resolve(null)); });
const closed = new Promise((resolve) => lines.once('close', resolve));
say({ event: 'ready', pid: process.pid });
if (args.waitForGo) await nextLine();
let release = async () => {};
try {
  if (command === 'lock') {
    const lock = await store.acquireLock(args.dest, args.domain, args.operation ?? 'backup');
    release = () => lock.release();
    say({ event: 'acquired', owner: lock.owner });
  } else if (command === 'journal') {
    const set = await store.createSet(args.dest, args.domain, { now: new Date(args.now) });
    const w = await store.openSetFile(set, 'disks/vda.img.gz');
    await w.handle.write(Buffer.from('partial image'));
    const j = await store.openJournal(set);
    for (const step of args.steps) await j.record(step);
    say({ event: 'recorded', path: j.path, set });
  } else if (command === 'gc') {
    const r = await store.collectDestinationGarbage(args.dest, {
      onProgress(e) {
        if (e.phase === args.killIn) {
          say({ event: 'dying', progress: e });
          process.kill(process.pid, 'SIGKILL');
        }
      },
    });
    say({ event: 'collected', result: r });
  }
} catch (e) {
  say({ event: 'error', code: e.code, message: e.message, holder: e.holder ?? null });
}
if (args.then === 'kill') process.kill(process.pid, 'SIGKILL');
if (args.then === 'exit') process.exit(0);
await closed;
await release();
say({ event: 'released' });
process.exit(0);
`;

export interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves with the next JSON line printed by the child. */
  next(): Promise<Record<string, any>>;
  /** Resolves when the child has exited (and been reaped). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function spawnChild(command: 'lock' | 'journal' | 'gc', args: Record<string, unknown>): Promise<Child> {
  const dir = await buildChildModules();
  const proc = spawn(process.execPath, [join(dir, 'child.mjs'), command, JSON.stringify(args)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const queue: Record<string, any>[] = [];
  const waiters: ((v: Record<string, any>) => void)[] = [];
  let buf = '';
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const msg = JSON.parse(line) as Record<string, any>;
      const w = waiters.shift();
      if (w) w(msg);
      else queue.push(msg);
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    proc,
    exited,
    next() {
      const q = queue.shift();
      if (q) return Promise.resolve(q);
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        void exited.then(() => setTimeout(() => reject(new Error(`child exited; stderr: ${stderr}`)), 50));
      });
    },
  };
}
