#!/usr/bin/env bash
# Creates (once) the Python virtualenv of the API fuzz test and installs the pinned schemathesis.
# Idempotent and quiet: a second run checks the installed version and does nothing else.
# The venv is ${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-schemathesis
set -euo pipefail

SPEC='schemathesis==4.32.*'
VENV="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-schemathesis"
PYTHON="${PYTHON:-python3}"

installed() {
  [ -x "$VENV/bin/schemathesis" ] &&
    "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("schemathesis").startswith("4.32.")' >/dev/null 2>&1
}

if installed; then
  exit 0
fi

echo "schemathesis-venv: installing $SPEC into $VENV" >&2
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC"
installed || { echo "schemathesis-venv: schemathesis did not install" >&2; exit 1; }
