#!/usr/bin/env bash
# Installs everything Dartmouth needs on a Debian machine, idempotently:
# system packages, the npm packages of the browser tests, the release build, and the model files.
# A second run installs and downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: cmake/clang for whisper.cpp and bindgen, libespeak-ng (+libsonic) for phonemes, ALSA for
# audio devices. Tests: Chromium, SIP peers, recorded speech, espeak-ng and sox for fixtures.
# Benchmarks: Janus (VideoRoom), which `dartmouth bench sfu` compares our SFU with, and iproute2
# for the network namespace it runs Janus in.
SYSTEM_PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev libespeak-ng-dev libsonic-dev libasound2-dev
  python3 python3-pip python3-venv nodejs npm
  chromium sip-tester baresip-core pocketsphinx-testdata espeak-ng sox
  janus iproute2
)

missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  # python3-pip/nodejs/npm may come from elsewhere (pyenv, nvm): accept a working command instead.
  case "$package" in
    python3-pip) python3 -m pip --version >/dev/null 2>&1 && continue ;;
    python3-venv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && continue ;;
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    python3) command -v python3 >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The janus package enables a system service; the benchmark starts its own Janus in a namespace,
# so none is left running on the host. Without systemd running (a container) `disable` still
# removes the unit's links and there is nothing to stop.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet janus 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO systemctl disable janus >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] \
  && systemctl is-active --quiet janus 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO systemctl stop janus || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is not installed. Install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi

# Browser-test driver (no browser download: Debian's chromium is used) and the TypeScript client.
if [ ! -d web-demo/node_modules/playwright-core ]; then
  echo "setup: installing npm packages for the browser tests"
  (cd web-demo && npm ci --no-audit --no-fund)
fi
if [ ! -d web-demo/platform-client/node_modules/typescript ]; then
  echo "setup: installing npm packages for the TypeScript platform client"
  (cd web-demo/platform-client && npm ci --no-audit --no-fund)
fi

echo "setup: building dartmouth (release)"
cargo build --release --locked -p dartmouth

echo "setup: provisioning models"
"${CARGO_TARGET_DIR:-target}/release/dartmouth" models fetch

# The WebRTC interop peer (aiortc from PyPI) in its own virtualenv.
scripts/interop-venv.sh
# The API fuzzer of the platform sidecar (schemathesis from PyPI) in its own virtualenv.
scripts/schemathesis-venv.sh
# The platform's client-compatibility tests (the official `openai` package) and its real SMTP
# server (aiosmtpd), which the cargo tests of email notifications use too.
scripts/platform-venv.sh
