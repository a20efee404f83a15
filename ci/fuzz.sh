#!/usr/bin/env bash
# Bounded fuzz runs of every cargo-fuzz target, seeded from fuzz/seeds.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 allows them on stable.
# A crash fails the run and leaves its input in fuzz/artifacts/<target>/:
# turn it into a regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
  echo "fuzz: $target for ${seconds}s"
  log="$(mktemp)"
  if ! cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^Done" "$log"
  rm -f "$log"
done
