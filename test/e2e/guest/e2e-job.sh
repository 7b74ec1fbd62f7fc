#!/bin/bash
# The e2e job, run inside the lab guest by lab-job (working folder: the checkout at /lab/src):
# sets up the fixture, then runs the vitest project `e2e`. Extra arguments go to vitest.
# Phase durations (ms) are appended to $KVMBAK_LAB_PHASES for the host's report.
set -uo pipefail
phases=${KVMBAK_LAB_PHASES:-/dev/null}
now_ms() { date +%s%3N; }

t=$(now_ms)
export KVMBAK_LAB_FIXTURE=/run/kvmbak-lab/fixture.json
if ! bash test/e2e/guest/fixture.sh /run/kvmbak-lab; then
  echo "e2e-job: the lab fixture could not be set up (see above)" >&2
  exit 1
fi
echo "fixture $(( $(now_ms) - t ))" >>"$phases"

t=$(now_ms)
node node_modules/vitest/vitest.mjs run --project e2e --reporter=verbose "$@"
rc=$?
echo "suite $(( $(now_ms) - t ))" >>"$phases"
exit "$rc"
