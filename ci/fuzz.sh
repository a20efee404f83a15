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
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" 2>&1 \
    | grep -E "^(Done|==[0-9]+==ERROR)|panicked" || true
  # cargo fuzz exits non-zero on a crash; pipefail carries it here.
done
