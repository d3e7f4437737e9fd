#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 10s).
# Crashers are written by Go to the package's testdata/fuzz and fail the run.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded" at
# the -fuzztime boundary when its workers are starved of CPU (go.dev/issue/75804,
# fixed in Go 1.27): no input failed and nothing is written. Such a run is
# repeated with an execution-count budget (no wall-clock deadline to race);
# a real finding (a written crasher, a panic, a t.Fatal) always fails.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
RETRY_EXECS=${RETRY_EXECS:-20000x}
# Minimizing each new interesting input can take the default 60 s on large
# YAML or JSON inputs, stalling every worker; keep the smoke runs fuzzing.
MINIMIZE=${FUZZMINIMIZETIME:-2s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

# deadline_only: the run failed, but only with the coordinator's deadline race.
deadline_only() {
  grep -q 'context deadline exceeded' "$log" &&
    ! grep -Eq 'Failing input written|panic:|fuzz_test.go:[0-9]+:|_test.go:[0-9]+:' "$log"
}

for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
  for t in $targets; do
    echo "fuzz: $pkg $t ($FUZZTIME)"
    if go test -run='^$' -fuzz="^$t\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$MINIMIZE" "$pkg" >"$log" 2>&1; then
      tail -n 1 "$log"
      continue
    fi
    if deadline_only; then
      echo "fuzz: $t hit Go's fuzztime deadline race (go.dev/issue/75804); repeating with -fuzztime=$RETRY_EXECS"
      if go test -run='^$' -fuzz="^$t\$" -fuzztime="$RETRY_EXECS" -fuzzminimizetime="$MINIMIZE" "$pkg" >"$log" 2>&1; then
        tail -n 1 "$log"
        continue
      fi
    fi
    cat "$log"
    status=1
  done
done
exit $status
