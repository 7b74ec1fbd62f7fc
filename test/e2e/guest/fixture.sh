#!/bin/bash
# Lab guest fixture (run at job start, as root, in a fresh boot): the volume group on the data disk,
# a `logical` libvirt pool on it, LVs filled with known distinct data (one of them a thin LV in a thin
# pool), and the inner domains: small SeaBIOS-only ones, and lab-linux, the lab's own image booted again (read-only, through an overlay)
# with a real qemu-guest-agent, for the quiesce tests.
# Writes OUT_DIR/fixture.json (read by the e2e suite through KVMBAK_LAB_FIXTURE).
# Usage: fixture.sh OUT_DIR
set -euo pipefail
out=${1:?usage: fixture.sh OUT_DIR}
here=$(dirname "$(readlink -f "$0")")
vg=vgkvmbak
pv_link=/dev/disk/by-id/virtio-labdata
image_link=/dev/disk/by-id/virtio-labimage
images=/var/lib/libvirt/images
uri=qemu:///system
export LIBVIRT_DEFAULT_URI=$uri LC_ALL=C
mkdir -p "$out" "$images"

t0=$(date +%s%3N)
step() { echo "fixture: $* (+$(( $(date +%s%3N) - t0 )) ms)"; }

udevadm settle --timeout=60
if [ ! -b "$pv_link" ]; then
  echo "fixture: the data disk ($pv_link) is missing: is the VM started by lab/run.mjs?" >&2
  exit 1
fi
pv=$(readlink -f "$pv_link")

# The SeaBIOS-only inner domains run under TCG (type qemu) by default: the lab VM's own KVM (nested
# SVM, itself emulated by TCG) has panicked in shutdown_interception → kvm_vcpu_reset in about one
# lab run in six, with or without lab-linux, and under TCG it takes no part. KVMBAK_LAB_INNER=kvm
# runs them with KVM when the guest's /dev/kvm works. lab-linux (below) needs KVM's speed.
modprobe kvm_amd 2>/dev/null || true
udevadm settle --timeout=30
if [ -c /dev/kvm ] && virsh -q domcapabilities --virttype kvm >/dev/null 2>&1; then
  kvm_ok=1
else
  kvm_ok=
fi
dtype=qemu
if [ "${KVMBAK_LAB_INNER:-qemu}" = kvm ] && [ -n "$kvm_ok" ]; then dtype=kvm; fi
step "inner domain type: $dtype (nested KVM $([ -n "$kvm_ok" ] && echo works || echo "does not work"))"

pvcreate -q "$pv"
vgcreate -q "$vg" "$pv"
step "VG $vg on $pv"

# lab-linux is defined here and started by the quiesce suite (which runs last) and destroyed at its
# end, so it runs only for that suite. Its root is a qcow2 overlay on the read-only image disk (a
# file disk: backups leave it out with --exclude vda); its data disk is an LV holding an ext4 file
# system that the guest mounts. Direct kernel boot with the lab's own kernel. Its kernel command
# line boots it only to sysinit.target (file systems, udev, journald; qemu-ga is started by udev
# when its port appears), so neither the lab's job nor libvirt runs in it, gives slow devices time,
# and forwards its journal (where qemu-ga logs each freeze and thaw) to its serial console, which
# libvirt writes to a file.
# It runs with nested KVM (about a minute to its agent). Once, while lab-linux ran beside all the
# suites for 20 minutes, the lab VM's own KVM (itself emulated by TCG) panicked in
# shutdown_interception → kvm_vcpu_reset; hence its short life. KVMBAK_LAB_LINUX=tcg runs it under
# TCG instead (no nested KVM, but over 20 minutes to boot on a busy host); =off leaves it out (the
# quiesce suite then fails, saying so).
lvcreate -q -y -W y -Z y -n lab-linux-data -L 32M "$vg" >/dev/null
udevadm settle --timeout=30
linux_serial=/var/log/libvirt/qemu/lab-linux-serial.log
linux_resume=/var/lib/libvirt/qemu/lab-linux.resume
linux_root=$images/lab-linux-root.qcow2
linux_error=
linux_mode=${KVMBAK_LAB_LINUX:-kvm}
linux_type=kvm
if [ "$linux_mode" = off ]; then
  linux_error="lab-linux is off (KVMBAK_LAB_LINUX=off)"
elif [ "$linux_mode" = kvm ] && [ -z "$kvm_ok" ]; then
  linux_error="KVMBAK_LAB_LINUX=kvm, but the lab VM has no nested KVM"
elif [ "$linux_mode" != kvm ] && [ "$linux_mode" != tcg ]; then
  linux_error="KVMBAK_LAB_LINUX must be kvm (the default), tcg or off, not '$linux_mode'"
elif [ ! -b "$image_link" ]; then
  linux_error="the read-only image disk ($image_link) is missing: is the VM started by lab/run.mjs?"
else
  kernel=$(ls /boot/vmlinuz-* | sort | tail -n 1)
  initrd=$(ls /boot/initrd.img-* | sort | tail -n 1)
  install -m 0644 "$kernel" "$images/lab-linux-vmlinuz"
  install -m 0644 "$initrd" "$images/lab-linux-initrd.img"
  qemu-img create -q -f qcow2 -F raw -b "$(readlink -f "$image_link")" "$linux_root"
  mkfs.ext4 -q -L guestdata "/dev/$vg/lab-linux-data"
  cmdline="root=/dev/vda rw console=ttyS0,115200 panic=1 mitigations=off apparmor=0 quiet"
  cmdline+=" systemd.unit=sysinit.target systemd.mask=lab-job.service systemd.mask=systemd-modules-load.service"
  cmdline+=" systemd.mask=lvm2-monitor.service systemd.default_timeout_start_sec=600"
  cmdline+=" systemd.journald.forward_to_console=1"
  [ "$linux_mode" = tcg ] && linux_type=qemu
  cat >"$out/lab-linux.xml" <<EOF
<domain type='$linux_type'>
  <name>lab-linux</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$images/lab-linux-vmlinuz</kernel>
    <initrd>$images/lab-linux-initrd.img</initrd>
    <cmdline>$cmdline</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='unsafe'/><source file='$linux_root'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='/dev/$vg/lab-linux-data'/><target dev='vdb' bus='virtio'/><serial>guestdata</serial></disk>
    <serial type='file'><source path='$linux_serial'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='unix'><source mode='bind' path='$linux_resume'/><target type='virtio' name='kvmbak.resume'/></channel>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
  virsh -q define "$out/lab-linux.xml" >/dev/null
fi

# A thin pool (default chunk size, 64 KiB at this size) holding lab-thin's disk, a 64 MiB thin LV:
# the thin-LV path of kvmbak (thin snapshots, thin_delta on the pool's metadata) runs on it. The
# pool's dash doubles in its device-mapper names (vgkvmbak-lab--thinpool-tpool, ..._tmeta).
thin_pool=lab-thinpool
lvcreate -q -y --type thin-pool -L 192M -n "$thin_pool" "$vg" >/dev/null
lvcreate -q -y -V 64M --thinpool "$thin_pool" -n lab-thin-disk0 "$vg" >/dev/null

# name:MiB — every LV gets a distinct deterministic pattern.
lvs_spec=(
  lab-one-disk0:64
  lab-two-disk0:64
  lab-two-disk1:32
  lab-agent-disk0:32
  lab-qcow-disk0:32
  lab-cdrom-disk0:32
  lab-pack:64
)
fill_args=("lab-thin-disk0=/dev/$vg/lab-thin-disk0:$(( 64 * 1024 * 1024 ))")
for spec in "${lvs_spec[@]}"; do
  name=${spec%%:*} mib=${spec##*:}
  lvcreate -q -y -W y -Z y -n "$name" -L "${mib}M" "$vg" >/dev/null
  fill_args+=("$name=/dev/$vg/$name:$(( mib * 1024 * 1024 ))")
done
udevadm settle --timeout=30
step "LVs created"
# Filling (CPU-bound, one core) overlaps the libvirt setup below: the inner domains never write
# their disks, and block 0 holds no boot signature before or after filling.
node "$here/fill-pattern.mjs" "${fill_args[@]}" >"$out/lvs.json" &
fill_pid=$!

virsh -q pool-define-as "$vg" logical --source-name "$vg" --target "/dev/$vg" >/dev/null
virsh -q pool-start "$vg" >/dev/null
step "pool $vg"

block_disk() { # LV target
  printf "<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='/dev/%s/%s'/><target dev='%s' bus='virtio'/></disk>\n" "$vg" "$1" "$2"
}
define() { # NAME DEVICES_XML
  local xml="$out/$1.xml"
  cat >"$xml" <<EOF
<domain type='$dtype'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
$2
    <memballoon model='none'/>
  </devices>
</domain>
EOF
  virsh -q define "$xml" >/dev/null
}

qcow=$images/lab-qcow-disk1.qcow2
cdrom=$images/lab-cdrom.iso
qemu-img create -q -f qcow2 "$qcow" 32M
head -c $(( 2 * 1024 * 1024 )) /dev/zero >"$cdrom"

define lab-one "$(block_disk lab-one-disk0 vda)"
define lab-two "$(block_disk lab-two-disk0 vda)$(block_disk lab-two-disk1 vdb)"
define lab-qcow "$(block_disk lab-qcow-disk0 vda)<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$qcow'/><target dev='vdb' bus='virtio'/></disk>"
define lab-cdrom "$(block_disk lab-cdrom-disk0 vda)<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='$cdrom'/><target dev='hdc' bus='ide'/><readonly/></disk>"
define lab-thin "$(block_disk lab-thin-disk0 vda)"
define lab-agent "$(block_disk lab-agent-disk0 vda)<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
step "domains defined"

# Start only what the suite needs running, in parallel (each takes 10-25 s).
running=(lab-one lab-two lab-agent lab-thin)
pids=()
for d in "${running[@]}"; do
  virsh -q start "$d" >/dev/null &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "fixture: virsh start ${running[$i]} failed" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1
for d in "${running[@]}"; do
  state=$(virsh -q domstate "$d")
  if [ "$state" != running ]; then
    echo "fixture: domain $d is '$state', expected running" >&2
    exit 1
  fi
done
step "domains running: ${running[*]}"
if ! wait "$fill_pid"; then
  echo "fixture: filling the LVs failed" >&2
  exit 1
fi
step "LVs filled"

if [ -z "$linux_error" ]; then
  step "lab-linux defined ($linux_type); the quiesce suite starts it"
fi

jq -n \
  --arg vg "$vg" --arg pv "$pv" --arg uri "$uri" --arg dtype "$dtype" \
  --arg qcow "$qcow" --arg cdrom "$cdrom" --arg xmlDir "$out" \
  --arg linuxRoot "$linux_root" --arg linuxSerial "$linux_serial" --arg linuxResume "$linux_resume" \
  --arg linuxError "$linux_error" --arg thinPool "$thin_pool" \
  --slurpfile lvs "$out/lvs.json" \
  '{
    uri: $uri, vg: $vg, pv: $pv, pool: $vg, thinPool: $thinPool, domainType: $dtype, xmlDir: $xmlDir,
    lvs: $lvs[0],
    files: { qcow2: $qcow, cdrom: $cdrom },
    domains: {
      "lab-one":   { running: true,  disks: { vda: "lab-one-disk0" } },
      "lab-two":   { running: true,  disks: { vda: "lab-two-disk0", vdb: "lab-two-disk1" } },
      "lab-agent": { running: true,  disks: { vda: "lab-agent-disk0" }, agentChannel: true },
      "lab-thin":  { running: true,  disks: { vda: "lab-thin-disk0" }, thin: true },
      "lab-qcow":  { running: false, disks: { vda: "lab-qcow-disk0" }, fileDisks: { vdb: $qcow } },
      "lab-cdrom": { running: false, disks: { vda: "lab-cdrom-disk0" }, cdrom: { hdc: $cdrom } },
      "lab-linux": { running: false, disks: { vdb: "lab-linux-data" }, fileDisks: { vda: $linuxRoot }, agentChannel: true }
    },
    linux: {
      domain: "lab-linux", error: (if $linuxError == "" then null else $linuxError end),
      serialLog: $linuxSerial, resumeSocket: $linuxResume, dataMount: "/mnt/data"
    }
  }' >"$out/fixture.json"
step "done: $out/fixture.json"
