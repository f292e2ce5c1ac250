#!/usr/bin/env bash
# bench/Structured.md, MiniLM part: all-MiniLM-L6-v2 (ONNX) with 25% and 50% of its FFN neurons, 25% of its heads
# (--scope layer --remove) and one or two of its six layers removed (--pattern layers, ranked on general-English
# calibration sentences), each without and with distillation, against the same fractions as
# unstructured masks of all 36 matrices; quality from each run's --eval on held-out general English, file bytes, and
# ONNX Runtime latency of every written model against the dense one in one process, same threads, alternating.
# Usage: bench/Structured/minilm.sh [WORK_DIR]   (default /tmp/shears-structured-bench; ~90 MB per model)
# Environment: STEPS (distillation steps, default 60), EVAL (sentences of the committed held-out sample, default 500),
# RESULTS (default bench/Structured/results/minilm-DATE), ONLY (regex over row names).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mkdir -p "${1:-/tmp/shears-structured-bench}" && cd "${1:-/tmp/shears-structured-bench}" && pwd)"
steps="${STEPS:-60}"
eval_count="${EVAL:-500}"
only="${ONLY:-.}"
results="${RESULTS:-$here/results/minilm-$(date -u +%Y-%m-%d-%H%M)}"
mkdir -p "$results" "$work/data" "$work/runs"
cd "$root"

dotnet build client/Shears.Client -c Release -nologo -v quiet
dotnet build bench/MiniLm/Shears.MiniLmBench.csproj -c Release -nologo -v quiet
shears="$root/client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
bench="$root/bench/MiniLm/bin/Release/net10.0/linux-x64/minilm-bench"
"$shears" minilm "$work/dense"
model="$work/dense/model.onnx"

# Held-out general English (committed); distillation sentences from the corpus script (other documents).
head -n "$eval_count" "$root/data/english-heldout-sample-1000.txt" > "$work/data/eval.txt"
[[ -f "$work/data/english-distill.txt" ]] || scripts/make-english-corpus.sh "$work/data" > "$work/data/corpus.log"
# One pass of the distillation: steps × batch sentences, spread over the whole set (every k-th line), so that the
# dense model embeds only what the steps use.
awk -v n="$((steps * 16))" -v total="$(wc -l < "$work/data/english-distill.txt")" 'NR % int(total / n) == 0 && c < n { print; c++ }' \
  "$work/data/english-distill.txt" > "$work/data/distill.txt"
if grep -qxFf "$work/data/eval.txt" "$work/data/distill.txt"; then echo "minilm.sh: a held-out sentence is in the distillation set" >&2; exit 1; fi
# Calibration for the layer ranking: 128 sentences of the corpus's calibration documents.
awk -v total="$(wc -l < "$work/data/english-calibration.txt")" 'NR % int(total / 128) == 0 && c < 128 { print; c++ }' \
  "$work/data/english-calibration.txt" > "$work/data/calibration.txt"
if grep -qxFf "$work/data/eval.txt" "$work/data/calibration.txt"; then echo "minilm.sh: a held-out sentence is in the calibration set" >&2; exit 1; fi

{
  echo "--- bench/Structured/minilm.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(grep -o -w -m1 -E 'avx512_vnni|avx512f|avx_vnni|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '))"
  echo "memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  echo "dotnet: $(dotnet --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "STEPS=$steps EVAL=$eval_count ONLY=$only"
} > "$results/machine.txt"
cat "$results/machine.txt"

eval_args=(--eval "$work/data/eval.txt")
ft_args=(--finetune-steps "$steps" --finetune-data "$work/data/distill.txt" --lr 2e-5 --batch 16)
: > "$results/commands.txt"
row() {
  local name="$1"; shift
  echo "shears run --model \$WORK/dense/model.onnx --out \$WORK/runs/$name $* --force" | sed "s#$work#\$WORK#g" >> "$results/commands.txt"
  [[ "$name" =~ $only ]] || return 0
  echo "=== $name"
  "$shears" run --model "$model" --out "$work/runs/$name" "$@" --force > "$results/$name.log" 2>&1 \
    || { echo "minilm.sh: $name failed (results/$name.log)" >&2; tail -5 "$results/$name.log" >&2; return 0; }
  grep -E '^round ' "$results/$name.log" || true
  cp "$work/runs/$name/shears-report.json" "$results/$name.report.json"
}
row dense           --sparsity 0 "${eval_args[@]}"
row neurons-25      --sparsity 0.25 --pattern neurons --scope layer --remove "${eval_args[@]}"
row neurons-50      --sparsity 0.5 --pattern neurons --scope layer --remove "${eval_args[@]}"
row neurons-25-ft   --sparsity 0.25 --pattern neurons --scope layer --remove "${ft_args[@]}" "${eval_args[@]}"
row neurons-50-ft   --sparsity 0.5 --pattern neurons --scope layer --remove "${ft_args[@]}" "${eval_args[@]}"
row heads-25        --sparsity 0.25 --pattern heads --scope layer --remove "${eval_args[@]}"
row heads-25-ft     --sparsity 0.25 --pattern heads --scope layer --remove "${ft_args[@]}" "${eval_args[@]}"
# round_half_to_even(0.17 × 6) = 1 and round_half_to_even(0.34 × 6) = 2 layers.
layer_args=(--pattern layers --calibration "$work/data/calibration.txt" --remove)
row layers-1        --sparsity 0.17 "${layer_args[@]}" "${eval_args[@]}"
row layers-2        --sparsity 0.34 "${layer_args[@]}" "${eval_args[@]}"
row layers-1-ft     --sparsity 0.17 "${layer_args[@]}" "${ft_args[@]}" "${eval_args[@]}"
row layers-2-ft     --sparsity 0.34 "${layer_args[@]}" "${ft_args[@]}" "${eval_args[@]}"
row masked-25       --sparsity 0.25 --scope layer "${eval_args[@]}"
row masked-50       --sparsity 0.5 --scope layer "${eval_args[@]}"

# Quality and size from the reports; latency of every model in one ONNX Runtime process.
for r in "$results"/*.report.json; do
  python3 - "$r" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["rounds"][-1]["eval"]
name = sys.argv[1].rsplit("/", 1)[1].replace(".report.json", "")
kept = [l for l in r["removal"]["layers"] if not l["removed"]] if r.get("removal") else []
widths = sorted({1536 - len(l["neurons"]) for l in kept}) if kept else "-"
heads = sorted({12 - len(l["heads"]) for l in kept}) if kept else "-"
removed = [l["layer"] for l in r["removal"]["layers"] if l["removed"]] if r.get("removal") else []
print(f'{name}\toutputBytes {r["size"]["outputBytes"]}\tffn widths {widths}\theads {heads}\tlayers removed {removed}\tfidelity {e["value"]:.4f}\tp5 {e["measures"]["fidelityP5"]:.4f}\tNA@10 {e["measures"]["neighbourAgreement10"]:.4f}\tseconds {r["seconds"]:.1f}')
PY
done | tee "$results/quality.txt"
models="dense=$model"
for name in neurons-25 neurons-50 neurons-25-ft neurons-50-ft heads-25 heads-25-ft layers-1 layers-2 layers-1-ft layers-2-ft masked-25 masked-50; do
  [[ -f "$work/runs/$name/model.onnx" ]] && models+=",$name=$work/runs/$name/model.onnx"
done
ls -l "$model" "$work"/runs/*/model.onnx | awk '{ print $5, $9 }' | sed "s#$work#\$WORK#g" > "$results/model-bytes.txt"
"$bench" latency --models "$models" --sentences "$work/data/eval.txt" --threads 2 --repeat 9 | sed "s#$work#\$WORK#g" | tee "$results/latency.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results/machine.txt"
