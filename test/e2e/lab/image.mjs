// The lab image: Debian 12 (debootstrap minbase) + lvm2 + libvirtd + QEMU + the host's node,
// packed into a raw ext4 file, with the kernel and initrd beside it for -kernel/-initrd boot.
// Cached under <cache>/images/<key>, where the key hashes the whole recipe (this file, the files in
// ../image/, and the node binary): an unchanged recipe reuses the image in well under a second.
//
// CLI: node test/e2e/lab/image.mjs [--rebuild]    prints the image folder
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
  copyFileSync,
  truncateSync,
  openSync,
  closeSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabError, acquireLock, cacheDir, commandExists, e2eDir, exitOnSignals, log, run, seconds } from './common.mjs';

const RECIPE_VERSION = 1;
const SUITE = 'bookworm';
const MIRROR = 'http://deb.debian.org/debian';
const DEBOOTSTRAP_INCLUDE = ['systemd-sysv', 'udev', 'kmod', 'dbus', 'e2fsprogs', 'procps'];
const IMAGE_SIZE_BYTES = 4 * 1024 ** 3;
/** Host commands the build and the runner need, and the Debian package providing each. */
const HOST_TOOLS = [
  ['debootstrap', 'debootstrap'],
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['qemu-img', 'qemu-utils'],
  ['mkfs.ext4', 'e2fsprogs'],
  ['unshare', 'util-linux'],
  ['setpriv', 'util-linux'],
];

const recipeDir = join(e2eDir, 'image');

/**
 * debootstrap and the chroot steps run in their own mount and PID namespaces: their mounts
 * (debootstrap mounts /proc in the target, enter-chroot.sh more) never reach the host, and when
 * unshare is killed its child, PID 1 of the namespace, dies with it (--kill-child), which kills
 * every process inside, even those in other sessions (apt runs dpkg on its own pty).
 */
const ISOLATE = ['--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', '--'];

/** Installs missing host tools with apt-get (needs root). */
export async function ensureHostTools() {
  const missing = [...new Set(HOST_TOOLS.filter(([cmd]) => !commandExists(cmd)).map(([, pkg]) => pkg))];
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new LabError(`missing host tools (${missing.join(', ')}) and not root: run as root or apt-get install ${missing.join(' ')}`);
  }
  log(`installing host tools: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update', '-q'], { env });
  await run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { env });
}

function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/**
 * rm -rf that first detaches anything still mounted below `path` (a build from an older lab
 * version, or a crash): deleting through a mount would reach outside the build folder.
 */
async function removeTree(path) {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m) => m && (m === path || m.startsWith(`${path}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m], { stdio: 'capture' });
  rmSync(path, { recursive: true, force: true });
}

/** The recipe: everything that decides the image's content. */
export async function recipe() {
  const node = realpathSync(process.execPath);
  const files = {};
  for (const name of readdirSync(recipeDir).sort()) {
    files[`image/${name}`] = createHash('sha256')
      .update(readFileSync(join(recipeDir, name)))
      .digest('hex');
  }
  files['lab/image.mjs'] = createHash('sha256')
    .update(readFileSync(fileURLToPath(import.meta.url)))
    .digest('hex');
  return {
    version: RECIPE_VERSION,
    suite: SUITE,
    mirror: MIRROR,
    include: DEBOOTSTRAP_INCLUDE,
    imageSizeBytes: IMAGE_SIZE_BYTES,
    files,
    node: { path: node, version: process.version, sha256: await sha256File(node) },
  };
}

export function recipeKey(r) {
  return createHash('sha256').update(JSON.stringify(r)).digest('hex').slice(0, 16);
}

/**
 * Returns { dir, key, built } where dir holds rootfs.raw, vmlinuz, initrd.img, recipe.json.
 * Builds the image when the cache has none for the current recipe (or `rebuild`).
 */
export async function ensureImage({ rebuild = false } = {}) {
  const r = await recipe();
  const key = recipeKey(r);
  const imagesDir = join(cacheDir(), 'images');
  const dir = join(imagesDir, key);
  const ready = () => existsSync(join(dir, 'ready'));
  await ensureHostTools();
  if (!rebuild && ready()) return { dir, key, built: false };

  const release = await acquireLock(join(cacheDir(), 'image.lock'), 'another lab image build');
  const work = join(imagesDir, `${key}.build-${process.pid}`);
  try {
    if (!rebuild && ready()) return { dir, key, built: false };
    if (process.getuid?.() !== 0) {
      throw new LabError('building the lab image needs root (debootstrap, chroot, image ownership): run as root');
    }
    const logDir = join(cacheDir(), 'logs');
    mkdirSync(logDir, { recursive: true });
    const logFile = join(logDir, `image-${key}.log`);
    closeSync(openSync(logFile, 'w'));
    log(`building the lab image ${key} (log: ${logFile})`);
    const started = Date.now();
    await removeTree(work);
    const root = join(work, 'root');
    mkdirSync(root, { recursive: true });
    const debs = join(cacheDir(), 'debs');
    mkdirSync(join(debs, 'debootstrap'), { recursive: true });
    mkdirSync(join(debs, 'apt'), { recursive: true });

    log('debootstrap');
    await run(
      'unshare',
      [
        ...ISOLATE,
        'debootstrap',
        '--variant=minbase',
        `--include=${DEBOOTSTRAP_INCLUDE.join(',')}`,
        `--cache-dir=${join(debs, 'debootstrap')}`,
        SUITE,
        root,
        MIRROR,
      ],
      { logFile },
    );
    log(`packages and configuration (chroot) after ${seconds(Date.now() - started)}`);
    await run('unshare', [...ISOLATE, 'bash', join(recipeDir, 'enter-chroot.sh'), root, join(debs, 'apt'), r.node.path], { logFile });

    const boot = readdirSync(join(root, 'boot'));
    const kernel = boot
      .filter((f) => f.startsWith('vmlinuz-'))
      .sort()
      .at(-1);
    const initrd = boot
      .filter((f) => f.startsWith('initrd.img-'))
      .sort()
      .at(-1);
    if (!kernel || !initrd) throw new LabError(`the image has no kernel/initrd in /boot (found: ${boot.join(', ')}); log: ${logFile}`);
    copyFileSync(join(root, 'boot', kernel), join(work, 'vmlinuz'));
    copyFileSync(join(root, 'boot', initrd), join(work, 'initrd.img'));

    log(`packing the root file system after ${seconds(Date.now() - started)}`);
    const raw = join(work, 'rootfs.raw');
    closeSync(openSync(raw, 'w'));
    truncateSync(raw, IMAGE_SIZE_BYTES);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'kvmbak-lab', '-d', root, raw], { logFile });
    await removeTree(root);

    writeFileSync(join(work, 'recipe.json'), `${JSON.stringify({ ...r, kernel, initrd, builtAt: new Date().toISOString() }, null, 2)}\n`);
    writeFileSync(join(work, 'ready'), '');
    await removeTree(dir);
    renameSync(work, dir);
    // Other recipes' images (and abandoned builds) are dead weight: keep only this one.
    for (const name of readdirSync(imagesDir)) {
      if (name !== key) await removeTree(join(imagesDir, name));
    }
    log(`lab image built in ${seconds(Date.now() - started)}: ${dir}`);
    return { dir, key, built: true };
  } finally {
    await removeTree(work);
    release();
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rebuild = process.argv.includes('--rebuild');
  exitOnSignals();
  try {
    const { dir } = await ensureImage({ rebuild });
    process.stdout.write(`${dir}\n`);
  } catch (err) {
    log(err instanceof LabError ? err.message : String(err?.stack ?? err));
    process.exitCode = 1;
  }
}
