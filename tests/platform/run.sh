#!/usr/bin/env bash
# The official `openai` Python package against `dartmouth platform` (embedded models): chat,
# streamed chat, transcription of a WAV, speech, embeddings, moderations — unchanged client code.
# Then the TypeScript client (web-demo/platform-client) against the same sidecar.
# Needs DARTMOUTH_BIN and the models; the venv comes from scripts/platform-venv.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
bin="${DARTMOUTH_BIN:?set DARTMOUTH_BIN to the dartmouth binary}"
"$root/scripts/platform-venv.sh"
venv="${DARTMOUTH_HOME:-$HOME/.cache/dartmouth}/venv-platform"
work="$(mktemp -d)"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/dartmouth.toml" <<TOML
[platform]
data_dir = "$work/data"
[platform.bootstrap_admin]
email = "admin@example.com"
password = "admin-password"
TOML
"$bin" --config "$work/dartmouth.toml" platform --http "127.0.0.1:$port" > "$work/platform.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$work/platform.log"; exit 1; }
  sleep 1
done
base="http://127.0.0.1:$port"
token="$(curl -sf -X POST "$base/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"admin-password"}' | "$venv/bin/python" -c 'import sys,json;print(json.load(sys.stdin)["access_token"])')"
key="$(curl -sf -X POST "$base/v1/api-keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"name":"openai-sdk","role":"developer"}' | "$venv/bin/python" -c 'import sys,json;print(json.load(sys.stdin)["key"])')"
espeak-ng -v en-us -s 150 -w "$work/q.wav" "What is the weather like today"
sox "$work/q.wav" -r 16000 -c 1 -b 16 "$work/q16.wav"
"$venv/bin/python" "$here/openai_compat.py" "$base" "$key" "$work/q16.wav"
# The TypeScript client's unit tests, and its live run against this sidecar.
(cd "$root/web-demo/platform-client" && PLATFORM_URL="$base" npm test)
