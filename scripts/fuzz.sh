#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (default 20 s; `make fuzz` runs
# longer), starting from the committed seed corpus (fuzz/corpus/<target>, never modified: new
# inputs go to a temporary corpus). Installs cargo-fuzz from crates.io when missing. The machine
# has only the stable toolchain, so cargo-fuzz's -Z flags are allowed with RUSTC_BOOTSTRAP=1.
# Builds without a sanitizer (the code is Rust; C libraries are not instrumented either way) in
# its own target directory: $FUZZ_TARGET_DIR, else ${CARGO_TARGET_DIR}-fuzz, else target-fuzz.
# Exits non-zero when a target crashes; the input is kept under fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-20}}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR%/}-fuzz"
else
  export CARGO_TARGET_DIR="$PWD/target-fuzz"
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
echo "fuzz: building ${#targets[@]} targets (target dir $CARGO_TARGET_DIR)"
(cd fuzz && cargo fuzz build --release --debug-assertions --sanitizer none)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  echo "fuzz: $target for ${seconds} s"
  if (cd fuzz && cargo fuzz run --release --debug-assertions --sanitizer none "$target" \
        "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        > "$work/$target.log" 2>&1); then
    passed=$((passed + 1))
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$target.log" | tr '\n' ' '
    echo
  else
    failed=$((failed + 1))
    echo "fuzz: $target FAILED; last lines of its log:"
    tail -40 "$work/$target.log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
