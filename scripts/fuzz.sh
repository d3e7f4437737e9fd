#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 10s).
# Crashers are written by Go to the package's testdata/fuzz and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
status=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
  for t in $targets; do
    echo "fuzz: $pkg $t ($FUZZTIME)"
    if ! go test -run='^$' -fuzz="^$t\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/herald-fuzz.log 2>&1; then
      cat /tmp/herald-fuzz.log
      status=1
    else
      tail -n 1 /tmp/herald-fuzz.log
    fi
  done
done
exit $status
