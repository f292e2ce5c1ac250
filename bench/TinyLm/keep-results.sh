#!/usr/bin/env bash
# Copies what bench/TinyLm.md was generated from into bench/TinyLm/results/ (kept in the repository; data/ is not):
# results.json, train-summary.json, splits.json, every run's shears-report.json and log, and the text-evaluation check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
data="$here/data"
out="$here/results"
rm -rf "$out"
mkdir -p "$out/runs"
cp "$data/results.json" "$data/train-summary.json" "$data/splits.json" "$out/"
for run in "$data"/runs/*/; do
  name=$(basename "$run")
  [ -f "$run/shears-report.json" ] && cp "$run/shears-report.json" "$out/runs/$name.report.json"
done
cp "$data"/runs/*.log "$out/runs/"

# Text evaluation with the model's tokenizer.json against the same bytes as a .json of 128-byte sequences.
shears="$data/shears/shears"
chapter="$data/moby-dick/chapter_135.txt"
tmp=$(mktemp -d)
python3 -c "
import json,sys
b=open(sys.argv[1],'rb').read()
b=b[3:] if b[:3]==b'\xef\xbb\xbf' else b
s=[list(b[i:i+128]) for i in range(0,len(b),128)]
json.dump([x for x in s if len(x)>=2],open(sys.argv[2],'w'))" "$chapter" "$tmp/chapter_135.json"
{
  echo "date: $(date -u)"
  for eval in "$chapter" "$tmp/chapter_135.json"; do
    echo "\$ shears run --model bench/TinyLm/data/model --out TMP --sparsity 0 --eval ${eval/#$root\//}"
    "$shears" run --model "$data/model" --out "$tmp/out" --force --sparsity 0 --eval "$eval" > /dev/null
    python3 -c "import json,sys; e=json.load(open(sys.argv[1]))['baseline']['eval']; print(f\"baseline {e['metric']} {e['value']:.6f} over {e['tokens']:,} predicted tokens\")" "$tmp/out/shears-report.json"
  done
} | tee "$out/text-eval-check.txt"
rm -rf "$tmp"
