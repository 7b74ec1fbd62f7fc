#!/usr/bin/env node
// Preflight for `npm run build:native`, run before node-gyp reads binding.gyp.
// binding.gyp asks pkg-config for the compiler and linker flags of libvirt
// and libdeflate; when pkg-config or a library's development files are
// missing, gyp only reports "Call to 'pkg-config ...' returned exit status 1".
// This script says what is missing and which package to install, in one
// line, and exits 1.
//
// Keep MIN_LIBVIRT in step with the LIBVIR_CHECK_VERSION floor in
// native/common.h: every libvirt API the addon calls exists in this version
// (the newest one used is virDomainAgentSetResponseTimeout, libvirt 5.10).
// Keep MIN_LIBDEFLATE in step with the floor in native/codec.h. libdeflate is
// linked statically (libdeflate.a, part of Debian's libdeflate-dev), so the
// built addon runs where libdeflate0 is not installed.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const MIN_LIBVIRT = '8.0.0';
const MIN_LIBDEFLATE = '1.14';

function pkgConfig(args) {
  return execFileSync('pkg-config', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function fail(message, fix) {
  process.stderr.write(`kvmbak: ${message}; fix: ${fix}\n`);
  process.exit(1);
}

/** Checks that pkg-config knows `name` at `min` or newer. */
function requirePackage(name, min, fix) {
  let version;
  try {
    version = pkgConfig(['--modversion', name]);
  } catch {
    fail(`${name} development files not found (pkg-config knows no "${name}")`, fix);
  }
  try {
    pkgConfig([`--atleast-version=${min}`, name]);
  } catch {
    fail(`${name} ${version} is too old, kvmbak needs ${name} >= ${min}`, fix);
  }
}

/** The static archive the linker will pick for -l:libdeflate.a, if any. */
function findStaticLibdeflate() {
  const dirs = pkgConfig(['--libs-only-L', 'libdeflate'])
    .split(/\s+/)
    .filter((f) => f.startsWith('-L'))
    .map((f) => f.slice(2));
  try {
    const cc = process.env.CC || 'cc';
    const found = execFileSync(cc, ['-print-file-name=libdeflate.a'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (found !== 'libdeflate.a') dirs.push(dirname(found));
  } catch {
    // no compiler to ask: the -L folders and the usual places only
  }
  dirs.push('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib');
  return dirs.find((d) => existsSync(join(d, 'libdeflate.a')));
}

function dirname(p) {
  return p.slice(0, Math.max(0, p.lastIndexOf('/'))) || '/';
}

try {
  pkgConfig(['--version']);
} catch {
  fail('pkg-config is not installed (needed to find libvirt and libdeflate)', 'apt-get install -y pkg-config');
}
requirePackage('libvirt', MIN_LIBVIRT, 'apt-get install -y libvirt-dev');
requirePackage('libdeflate', MIN_LIBDEFLATE, 'apt-get install -y libdeflate-dev');
if (!findStaticLibdeflate()) {
  fail('libdeflate.a (the static libdeflate library) not found', 'apt-get install -y libdeflate-dev');
}
