#!/usr/bin/env bash
# API fuzzing of the platform sidecar with schemathesis (PyPI, in its own venv made by
# scripts/schemathesis-venv.sh): a real `dartmouth platform` on a free loopback port, an admin
# token, and every operation of /v1/openapi.json called with generated valid and invalid data.
# Checks: no 5xx, every response matches the schema (body, status code, content type).
# Time bound: SCHEMATHESIS_SECONDS (default 120). Exits non-zero on any failure.
# Environment: DARTMOUTH_BIN / CARGO_TARGET_DIR (the binary).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="${DARTMOUTH_BIN:-${CARGO_TARGET_DIR:-target}/release/dartmouth}"
[ -x "$bin" ] || { echo "api-fuzz: no dartmouth binary at $bin (cargo build --release -p dartmouth)" >&2; exit 1; }
scripts/schemathesis-venv.sh
venv="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-schemathesis"
seconds="${SCHEMATHESIS_SECONDS:-120}"

work="$(mktemp -d)"
# The embedded models, as a real sidecar has them: /v1/audio, /v1/chat and the intents are
# fuzzed on the models themselves, not answered 503.
ln -s "${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/models" "$work/models"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
DARTMOUTH_HOME="$work" \
DARTMOUTH_PLATFORM__DATA_DIR="$work/platform" \
DARTMOUTH_PLATFORM__ARGON2_MEMORY_KIB=64 \
DARTMOUTH_PLATFORM__ARGON2_ITERATIONS=1 \
DARTMOUTH_PLATFORM__RATE_LIMITS__ENABLED=false \
DARTMOUTH_PLATFORM__BOOTSTRAP_ADMIN__EMAIL=admin@example.com \
DARTMOUTH_PLATFORM__BOOTSTRAP_ADMIN__PASSWORD=admin-password \
  "$bin" platform --http "127.0.0.1:$port" > "$work/platform.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/platform.log"; exit 1; }
  sleep 0.1
done
token="$(curl -fsS "$url/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"admin-password"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

status=0
# From the temporary directory: schemathesis keeps its state in ./.schemathesis.
cd "$work"
# One worker: Debian's Python 3.11 miscounts AST recursion depth when two threads parse source at
# once (CPython gh-106905), and hypothesis parses its own lambdas while generating; with two
# workers a run fails now and then with "AST constructor recursion depth mismatch", which is the
# fuzzer's own crash, not a finding about the sidecar.
"$venv/bin/schemathesis" run "$url/v1/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --header "Authorization: Bearer $token" \
  --max-time "$seconds" --workers 1 --seed 1 \
  --phases examples,coverage,fuzzing \
  --exclude-path /v1/auth/logout \
  --suppress-health-check all \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "api-fuzz: schemathesis found failures (above); sidecar log tail:"
  tail -20 "$work/platform.log"
fi
exit "$status"
