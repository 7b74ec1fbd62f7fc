#!/usr/bin/env bash
# Installs the Debian 12 packages kvmbak needs to build, lint and test (run as root).
# The lab (npm run test:e2e) installs its own extra host tools when it first runs.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "kvmbak setup: run as root (sudo bash scripts/setup-debian.sh)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  libvirt-dev libdeflate-dev libvirt-clients pkg-config g++ make python3 \
  gzip coreutils ca-certificates clang-format cppcheck >/dev/null
echo "kvmbak setup: system packages installed (libvirt $(pkg-config --modversion libvirt), libdeflate $(pkg-config --modversion libdeflate))"
