#!/usr/bin/env bash
# Rebuilds bench/TinyLm.md end to end: fetch Moby-Dick, build, slice and tokenize (byte-level), train the
# small LLaMA, prune it with the shears CLI (magnitude / Wanda / SparseGPT, 50% and 2:4, each with and
# without recovery fine-tuning), write the report. About 40 minutes on 2 shared cores (23 training, 12 for the
# table).
# Extra arguments go to `tinylm all` (e.g. --steps 1800 --weight-decay 0 --finetune-steps 200 --ft-lr 1e-4 --threads 1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

"$here/get-text.sh"
dotnet build client/Shears.Client -c Release -nologo -v quiet
dotnet build bench/TinyLm/Shears.TinyLm.csproj -c Release -nologo -v quiet
# The table runs a private copy of the CLI, so a rebuild of client/ by other work cannot swap DLLs under a run.
rm -rf "$here/data/shears"
mkdir -p "$here/data"
cp -r client/Shears.Client/bin/Release/net10.0/linux-x64 "$here/data/shears"
tinylm="$here/bin/Release/net10.0/linux-x64/tinylm"
time "$tinylm" all "$@"
"$here/keep-results.sh"   # the raw results and the text-evaluation check → bench/TinyLm/results/
