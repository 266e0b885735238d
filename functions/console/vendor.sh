#!/usr/bin/env bash
# Refreshes the console's vendored libraries from npm: pinned versions,
# each with its licence, listed in web/vendor/VERSIONS (and axe-core, for
# the browser tests only, in tests/vendor/). Run it after changing a pin;
# commit what it writes. Needs npm (nothing else of Node's).
set -euo pipefail
cd "$(dirname "$0")"

MARKED=18.2.1
DOMPURIFY=3.5.0
KATEX=0.19.1
AXE=4.14.1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fetch() { # name version -> $work/<name>/package
  local tarball
  tarball="$(cd "$work" && npm pack --silent "$1@$2")"
  mkdir -p "$work/$1"
  tar xzf "$work/$tarball" -C "$work/$1"
}
fetch marked "$MARKED"
fetch dompurify "$DOMPURIFY"
fetch katex "$KATEX"
fetch axe-core "$AXE"

out=web/vendor
rm -rf "$out" && mkdir -p "$out/marked" "$out/dompurify" "$out/katex/fonts"
cp "$work/marked/package/lib/marked.esm.js" "$out/marked/"
cp "$work/marked/package/LICENSE" "$out/marked/LICENSE"
cp "$work/dompurify/package/dist/purify.es.mjs" "$out/dompurify/"
cp "$work/dompurify/package/LICENSE" "$work/dompurify/package/LICENSE-MPL" "$out/dompurify/"
cp "$work/katex/package/dist/katex.mjs" "$work/katex/package/dist/katex.min.css" "$out/katex/"
cp "$work/katex/package/dist/fonts/"*.woff2 "$out/katex/fonts/"
cp "$work/katex/package/LICENSE" "$out/katex/LICENSE"
cat > "$out/VERSIONS" <<VERSIONS
marked $MARKED (MIT) lib/marked.esm.js
dompurify $DOMPURIFY (MPL-2.0 OR Apache-2.0) dist/purify.es.mjs
katex $KATEX (MIT) dist/katex.mjs, dist/katex.min.css, dist/fonts/*.woff2
VERSIONS

tests_out=../../tests/vendor/axe-core
rm -rf "$tests_out" && mkdir -p "$tests_out"
cp "$work/axe-core/package/axe.min.js" "$work/axe-core/package/LICENSE" "$tests_out/"
echo "axe-core $AXE (MPL-2.0) axe.min.js" > "$tests_out/VERSION"
echo "vendored: marked $MARKED, dompurify $DOMPURIFY, katex $KATEX, axe-core $AXE"
