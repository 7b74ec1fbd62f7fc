#!/bin/sh
# Memory check of the native addon under valgrind: every handle freed exactly once.
# Runs exercise.cjs (every wrapped libvirt call, 20 rounds, leaked wrappers
# included) against a private copy of the test-driver node fixture and fails
# when valgrind reports an invalid read/write or a definite leak whose stack
# passes through the addon (kvmbak.node). V8's conservative stack scan gives
# "uninitialised value" noise inside node itself: ignored.
# Usage: sh test/native/leak/run.sh   (needs valgrind; ~25 s)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/../../fixtures/libvirt/node.xml" "$tmp/node.xml"
valgrind --leak-check=full --show-leak-kinds=definite --num-callers=40 --log-file="$tmp/valgrind.log" \
  node --expose-gc "$here/exercise.cjs" "test://$tmp/node.xml" "$tmp"
grep -E 'definitely lost:|ERROR SUMMARY' "$tmp/valgrind.log"
if grep -E -A40 '(Invalid (read|write|free)|definitely lost in loss record)' "$tmp/valgrind.log" | grep -q 'kvmbak'; then
  echo "valgrind: problem in the kvmbak addon, see the log:" >&2
  cat "$tmp/valgrind.log" >&2
  exit 1
fi
echo "valgrind: no leak or invalid access in the kvmbak addon"
