#!/bin/bash
# Runs INSIDE the debootstrapped Debian 12 root (chroot), called by enter-chroot.sh.
# Installs the lab's packages and configures the image for fast, repeatable, throw-away boots.
# Part of the image recipe: any change here changes the cache key and rebuilds the image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

packages=(
  linux-image-amd64 initramfs-tools
  lvm2 thin-provisioning-tools
  libvirt-daemon-system libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils
  iproute2 jq gzip zstd
  qemu-guest-agent
)

cat >/etc/apt/sources.list <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
# No daemon starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
# Keep downloaded .debs (the archives folder is the host's .deb cache, bind-mounted).
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >/etc/apt/apt.conf.d/01keep-debs

# A small initramfs: only what mounting a virtio ext4 root needs (set before the kernel is installed,
# so the one and only initramfs build is already the small one).
mkdir -p /etc/initramfs-tools/conf.d
echo 'MODULES=list' >/etc/initramfs-tools/conf.d/kvmbak-lab.conf
printf '%s\n' virtio_pci virtio_blk virtio_rng ext4 9p 9pnet_virtio >>/etc/initramfs-tools/modules

apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
apt-get upgrade -y -q --no-install-recommends

# Identity: fixed, so every ephemeral boot is the same machine and never a "first boot".
echo kvmbak-lab >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkvmbak-lab\n' >/etc/hosts
echo 6b766d62616b2d6c61622d6d61636869 >/etc/machine-id
# The second line only matters in the inner Linux guest of the quiesce tests (the same image, booted
# inside the lab by guest/fixture.sh): its data disk, an LV of the lab, has the virtio serial
# "guestdata", which no disk of the lab VM itself has (nofail: nothing waits for it there).
cat >/etc/fstab <<'EOF'
/dev/vda  /  ext4  rw,noatime,errors=remount-ro  0 1
/dev/disk/by-id/virtio-guestdata  /mnt/data  ext4  rw,noatime,nofail  0 0
EOF
mkdir -p /mnt/data
# Empty root password: the lab has no network; this only serves the serial console kept for debugging.
passwd -d root >/dev/null

# Nested KVM: -cpu max under TCG emulates AMD SVM; load kvm_amd at boot so /dev/kvm is there early.
printf '%s\n' kvm_amd 9p 9pnet_virtio dm_snapshot >/etc/modules-load.d/kvmbak-lab.conf

# libvirt: no default network (needs dnsmasq/iptables), no libvirt-guests (poweroff would wait on
# domains that ignore ACPI).
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
systemctl mask libvirt-guests.service
systemctl enable libvirtd.service

# Nothing periodic or networked in a throw-away VM.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
  e2scrub_reap.service systemd-networkd-wait-online.service systemd-timesyncd.service \
  systemd-tmpfiles-clean.timer logrotate.timer; do
  systemctl mask "$unit" >/dev/null 2>&1 || true
done
systemctl set-default multi-user.target

# qemu-guest-agent, for the inner Linux guest of the quiesce tests: it starts only where the virtio
# port org.qemu.guest_agent.0 exists (never in the lab VM itself). The fsfreeze hook lets the tests
# see each freeze and thaw in the guest's journal and hang the agent on purpose.
install -m 0755 /tmp/kvmbak-lab-recipe/kvmbak-lab-fsfreeze-hook /usr/local/sbin/kvmbak-lab-fsfreeze-hook
install -m 0755 /tmp/kvmbak-lab-recipe/kvmbak-lab-agent-stop /usr/local/sbin/kvmbak-lab-agent-stop
mkdir -p /etc/qemu
printf '[general]\nfsfreeze-hook=/usr/local/sbin/kvmbak-lab-fsfreeze-hook\n' >/etc/qemu/qemu-ga.conf

# The job unit (files copied in by enter-chroot.sh).
install -m 0755 /tmp/kvmbak-lab-recipe/lab-job /usr/local/sbin/lab-job
install -m 0644 /tmp/kvmbak-lab-recipe/lab-job.service /etc/systemd/system/lab-job.service
systemctl enable lab-job.service

# journald: keep logs in memory only, forward to the console (serial log) for debugging.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >/etc/systemd/journald.conf.d/kvmbak-lab.conf

# Shrink the image.
rm -f /usr/sbin/policy-rc.d
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/* /tmp/kvmbak-lab-recipe
