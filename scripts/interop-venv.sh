#!/usr/bin/env bash
# Creates (once) the Python virtualenv of the WebRTC interop tests and installs the pinned aiortc.
# Idempotent and quiet: a second run checks the installed version and does nothing else.
# Prints nothing on success unless it had to install; the venv is
#   ${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-interop
set -euo pipefail

AIORTC_SPEC='aiortc==1.16.*'
VENV="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-interop"
PYTHON="${PYTHON:-python3}"

installed() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
assert m.version("aiortc").startswith("1.16.")
import aiortc, av  # noqa: F401  (both import: PyAV's wheel carries libopus)
PY
}

if installed; then
  exit 0
fi

echo "interop-venv: installing $AIORTC_SPEC into $VENV" >&2
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$AIORTC_SPEC"
installed || { echo "interop-venv: aiortc did not import after installing" >&2; exit 1; }
