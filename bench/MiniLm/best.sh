#!/usr/bin/env bash
# The best 50%-sparse all-MiniLM-L6-v2 this project makes within 30 minutes on two cores, written through `shears run`
# to OUT/model.onnx (with vocab.txt and the run's shears-report.json), and its 2:4 twin to OUT/2of4/ (PATTERN=unstructured
# makes only the first, PATTERN=2:4 only the second).
#
# Recipe: SparseGPT, per layer (`--scope layer`), calibrated on 128 sentences of general English, then STEPS steps of
# layer-wise distillation (`--distill hidden`: toward the dense model's sentence embeddings and every layer's hidden
# states; batches of 16 sentences of the distillation set, learning rate LR with WARMUP steps of linear warm-up and
# cosine decay), the masks held throughout. Calibration, distillation
# and evaluation use the three disjoint sets of scripts/make-english-corpus.sh (general-English prose: Moby-Dick, the
# State of the Union addresses, Jane Austen; split by chapter or address, no sentence shared); the evaluation is the
# committed held-out sample data/english-heldout-sample-1000.txt, which no step before it reads.
#
# Afterwards the written model is measured again, independently of the run, in ONNX Runtime (`minilm-bench measure`:
# fidelity and neighbour agreement@10 over the same 1,000 sentences), and its zeros counted in the file itself
# (bench/MiniLm/count-zeros.py) beside the report's masked count (zeros.txt).
#
# DISTILL=output distills the sentence embeddings only; SCOPE=owl allocates per layer by OWL (unstructured only).
#
# Usage: [STEPS=N] [LR=X] [WARMUP=N] [DISTILL=output|hidden] [HIDDEN_WEIGHT=B] [SCOPE=layer|owl] [PATTERN=both|unstructured|2:4] bench/MiniLm/best.sh OUT
# Writes OUT/ (model, report, log, commands.txt, measure.txt, zeros.txt, machine.txt).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(mkdir -p "${1:?usage: bench/MiniLm/best.sh OUT}" && cd "$1" && pwd)"
steps="${STEPS:-1000}"
lr="${LR:-5e-5}"
warmup="${WARMUP:-50}"
pattern="${PATTERN:-both}"
distill="${DISTILL:-hidden}"
hidden_weight="${HIDDEN_WEIGHT:-1}"
scope="${SCOPE:-layer}"
cd "$root"

[ -f data/english-distill.txt ] || scripts/make-english-corpus.sh
dotnet build client/Shears.Client -c Release -nologo -v quiet
dotnet build bench/MiniLm/Shears.MiniLmBench.csproj -c Release -nologo -v quiet
# A private copy of the CLI: a rebuild of client/ by other work cannot swap DLLs under a run.
rm -rf "$out/.shears" && cp -r client/Shears.Client/bin/Release/net10.0/linux-x64 "$out/.shears"
shears="$out/.shears/shears"
bench="$here/bin/Release/net10.0/linux-x64/minilm-bench"

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- grains client || echo ' (with uncommitted changes)')"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; dotnet $(dotnet --version)"
} > "$out/machine.txt"

"$shears" minilm "$out/.dense" > /dev/null
eval_file=data/english-heldout-sample-1000.txt
# minilm-bench reads sentence pairs (id, query, match): each held-out sentence as its own pair.
awk 'BEGIN { print "id\tquery\tmatch" } { print NR "\t" $0 "\t" $0 }' "$eval_file" > "$out/.heldout-pairs.tsv"

# One run: NAME, output folder, extra options.
run() {
  local name="$1" folder="$2"; shift 2
  local command=("$shears" run --model "$out/.dense/model.onnx" --out "$folder" --force --sparsity 0.5 --method sparsegpt --scope "$scope"
    --calibration data/english-calibration.txt --calibration-samples 128
    --finetune-steps "$steps" --finetune-data data/english-distill.txt --lr "$lr" --lr-schedule cosine --warmup-steps "$warmup" --batch 16
    --distill "$distill" $([ "$distill" = hidden ] && echo --hidden-weight "$hidden_weight")
    --eval "$eval_file" "$@")
  echo "$name: ${command[*]}" | sed "s|$out/.shears/||; s|$out|OUT|g" >> "$out/commands.txt"
  local start end
  start=$(date +%s)
  "${command[@]}" > "$out/$name.log" 2>&1
  end=$(date +%s)
  echo "$name: $((end - start)) s" >> "$out/seconds.txt"
  "$bench" measure --dense "$out/.dense/model.onnx" --pruned "$folder/model.onnx" --pairs "$out/.heldout-pairs.tsv" > "$out/$name.measure.txt"
  # The report's count and figures, then the file's own count of zeros among the 36 encoder matrices.
  python3 - "$folder/shears-report.json" >> "$out/zeros.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
last = report["rounds"][-1]
print(f"{sys.argv[1]}: masked {last['maskedWeights']} of {report['prunableWeights']} "
      f"({last['achievedSparsity']:.6f}); fidelity {last['eval']['value']:.4f}, "
      f"neighbour agreement@10 {last['eval']['measures']['neighbourAgreement10']:.4f}")
EOF
  python3 "$here/count-zeros.py" "$folder/model.onnx" >> "$out/zeros.txt"
}

rm -f "$out/commands.txt" "$out/seconds.txt" "$out/zeros.txt"
# A run replaces its --out folder whole: the 50% model is written beside OUT's records, then moved in.
case "$pattern" in both|unstructured)
  run best "$out/.best"
  mv -f "$out/.best/model.onnx" "$out/.best/shears-report.json" "$out/"
  cp "$out/.dense/vocab.txt" "$out/vocab.txt"
  rm -rf "$out/.best";;
esac
case "$pattern" in both|2:4) run best-2of4 "$out/2of4" --pattern 2:4;; esac
cat "$out/seconds.txt" "$out/zeros.txt"
grep -h -E "fidelity|neighbour" "$out"/*.measure.txt
