#!/usr/bin/env bash
# Checks what each built component imports and exports against wit/expected/<name>.txt, so a
# dependency that drags in an unexpected import fails the build. Versions are compared as
# major.minor (wasi 0.2.x patch releases are interchangeable for hosts).
# Usage: scripts/check-components.sh [--update]
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for wasm in build/wasip2/*.wasm; do
  name=$(basename "$wasm" .wasm)
  expected="wit/expected/$name.txt"
  actual=$(jco wit "$wasm" | grep -E '^\s*(import|export) ' | sed -E 's/^\s+//; s/@([0-9]+)\.([0-9]+)\.[0-9]+(-[^;]*)?;/@\1.\2;/; s/;$//' | sort -u)
  if [[ "${1:-}" == "--update" ]]; then
    printf '%s\n' "$actual" > "$expected"
    continue
  fi
  if ! diff -u "$expected" <(printf '%s\n' "$actual"); then
    echo "component $name: imports/exports differ from $expected" >&2
    status=1
  else
    echo "component $name: $(grep -c '^import' "$expected") imports, exports $(grep '^export' "$expected" | cut -d' ' -f2 | tr '\n' ' ')"
  fi
done
exit $status
