#!/bin/bash
# `npm run demo`, inside the lab VM (working folder: the checkout at /lab/src): a small VM whose two
# disks are LVs holding known data, then the real kvmbak CLI in front of the user: a backup (with its
# progress bar), the VM and its LVs destroyed, the restore, the VM running again with the same data,
# then list, verify and status. Every command is printed before it runs; any failure stops the demo.
set -euo pipefail
vg=vgdemo
dom=demo
dest=/var/backups/kvmbak
pv_link=/dev/disk/by-id/virtio-labdata
export LIBVIRT_DEFAULT_URI=qemu:///system LC_ALL=C

if [ -n "${FORCE_COLOR:-}" ]; then
  b=$'\e[1m' d=$'\e[2m' g=$'\e[32m' r=$'\e[31m' n=$'\e[0m'
else
  b='' d='' g='' r='' n=''
fi
say() { printf '\n%s# %s%s\n' "$b" "$*" "$n"; }
# Prints a command, then runs it (no shell in between).
run() {
  printf '%s$ %s%s\n' "$b" "$*" "$n"
  "$@"
}
# The same for kvmbak, on a pseudo-terminal when script(1) is there: the progress bar a user sees.
kvmbak_tty() {
  printf '%s$ kvmbak %s%s\n' "$b" "$*" "$n"
  if command -v script >/dev/null; then
    # The words are this script's own (names and a set path), never a user's.
    script -qefc "stty cols 100 rows 40; kvmbak $*" /dev/null
  else
    kvmbak "$@"
  fi
}
quietly() { "$@" >/dev/null; }

# --- the stage: not part of the demo proper ------------------------------------------------------
printf '%s(setting up the lab: a volume group, two LVs with known data, a small VM on them)%s\n' "$d" "$n"
# The CLI as a user has it on PATH.
printf '#!/bin/sh\nexec node /lab/src/dist/cli.js "$@"\n' >/usr/local/bin/kvmbak
chmod 0755 /usr/local/bin/kvmbak
udevadm settle --timeout=60
pv=$(readlink -f "$pv_link")
modprobe kvm_amd 2>/dev/null || true
udevadm settle --timeout=30
if [ -c /dev/kvm ] && virsh -q domcapabilities --virttype kvm >/dev/null 2>&1; then dtype=kvm; else dtype=qemu; fi
quietly pvcreate -q "$pv"
quietly vgcreate -q "$vg" "$pv"
quietly lvcreate -q -y -W y -Z y -n demo-root -L 64M "$vg"
quietly lvcreate -q -y -W y -Z y -n demo-data -L 32M "$vg"
udevadm settle --timeout=30
node test/e2e/guest/fill-pattern.mjs "demo-root=/dev/$vg/demo-root:$((64 << 20))" "demo-data=/dev/$vg/demo-data:$((32 << 20))" >/dev/null
disk() { printf "<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='/dev/%s/%s'/><target dev='%s' bus='virtio'/></disk>" "$vg" "$1" "$2"; }
xml=$(mktemp)
cat >"$xml" <<EOF
<domain type='$dtype'>
  <name>$dom</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    $(disk demo-root vda)
    $(disk demo-data vdb)
    <memballoon model='none'/>
  </devices>
</domain>
EOF
quietly virsh -q define "$xml"
rm -f "$xml"
quietly virsh -q start "$dom"
install -d -m 0700 "$dest"

# --- the demo --------------------------------------------------------------------------------------
say "A running VM, '$dom', whose two disks are LVM logical volumes holding known data:"
run virsh list --all
run lvs -o lv_name,vg_name,lv_size,lv_attr "$vg"
run sha256sum "/dev/$vg/demo-root" "/dev/$vg/demo-data" | tee /tmp/demo-before.sha256

say "Back it up live: its RAM is saved, both disks snapshotted, the VM resumed; then the snapshots are compressed into the set."
kvmbak_tty backup "$dom" --dest "$dest"
set_path=$(find "$dest/$dom" -mindepth 1 -maxdepth 1 -type d -name '20*' | sort | tail -n 1)
run virsh domstate "$dom"
run ls -l "$set_path" "$set_path/disks"

say "Now lose everything: the VM is destroyed and undefined, and its LVs removed."
run virsh destroy "$dom"
run virsh undefine "$dom"
run lvremove -y "$vg/demo-root" "$vg/demo-data"
run virsh list --all
run lvs "$vg"

say "Restore the set: the LVs are created and written, the VM defined and resumed from its saved RAM."
kvmbak_tty restore "$set_path"
run virsh list --all
say "The same data as before the backup:"
run sha256sum "/dev/$vg/demo-root" "/dev/$vg/demo-data" | tee /tmp/demo-after.sha256
if ! cmp -s /tmp/demo-before.sha256 /tmp/demo-after.sha256; then
  printf '%sdemo: the restored LVs differ from the backed-up ones%s\n' "$r" "$n" >&2
  exit 1
fi
printf '%sidentical%s\n' "$g" "$n"
state=$(virsh -q domstate "$dom")
if [ "$state" != running ]; then
  printf '%sdemo: %s is %s after the restore, expected running%s\n' "$r" "$dom" "$state" "$n" >&2
  exit 1
fi

say "What the destination holds, and a full check of the set (every file against its checksum, every chunk or image decompressed):"
run kvmbak list "$dest"
kvmbak_tty verify "$set_path"

say "What monitoring calls (exit 1 when a domain's last run failed or its newest set is too old):"
run kvmbak status "$dest" --max-age 26h

printf '\n%sThe demo is done: kvmbak backed up a live VM, and restored it running with the same data after it was gone.%s\n' "$g" "$n"
