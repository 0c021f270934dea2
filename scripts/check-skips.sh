#!/usr/bin/env bash
# Reads the log of a test run and lists every test that said it skipped ("SKIP:", "SKIPPED:",
# "skipped:", TAP "# SKIP"). Fails when a skip is not one CI cannot run by design: those are
# listed, with why, in .ci/allowed-skips (one extended regex a line; # comments). CI sets
# DATABASE_URL and NATS_URL and installs everything else, so any other skip there is a test that
# silently did not run.
#
# Usage: scripts/check-skips.sh LOG
set -euo pipefail
cd "$(dirname "$0")/.."
log="$1"
allowed=".ci/allowed-skips"

skips="$(grep -aE 'SKIP(PED)?:|[Ss]kipped:|# SKIP' "$log" | sed -E 's/^[[:space:]]+//' | sort | uniq -c || true)"
if [ -z "$skips" ]; then
  echo "check-skips: no test skipped"
  exit 0
fi
patterns="$(grep -vE '^[[:space:]]*(#|$)' "$allowed" 2>/dev/null || true)"
if [ -n "$patterns" ]; then
  unexpected="$(printf '%s\n' "$skips" | grep -vE -f <(printf '%s\n' "$patterns") || true)"
else
  unexpected="$skips"
fi
echo "check-skips: tests that skipped (count, line):"
printf '%s\n' "$skips"
if [ -n "$unexpected" ]; then
  echo "check-skips: FAILED: these skipped although CI can run them:"
  printf '%s\n' "$unexpected"
  exit 1
fi
echo "check-skips: every skip is one CI cannot run (see $allowed)"
