#!/usr/bin/env bash
# Each vendored crate (vendor/<name>) is the published crate plus
# vendor/<name>.patch, and nothing else: fetches the .crate from crates.io,
# checks its SHA-256, applies the patch, and compares the result with the
# vendored directory byte for byte (vendor/<name>/TMPVAULT.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."

# name version sha256 (of the .crate file)
crates=(
  "h2 0.4.20 7d29020232d6aa3fb1daca64c1127cf662cf97f254ae16c18c05b8ab635fc118"
  "hyper 1.12.0 2c3e324da4c95177d6291d4c8730197c0d1822f8a9766814a4a44fa5ab797c9c"
)
# What a published crate carries for its own repository, left out here.
dropped=(.cargo_vcs_info.json .github .gitignore Cargo.lock)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for line in "${crates[@]}"; do
  read -r name version sha256 <<<"$line"
  crate="$work/$name-$version.crate"
  cached=$(ls ~/.cargo/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n 1 || true)
  if [ -n "$cached" ]; then
    cp "$cached" "$crate"
  else
    curl -sSfL -o "$crate" "https://static.crates.io/crates/$name/$name-$version.crate"
  fi
  echo "$sha256  $crate" | sha256sum --check --quiet
  tar -xzf "$crate" -C "$work"
  published="$work/$name-$version"
  for file in "${dropped[@]}"; do rm -rf "${published:?}/$file"; done
  patch --quiet -p1 -d "$published" < "vendor/$name.patch"
  if ! diff -r --exclude TMPVAULT.md "$published" "vendor/$name"; then
    echo "vendor/$name differs from $name $version with vendor/$name.patch applied (see vendor/$name/TMPVAULT.md)" >&2
    exit 1
  fi
  grep -q "^version = \"$version\"" "vendor/$name/Cargo.toml"
  echo "vendor/$name: $name $version from crates.io, with vendor/$name.patch and nothing else"
done
