#!/usr/bin/env bash
# Runs the WebRTC interop tests against real third-party peers (today: aiortc over WHIP).
# Creates the pinned venv first (scripts/interop-venv.sh). Prints "SKIP: reason" and exits 0 when
# the venv cannot be made or the gateway binary is missing; otherwise exits non-zero on failure.
# Environment: DARTMOUTH_BIN / CARGO_TARGET_DIR (the binary), DARTMOUTH_GATEWAY_URL (use a running
# gateway instead of starting one), DARTMOUTH_HOME (venv and models), DARTMOUTH_INTEROP_OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-interop"
if ! scripts/interop-venv.sh; then
  echo "SKIP: could not create the interop venv at $venv (see above)"
  exit 0
fi
exec "$venv/bin/python" tests/interop/aiortc_whip.py "$@"
