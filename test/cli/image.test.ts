import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProgressRenderer, formatBytes, formatDuration, renderLine } from '../../cli/render/index.js';
import { type CliOptions, ensureBuilt, kvmbak as run } from './helpers.js';

/** The CLI without colours; `onStderr` may act on the running child (e.g. send SIGINT). */
const kvmbak = (args: string[], onStderr?: CliOptions['onStderr']) =>
  run(args, { env: { ...process.env, FORCE_COLOR: '0' }, ...(onStderr ? { onStderr } : {}) });

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** True when a temporary file of `dest` (`<dest>.<random>.partial`) is left beside it. */
const partialOf = (dest: string) => readdirSync(dirname(dest)).some((f) => f.startsWith(`${basename(dest)}.`) && f.endsWith('.partial'));

let dir: string;
let data: Buffer;
beforeAll(async () => {
  ensureBuilt();
  dir = await mkdtemp(join(tmpdir(), 'kvmbak-cli-image-'));
  // text, zeros and random data over several 64 KiB chunks
  const text = Buffer.from('kvmbak disk image test line\n'.repeat(5000));
  data = Buffer.concat([text, Buffer.alloc(300_000), randomBytes(200_000), text.subarray(0, 12345)]);
  await writeFile(join(dir, 'disk.raw'), data);
}, 120_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('kvmbak image pack / unpack', () => {
  it('packs with a human summary on stdout, zcat reads it, mode 0600', async () => {
    const r = await kvmbak(['image', 'pack', join(dir, 'disk.raw'), join(dir, 'h.gz'), '--chunk-size', '64K', '--threads', '2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^packed .*disk\.raw \(.+\) into .*h\.gz \(.+\) in /);
    expect(r.stdout).toContain(`sha256       ${sha256(data)}  (raw data)`);
    expect(r.stderr).toBe(''); // stderr is not a TTY: no bar
    expect((await stat(join(dir, 'h.gz'))).mode & 0o777).toBe(0o600);
    const z = execFileSync('zcat', [join(dir, 'h.gz')], { maxBuffer: 64 << 20 });
    expect(sha256(z)).toBe(sha256(data));
  });

  it('--json: one result document on stdout, JSON progress lines on stderr; unpack --index round-trips in parallel', async () => {
    const p = await kvmbak(['image', 'pack', join(dir, 'disk.raw'), join(dir, 'j.gz'), '--chunk-size', '64K', '--level', '6', '--json']);
    expect(p.code).toBe(0);
    const doc = JSON.parse(p.stdout);
    expect(doc).toMatchObject({ ok: true, command: 'image pack', bytes: data.byteLength, sha256: sha256(data), chunkSize: 65536, level: 6 });
    expect(doc.fileSha256).toBe(sha256(await readFile(join(dir, 'j.gz'))));
    const lines = p.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(JSON.parse(l)).toMatchObject({ type: 'progress', label: 'pack' });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ phase: 'sync', bytesDone: data.byteLength });

    await writeFile(join(dir, 'j.json'), p.stdout);
    const u = await kvmbak(['image', 'unpack', join(dir, 'j.gz'), join(dir, 'j.out'), '--index', join(dir, 'j.json'), '--json', '--quiet']);
    expect(u.code).toBe(0);
    expect(u.stderr).toBe('');
    expect(JSON.parse(u.stdout)).toMatchObject({ ok: true, mode: 'parallel', verified: true, bytes: data.byteLength, sha256: sha256(data) });
    expect(Buffer.compare(await readFile(join(dir, 'j.out')), data)).toBe(0);
  });

  it('unpacks any gzip file streamed, verifying --sha256', async () => {
    execFileSync('sh', ['-c', 'gzip -3 -c "$1" > "$2"', 'sh', join(dir, 'disk.raw'), join(dir, 'plain.gz')]);
    const u = await kvmbak(['image', 'unpack', join(dir, 'plain.gz'), join(dir, 'plain.out'), '--sha256', sha256(data)]);
    expect(u.code).toBe(0);
    expect(u.stdout).toMatch(/^unpacked .* streamed\n {2}sha256 {7}[0-9a-f]{64} {2}\(raw data, verified\)\n/);
    expect(Buffer.compare(await readFile(join(dir, 'plain.out')), data)).toBe(0);
  });

  it('a wrong --sha256 fails with one line, exit 1 and no file', async () => {
    const u = await kvmbak(['image', 'unpack', join(dir, 'plain.gz'), join(dir, 'bad.out'), '--sha256', '0'.repeat(64)]);
    expect(u.code).toBe(1);
    expect(u.stderr).toMatch(/^kvmbak: raw sha256 of image .* is [0-9a-f]{64}, expected 0{64}: the image is damaged or not the one expected\n$/);
    expect(existsSync(join(dir, 'bad.out')) || partialOf(join(dir, 'bad.out'))).toBe(false);
  });

  it('a missing source: one clear line, exit 1, no partial file', async () => {
    const r = await kvmbak(['image', 'pack', join(dir, 'missing.raw'), join(dir, 'm.gz')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`kvmbak: source ${join(dir, 'missing.raw')} does not exist; check the path\n`);
    expect(existsSync(join(dir, 'm.gz')) || partialOf(join(dir, 'm.gz'))).toBe(false);
    const j = await kvmbak(['image', 'pack', join(dir, 'missing.raw'), join(dir, 'm.gz'), '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, error: { code: 'KVMBAK_SOURCE_MISSING' } });
  });

  it('a truncated image: one line naming the damage, exit 1, no partial file', async () => {
    const gz = await readFile(join(dir, 'j.gz'));
    await writeFile(join(dir, 'cut.gz'), gz.subarray(0, gz.byteLength - 100));
    for (const extra of [[], ['--index', join(dir, 'j.json')]]) {
      const r = await kvmbak(['image', 'unpack', join(dir, 'cut.gz'), join(dir, 'cut.out'), ...extra]);
      expect(r.code).toBe(1);
      expect(
        r.stderr
          .split('\n')
          .filter((l) => !l.startsWith('kvmbak: note: '))
          .join('\n'),
      ).toMatch(/^kvmbak: image .*cut\.gz is truncated: .*use a complete copy\n$/);
      expect(existsSync(join(dir, 'cut.out')) || partialOf(join(dir, 'cut.out'))).toBe(false);
    }
  });

  it('without --index, --size or --sha256: says once that a cut at a member boundary goes unnoticed', async () => {
    // the first two members of j.gz (64 KiB chunks): a complete gzip file on its own
    const doc = JSON.parse(await readFile(join(dir, 'j.json'), 'utf8')) as { members: number[] };
    const gz = await readFile(join(dir, 'j.gz'));
    await writeFile(join(dir, 'cut2.gz'), gz.subarray(0, doc.members[2]));
    const r = await kvmbak(['image', 'unpack', join(dir, 'cut2.gz'), join(dir, 'cut2.out')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(
      'kvmbak: note: without --index, --size or --sha256, an image cut exactly at a gzip member boundary cannot be told from a complete one\n',
    );
    const j = await kvmbak(['image', 'unpack', join(dir, 'cut2.gz'), join(dir, 'cut3.out'), '--json']);
    expect(JSON.parse(j.stderr.split('\n')[0]!)).toMatchObject({ type: 'note' });
    // with a check, no note, and the cut is caught
    const s = await kvmbak(['image', 'unpack', join(dir, 'cut2.gz'), join(dir, 'cut4.out'), '--size', String(data.byteLength)]);
    expect(s.code).toBe(1);
    expect(s.stderr).not.toContain('note:');
  });

  it.each([
    [['image', 'pack', 'only-one-arg']],
    [['image', 'pack', 'a', 'b', '--level', '0']],
    [['image', 'pack', 'a', 'b', '--chunk-size', 'huge']],
    [['image', 'unpack', 'a', 'b', '--sha256', 'nothex']],
    [['image', 'frobnicate']],
    [['image']],
  ])('bad usage %j: exit 2', async (args) => {
    const r = await kvmbak(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^kvmbak: /);
    expect(r.stderr).toContain("Run 'kvmbak --help' for usage.");
  });

  it('SIGINT aborts cleanly: exit 130, partial file removed', async () => {
    await writeFile(join(dir, 'big.raw'), randomBytes(48 << 20));
    const dest = join(dir, 'big.gz');
    let sent = false;
    const r = await kvmbak(
      ['image', 'pack', join(dir, 'big.raw'), dest, '--chunk-size', '64K', '--level', '9', '--threads', '1', '--json'],
      (err, child) => {
        // the first progress line proves the pack is under way
        if (!sent && err.includes('"type":"progress"')) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    );
    expect(sent).toBe(true);
    expect(r.code).toBe(130);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, error: { code: 'ABORT_ERR' } });
    expect(existsSync(dest) || partialOf(dest)).toBe(false);
  });
});

describe('cli/render progress', () => {
  const sink = (isTTY: boolean) => {
    const out: string[] = [];
    const stream = { isTTY, columns: 100, write: (t: string) => out.push(t) } as unknown as NodeJS.WriteStream;
    return { out, stream };
  };

  it('draws bytes, percent, rate and ETA on one line', () => {
    const line = renderLine('pack', { phase: 'pack', bytesDone: 512 * 1024 ** 2, bytesTotal: 2 * 1024 ** 3, rate: 128 * 1024 ** 2 }, 120);
    expect(line).toBe('pack  [######..................]   25%  512 MiB / 2.00 GiB  128 MiB/s  ETA 0:12');
    expect(renderLine('unpack', { phase: 'unpack', bytesDone: 3000, rate: 0 }, 120)).toBe('unpack  2.93 KiB');
    expect(renderLine('pack', { phase: 'sync', bytesDone: 10, bytesTotal: 10, rate: 5 }, 120)).toContain('syncing to disk');
    expect(renderLine('pack', { phase: 'pack', bytesDone: 1, bytesTotal: 2, rate: 1, note: 'x'.repeat(200) }, 60)).toHaveLength(60);
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatDuration(3723)).toBe('1:02:03');
  });

  it('TTY: redraws with \\r and clears at the end; not a TTY: silent; --json: JSON lines; --quiet: nothing', () => {
    const ev = { phase: 'pack', bytesDone: 5, bytesTotal: 10, rate: 1 };
    const tty = sink(true);
    const r = createProgressRenderer({ label: 'pack', stream: tty.stream, intervalMs: 0 });
    r.update(ev);
    r.update({ ...ev, bytesDone: 10 });
    r.done();
    expect(tty.out[0]).toMatch(/^\rpack {2}\[/);
    expect(tty.out.at(-1)).toBe('\r\x1b[K');

    const pipe = sink(false);
    const p = createProgressRenderer({ label: 'pack', stream: pipe.stream });
    p.update(ev);
    p.done();
    expect(pipe.out).toEqual([]);

    const json = sink(false);
    const j = createProgressRenderer({ label: 'pack', json: true, stream: json.stream });
    j.update(ev);
    expect(JSON.parse(json.out[0]!)).toMatchObject({ type: 'progress', label: 'pack', phase: 'pack', bytesDone: 5, bytesTotal: 10 });

    const quiet = sink(true);
    const q = createProgressRenderer({ label: 'pack', json: true, quiet: true, stream: quiet.stream });
    q.update(ev);
    q.done();
    expect(quiet.out).toEqual([]);
  });
});
