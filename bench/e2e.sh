#!/usr/bin/env bash
# End to end: pruning a checkpoint of more than 1 GB on the embedded silo, against copying it with cp.
# Usage: bench/e2e.sh [WORKDIR]   (needs ~4 GB free in WORKDIR; default /tmp/shears-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/shears-e2e}
mkdir -p "$work"
dotnet build -c Release client/Shears.Client >/dev/null
dotnet build -c Release bench/Shears.Bench >/dev/null
shears=client/Shears.Client/bin/Release/net10.0/linux-x64/shears
if [ ! -f "$work/model/config.json" ]; then
  dotnet bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll checkpoint "$work/model"
fi
du -sb "$work/model"
time_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v a="$s" -v b="$e" "BEGIN{printf \"%.2f\", b-a}"; }
cat "$work"/model/* > /dev/null   # warm the page cache for both
copy() { cp -r "$work/model" "$work/copy"; }
prune() { "$shears" run --model "$work/model" --out "$work/pruned" --sparsity 0.5 --scope global; }
copy_synced() { copy; sync; }
prune_synced() { prune; sync; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 1 2 3; do
  rm -rf "$work/copy" "$work/pruned"; sync
  c=$(time_of copy); p=$(time_of prune)
  rm -rf "$work/copy" "$work/pruned"; sync
  cs=$(time_of copy_synced); ps=$(time_of prune_synced)
  echo "run $i: page cache: cp ${c}s shears ${p}s ratio $(awk -v p="$p" -v c="$c" "BEGIN{printf \"%.2f\", p/c}")  |  to disk (with sync): cp ${cs}s shears ${ps}s ratio $(awk -v p="$ps" -v c="$cs" "BEGIN{printf \"%.2f\", p/c}")"
done
rm -rf "$work/copy" "$work/pruned"
