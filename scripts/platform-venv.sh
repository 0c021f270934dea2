#!/usr/bin/env bash
# Creates (once) the Python virtualenv of the platform's client-compatibility tests: the official
# `openai` package (the sidecar must serve it unchanged) and `aiosmtpd` (a real SMTP server).
# Idempotent and quiet; the venv is ${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-platform
set -euo pipefail

OPENAI_SPEC='openai==2.*'
AIOSMTPD_SPEC='aiosmtpd==1.4.*'
VENV="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-platform"
PYTHON="${PYTHON:-python3}"

installed() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
assert m.version("openai").startswith("2.")
assert m.version("aiosmtpd").startswith("1.4")
import openai, aiosmtpd  # noqa: F401
PY
}

if installed; then
  exit 0
fi

echo "platform-venv: installing $OPENAI_SPEC $AIOSMTPD_SPEC into $VENV" >&2
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$OPENAI_SPEC" "$AIOSMTPD_SPEC"
installed || { echo "platform-venv: openai/aiosmtpd did not import after installing" >&2; exit 1; }
