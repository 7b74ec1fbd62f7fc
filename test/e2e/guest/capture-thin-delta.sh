#!/bin/bash
# Captures real `thin_delta` output (thin-provisioning-tools, Debian 12) for kvmbak's unit tests
# (test/unit/chunks/thin-delta.test.ts): run as root INSIDE the lab guest, in a fresh boot. It makes
# its own VG on the lab's data disk (the e2e fixture is not run for this job), two thin pools with
# different chunk sizes, a thin LV in each, a thin snapshot (the "previous run's base"), then changes
# known 4 MiB-aligned regions of the origin (rewrite, partial write, write to a never-written region,
# discard) and asks the pool's metadata for the difference exactly as a backup would: reserve the
# metadata snapshot, thin_delta -m --thin1 BASE --thin2 ORIGIN on the _tmeta device, release it
# (in a trap, so a failure never leaves it reserved).
#
# Usage: capture-thin-delta.sh OUTDIR
# Run:   flock /tmp/kvmbak-lab.lock sudo node test/e2e/lab/run.mjs -- \
#          bash test/e2e/guest/capture-thin-delta.sh /lab/src/test/fixtures/thin
#
# Output (OUTDIR):
#   POOL-delta.xml          stdout of `thin_delta -m --thin1 SNAP --thin2 ORIGIN TMETA`
#   POOL-delta-verbose.xml  the same with --verbose
#   POOL-delta-reverse.xml  --thin1 ORIGIN --thin2 SNAP (left/right swapped)
#   POOL-delta-same.xml     --thin1 SNAP --thin2 SNAP (nothing changed)
#   POOL-*.run.json         whole runs {"argv","exitCode","stdout","stderr"}: the lvs report of the
#                           thin ids (the report options and fields of src/lvm/report.ts), dmsetup
#                           message reserve/release (and release when none is held), dmsetup status
#                           with the metadata snapshot held and released and of a missing device,
#                           thin_delta (success and failures)
#   info.json               versions, data_block_size, thin ids, the regions written and the
#                           4 MiB chunk indexes each capture must map to (what the tests assert)
set -euo pipefail
export LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1

out=${1:?usage: capture-thin-delta.sh OUTDIR   (as root, inside the lab guest)}
die() { echo "capture-thin-delta: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
for c in lvcreate lvs dmsetup thin_delta jq dd blkdiscard sha256sum; do
  command -v "$c" >/dev/null || die "$c is missing (apt-get install lvm2 thin-provisioning-tools jq util-linux)"
done
dmsetup version >/dev/null 2>&1 || die "device-mapper is not available here: run this inside the lab guest"

pv_link=/dev/disk/by-id/virtio-labdata
vg=vgthincap
udevadm settle --timeout=60
[ -b "$pv_link" ] || die "the data disk ($pv_link) is missing: is the VM started by lab/run.mjs?"
pv=$(readlink -f "$pv_link")
vgs -- "$vg" >/dev/null 2>&1 && die "volume group $vg exists already"
mkdir -p "$out"
rm -f "$out"/*.xml "$out"/*.run.json "$out"/info.json

# --- Keep equal to src/lvm/report.ts (LVM_REPORT_OPTIONS, THIN_LV_FIELDS); a unit test compares them.
REPORT_OPTIONS=(--reportformat json --units b --nosuffix --binary --config 'report/list_item_separator=","')
THIN_LV_FIELDS=lv_name,vg_name,lv_full_name,segtype,pool_lv,thin_id,lv_active
# ------------------------------------------------------------------------------------------------

MiB=$((1024 * 1024))
chunk=$((4 * MiB))

pvcreate -q "$pv"
vgcreate -q "$vg" "$pv"

# Whatever happens: release any reserved metadata snapshot, then remove the VG.
reserved=()
cleanup() {
  local rc=$? tp
  for tp in "${reserved[@]}"; do
    dmsetup message "$tp" 0 release_metadata_snap 2>/dev/null || true
  done
  vgremove -qq -ff -y -- "$vg" >/dev/null 2>&1 || echo "capture-thin-delta: could not remove VG $vg" >&2
  pvremove -qq -ff -y -- "$pv" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

argv_json() {
  local a sep=''
  printf '['
  for a in "$@"; do printf '%s' "$sep"; printf '%s' "$a" | jq -Rs .; sep=','; done
  printf ']'
}
# run_record FILE EXPECTED_RC|any COMMAND ARGS...: the whole run as JSON.
run_record() {
  local file=$1 want=$2 rc=0
  shift 2
  "$@" >"$out/.stdout" 2>"$out/.stderr" || rc=$?
  jq -n --argjson argv "$(argv_json "$@")" --rawfile stdout "$out/.stdout" --rawfile stderr "$out/.stderr" \
    --argjson exitCode "$rc" '{argv: $argv, exitCode: $exitCode, stdout: $stdout, stderr: $stderr}' >"$out/$file"
  rm -f "$out/.stdout" "$out/.stderr"
  if [ "$want" != any ] && [ "$rc" -ne "$want" ]; then die "$* exited $rc, expected $want (see $out/$file)"; fi
  return 0
}
# write DEV OFFSET_BYTES LENGTH_BYTES: random data, direct, flushed (a flush commits the pool's metadata).
write() {
  dd if=/dev/urandom of="$1" bs=64K seek=$(($2 / 65536)) count=$(($3 / 65536)) oflag=direct conv=fsync,notrunc status=none
}
lv_field() { lvs --noheadings --units b --nosuffix -o "$2" -- "$vg/$1" | tr -d ' '; }

pools_json='[]'
# capture POOL CHUNKSIZE: one pool, its thin LV and base snapshot, the changes, the deltas.
capture() {
  local pool=$1 chunksize=$2
  local lv=${pool}disk snap=${pool}base
  lvcreate -q -y --type thin-pool -L 192m --chunksize "$chunksize" -Zn -n "$pool" -- "$vg" >/dev/null
  lvcreate -q -y -V 64m --thinpool "$pool" -n "$lv" -- "$vg" >/dev/null
  local dev=/dev/$vg/$lv
  # The first run's disk: chunks 0-7 written (32 MiB), 8-15 never written (unmapped).
  write "$dev" 0 $((32 * MiB))
  lvcreate -q -y -s -K -n "$snap" -- "$vg/$lv" >/dev/null
  lvchange -q -ay -K -- "$vg/$snap" >/dev/null
  # The changes since the base (chunk = 4 MiB of the disk):
  write "$dev" $((2 * chunk)) "$chunk"                      # chunk 2 rewritten whole
  write "$dev" $((5 * chunk + MiB)) $((64 * 1024))          # chunk 5: 64 KiB inside it
  write "$dev" $((7 * chunk - 64 * 1024)) $((128 * 1024))   # chunks 6 and 7: 128 KiB across their border
  write "$dev" $((12 * chunk)) "$chunk"                     # chunk 12: never written before
  blkdiscard -o $((4 * chunk)) -l "$chunk" "$dev"           # chunk 4: discarded (unmapped again)
  sync

  local tpool=$vg-$pool-tpool tmeta=/dev/mapper/$vg-${pool}_tmeta
  local snap_id lv_id dbs
  snap_id=$(lv_field "$snap" thin_id)
  lv_id=$(lv_field "$lv" thin_id)
  dbs=$(lv_field "$pool" chunk_size)

  # The thin ids as the lvm driver reads them (the base snapshot, the origin, the pool).
  run_record "$pool-lvs-thin.run.json" 0 lvs "${REPORT_OPTIONS[@]}" -o "$THIN_LV_FIELDS" -- "$vg/$snap" "$vg/$lv" "$vg/$pool"
  run_record "$pool-status-missing.run.json" any dmsetup status "$vg-nosuchpool-tpool"

  # Without a reserved metadata snapshot, -m fails: what a backup sees if reserving was skipped.
  run_record "$pool-delta-nosnap.run.json" any thin_delta -m --thin1 "$snap_id" --thin2 "$lv_id" "$tmeta"

  reserved+=("$tpool")
  run_record "$pool-reserve.run.json" 0 dmsetup message "$tpool" 0 reserve_metadata_snap
  run_record "$pool-reserve-again.run.json" any dmsetup message "$tpool" 0 reserve_metadata_snap
  run_record "$pool-status-held.run.json" 0 dmsetup status "$tpool"
  run_record "$pool-delta.run.json" 0 thin_delta -m --thin1 "$snap_id" --thin2 "$lv_id" "$tmeta"
  thin_delta -m --thin1 "$snap_id" --thin2 "$lv_id" "$tmeta" >"$out/$pool-delta.xml"
  thin_delta -m --verbose --thin1 "$snap_id" --thin2 "$lv_id" "$tmeta" >"$out/$pool-delta-verbose.xml"
  thin_delta -m --thin1 "$lv_id" --thin2 "$snap_id" "$tmeta" >"$out/$pool-delta-reverse.xml"
  thin_delta -m --thin1 "$snap_id" --thin2 "$snap_id" "$tmeta" >"$out/$pool-delta-same.xml"
  run_record "$pool-delta-unknown-id.run.json" any thin_delta -m --thin1 "$snap_id" --thin2 999 "$tmeta"
  run_record "$pool-release.run.json" 0 dmsetup message "$tpool" 0 release_metadata_snap
  reserved=()
  run_record "$pool-release-again.run.json" any dmsetup message "$tpool" 0 release_metadata_snap
  run_record "$pool-status-released.run.json" 0 dmsetup status "$tpool"

  pools_json=$(jq -c --arg pool "$pool" --arg tpool "$tpool" --arg tmeta "$tmeta" --argjson snapId "$snap_id" \
    --argjson originId "$lv_id" --argjson chunkSizeBytes "$dbs" --argjson lvSize $((64 * MiB)) \
    '. + [{pool: $pool, tpool: $tpool, tmeta: $tmeta, snapThinId: $snapId, originThinId: $originId,
           poolChunkSizeBytes: $chunkSizeBytes, lvSize: $lvSize}]' <<<"$pools_json")
}

capture pool64k 64k
capture pool512k 512k

jq -n --argjson pools "$pools_json" --arg thinDeltaVersion "$(thin_delta -V)" \
  --arg lvmVersion "$(lvm version | head -1 | sed 's/^ *//')" --arg kernel "$(uname -r)" \
  --arg capturedAt "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson chunkBytes "$chunk" \
  '{capturedAt: $capturedAt, kernel: $kernel, lvmVersion: $lvmVersion, thinDeltaVersion: $thinDeltaVersion,
    chunkBytes: $chunkBytes, pools: $pools,
    base: {written: [[0, 33554432]]},
    changes: [
      {what: "rewrite whole chunk 2", offset: 8388608, length: 4194304},
      {what: "64 KiB inside chunk 5", offset: 22020096, length: 65536},
      {what: "128 KiB across chunks 6/7", offset: 29294592, length: 131072},
      {what: "chunk 12, never written before", offset: 50331648, length: 4194304},
      {what: "discard chunk 4", offset: 16777216, length: 4194304, discard: true}],
    changedChunks: [2, 4, 5, 6, 7, 12]}' >"$out/info.json"
echo "capture-thin-delta: wrote $(ls "$out" | wc -l) files to $out"
