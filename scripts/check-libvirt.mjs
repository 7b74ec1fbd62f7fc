#!/usr/bin/env node
// Preflight for `npm run build:native`, run before node-gyp reads binding.gyp.
// binding.gyp asks pkg-config for libvirt's compiler and linker flags; when
// pkg-config or libvirt's development files are missing, gyp only reports
// "Call to 'pkg-config ...' returned exit status 1". This script says what is
// missing and how to fix it, in one line, and exits 1.
//
// Keep MIN_LIBVIRT in step with the LIBVIR_CHECK_VERSION floor in
// native/common.h: every libvirt API the addon calls exists in this version
// (the newest one used is virDomainAgentSetResponseTimeout, libvirt 5.10).
import { execFileSync } from 'node:child_process';

const MIN_LIBVIRT = '8.0.0';
const FIX = 'apt-get install -y libvirt-dev pkg-config';

function run(args) {
  return execFileSync('pkg-config', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function fail(message) {
  process.stderr.write(`kvmbak: ${message}; fix: ${FIX}\n`);
  process.exit(1);
}

try {
  run(['--version']);
} catch {
  fail('pkg-config is not installed (needed to find libvirt)');
}

let version;
try {
  version = run(['--modversion', 'libvirt']);
} catch {
  fail('libvirt development files not found (pkg-config knows no "libvirt")');
}

try {
  run([`--atleast-version=${MIN_LIBVIRT}`, 'libvirt']);
} catch {
  fail(`libvirt ${version} is too old, kvmbak needs libvirt >= ${MIN_LIBVIRT}`);
}
