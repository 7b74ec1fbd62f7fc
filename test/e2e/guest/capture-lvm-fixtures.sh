#!/bin/bash
# Captures real lvm2 output for kvmbak's unit tests (test/unit/lvm) where device-mapper works:
# run as root INSIDE the lab guest. It makes, in VG, the states the host cannot make
# (active classic snapshot + origin, thin pool + thin LV + thin snapshot, a snapshot
# invalidated by overflow, a failing lvcreate), runs the same commands with the same
# argv kvmbak's Lvm class runs, writes their output to OUTDIR, and removes every LV it made.
#
# Usage: capture-lvm-fixtures.sh VG OUTDIR
#   VG      an existing volume group with at least 200 MiB free
#   OUTDIR  where the fixtures go; copy them into test/fixtures/lvm/ (they replace the
#           *.handmade.* files of the same base name, which the tests use until then)
#
# Output: NAME.json = the stdout of one lvs/vgs report; NAME.run.json = one whole command
# run as {"argv":[...],"exitCode":N,"stdout":"...","stderr":"..."}; info.json = context.
set -euo pipefail

# --- Keep equal to src/lvm/report.ts (test/unit/lvm/capture-script.test.ts compares them) ---
REPORT_OPTIONS=(--reportformat json --units b --nosuffix --binary --config 'report/list_item_separator=","')
LV_FIELDS=lv_name,vg_name,lv_uuid,lv_full_name,lv_path,lv_dm_path,lv_size,lv_attr,lv_tags,lv_active,lv_active_locally,lv_device_open,lv_skip_activation,segtype,lv_layout,lv_role,origin,origin_uuid,origin_size,pool_lv,snap_percent,data_percent,metadata_percent,lv_snapshot_invalid,lv_kernel_major,lv_kernel_minor
VG_FIELDS=vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,vg_attr,vg_tags,lv_count,snap_count,pv_count
STAT_FORMAT=$'%F\n%t:%T\n'
# ---------------------------------------------------------------------------------------------

export LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1

usage() { echo "usage: $0 VG OUTDIR   (as root, inside the lab guest)" >&2; exit 2; }
[ $# -eq 2 ] || usage
vg=$1
out=$2
die() { echo "capture-lvm-fixtures: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
for c in lvs vgs lvcreate lvextend lvremove lvchange dd stat jq readlink; do
  command -v "$c" >/dev/null || die "$c is missing (apt-get install lvm2 jq coreutils)"
done
dmsetup version >/dev/null 2>&1 || die "device-mapper is not available here: run this inside the lab guest"
vgs -- "$vg" >/dev/null 2>&1 || die "volume group $vg does not exist"
mkdir -p "$out"

MiB=$((1024 * 1024))
p=kvmbak-fx                 # every LV made here starts with this (names with dashes on purpose)
origin=$p-web-01            # 32 MiB linear origin
snap=$p-web-01-snap         # 16 MiB classic snapshot of it
pool=$p-pool                # 64 MiB thin pool
thin=$p-db-02               # 32 MiB thin LV in it
tsnap=$p-db-02-snap         # thin snapshot of it
ovf=$p-ovf                  # 32 MiB origin ...
ovfsnap=$p-ovf-snap         # ... with an 8 MiB snapshot that overflows
run_tag=kvmbak-run-fx       # the tag naming a backup run

free=$(vgs --noheadings --units b --nosuffix -o vg_free -- "$vg" | tr -d ' ')
[ "$free" -ge $((200 * MiB)) ] || die "$vg has only $free bytes free; 200 MiB are needed"
for lv in "$origin" "$snap" "$pool" "$thin" "$tsnap" "$ovf" "$ovfsnap"; do
  if lvs -- "$vg/$lv" >/dev/null 2>&1; then die "$vg/$lv exists already (left by an earlier run? remove it first)"; fi
done

created=()
cleanup() {
  local rc=$? i
  for ((i = ${#created[@]} - 1; i >= 0; i--)); do
    if lvs -- "$vg/${created[i]}" >/dev/null 2>&1; then
      lvremove -y -- "$vg/${created[i]}" >/dev/null 2>&1 || echo "capture-lvm-fixtures: could not remove $vg/${created[i]}" >&2
    fi
  done
  exit "$rc"
}
trap cleanup EXIT

# run_record NAME EXPECTED_RC|any COMMAND ARGS...: runs the command, writes OUT/NAME.run.json.
# argv_json ARG...: the arguments as a JSON array (each one exact, newlines included).
argv_json() {
  local a sep=''
  printf '['
  for a in "$@"; do printf '%s' "$sep"; printf '%s' "$a" | jq -Rs .; sep=','; done
  printf ']'
}
run_record() {
  local name=$1 want=$2 rc=0
  shift 2
  "$@" >"$out/.stdout" 2>"$out/.stderr" || rc=$?
  jq -n --argjson argv "$(argv_json "$@")" --rawfile stdout "$out/.stdout" --rawfile stderr "$out/.stderr" \
    --argjson exitCode "$rc" '{argv: $argv, exitCode: $exitCode, stdout: $stdout, stderr: $stderr}' >"$out/$name.run.json"
  rm -f "$out/.stdout" "$out/.stderr"
  if [ "$want" != any ] && [ "$rc" -ne "$want" ]; then die "$* exited $rc, expected $want (see $out/$name.run.json)"; fi
  return 0
}
# lvs_report NAME TARGET...: the report kvmbak reads, to OUT/NAME.json.
lvs_report() { local name=$1; shift; lvs "${REPORT_OPTIONS[@]}" -o "$LV_FIELDS" "$@" >"$out/$name.json"; }
vgs_report() { local name=$1; shift; vgs "${REPORT_OPTIONS[@]}" -o "$VG_FIELDS" "$@" >"$out/$name.json"; }
write() { dd if=/dev/urandom of="$1" bs=1M count="$2" seek="${3:-0}" oflag=direct status=none; }

# Classic: origin made as Lvm.createVolume does, snapshot as Lvm.createSnapshot does.
created+=("$origin")
run_record lvcreate-volume 0 lvcreate -L $((32 * MiB))b -n "$origin" -y -Wy -Zy --addtag vm-web-01 -- "$vg"
write "/dev/$vg/$origin" 4
created+=("$snap")
run_record lvcreate-snapshot-classic 0 lvcreate -s -L $((16 * MiB))b -n "$snap" --addtag kvmbak --addtag "$run_tag" -- "$vg/$origin"
write "/dev/$vg/$origin" 2 8   # the origin diverges: the snapshot's COW fills a little
lvs_report lvs-classic -- "$vg/$origin" "$vg/$snap"
origin_node=$(readlink -f "/dev/$vg/$origin")
run_record stat-origin 0 stat -L --printf "$STAT_FORMAT" -- "$origin_node"
run_record stat-missing 1 stat -L --printf "$STAT_FORMAT" -- "/dev/$vg/$p-missing"
lvs_report lvs-all
run_record lvextend-snapshot 0 lvextend -L +$((8 * MiB))b -- "$vg/$snap"
lvs_report lvs-classic-extended -- "$vg/$origin" "$vg/$snap"

# Thin: pool (setup only), thin LV as Lvm.createVolume does, snapshot as Lvm.createSnapshot does.
created+=("$pool")
lvcreate -q --type thin-pool -L 64m -n "$pool" -- "$vg" >/dev/null
created+=("$thin")
run_record lvcreate-volume-thin 0 lvcreate -V $((32 * MiB))b --thinpool "$pool" -n "$thin" -y -Wy --addtag vm-db-02 -- "$vg"
write "/dev/$vg/$thin" 4
created+=("$tsnap")
run_record lvcreate-snapshot-thin 0 lvcreate -s -K -n "$tsnap" --addtag kvmbak --addtag "$run_tag" -- "$vg/$thin"
lvs_report lvs-thin-created -- "$vg/$pool" "$vg/$thin" "$vg/$tsnap"
if [ "$(lvs --noheadings -o lv_active_locally --binary -- "$vg/$tsnap" | tr -d ' ')" != 1 ]; then
  run_record lvchange-activate-thin 0 lvchange -ay -K -- "$vg/$tsnap"
fi
write "/dev/$vg/$thin" 2 8
lvs_report lvs-thin -- "$vg/$pool" "$vg/$thin" "$vg/$tsnap"

# Listing by the run tag (both snapshots carry it).
lvs_report lvs-tag -- "@$run_tag"
vgs_report vgs -- "$vg"

# Removal of a kvmbak snapshot as Lvm.remove does.
run_record lvremove-snapshot 0 lvremove -y -- "$vg/$snap"

# Overflow: an 8 MiB snapshot, 16 MiB written to the origin -> invalid.
created+=("$ovf")
lvcreate -q -L 32m -n "$ovf" -y -Wy -Zy -- "$vg" >/dev/null
created+=("$ovfsnap")
lvcreate -q -s -L $((8 * MiB))b -n "$ovfsnap" --addtag kvmbak --addtag "$run_tag" -- "$vg/$ovf" >/dev/null
write "/dev/$vg/$ovf" 16
sync
lvs_report lvs-invalid -- "$vg/$ovf" "$vg/$ovfsnap"
read_rc=0
dd if="/dev/$vg/$ovfsnap" of=/dev/null bs=1M count=1 iflag=direct status=none 2>/dev/null || read_rc=$?

# Failures kvmbak must report: no room, missing LV, missing VG.
free=$(vgs --noheadings --units b --nosuffix -o vg_free -- "$vg" | tr -d ' ')
created+=("$p-toobig")   # only if lvcreate unexpectedly succeeds
run_record lvcreate-nospace 5 lvcreate -L $((free + 64 * MiB))b -n "$p-toobig" -y -Wy -Zy -- "$vg"
run_record lvs-missing-lv 5 lvs "${REPORT_OPTIONS[@]}" -o "$LV_FIELDS" -- "$vg/$p-missing"
run_record vgs-missing-vg 5 vgs "${REPORT_OPTIONS[@]}" -o "$VG_FIELDS" -- "$p-novg"

jq -n --arg vg "$vg" --arg originNode "$origin_node" --arg lvmVersion "$(lvm version | head -1 | sed 's/^ *//')" \
  --arg kernel "$(uname -r)" --arg capturedAt "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson invalidSnapshotReadExit "$read_rc" \
  '{vg: $vg, originNode: $originNode, lvmVersion: $lvmVersion, kernel: $kernel, capturedAt: $capturedAt,
    invalidSnapshotReadExit: $invalidSnapshotReadExit}' >"$out/info.json"
echo "capture-lvm-fixtures: wrote $(ls "$out" | wc -l) files to $out"
