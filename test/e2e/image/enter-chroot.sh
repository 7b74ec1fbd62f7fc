#!/bin/bash
# Host side of the image build, run by lab/image.mjs under `unshare --mount --propagation private`:
# every mount made here lives in a private mount namespace and disappears with this process,
# so an interrupted build never leaves mounts behind on the host.
# Usage: enter-chroot.sh ROOT DEB_CACHE_DIR NODE_BINARY
set -euo pipefail
root=$1 debs=$2 node=$3
here=$(dirname "$(readlink -f "$0")")

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mkdir -p "$root/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
mkdir -p "$debs" "$root/var/cache/apt/archives"
mount --bind "$debs" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf"

mkdir -p "$root/tmp/kvmbak-lab-recipe"
cp "$here/lab-job" "$here/lab-job.service" "$here/chroot-setup.sh" "$here/kvmbak-lab-fsfreeze-hook" \
  "$here/kvmbak-lab-agent-stop" "$root/tmp/kvmbak-lab-recipe/"
install -m 0755 "$node" "$root/usr/local/bin/node"

chroot "$root" /bin/bash /tmp/kvmbak-lab-recipe/chroot-setup.sh </dev/null
# The build host's resolver has no meaning in the lab (no network).
rm -f "$root/etc/resolv.conf"
