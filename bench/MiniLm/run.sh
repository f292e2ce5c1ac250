#!/usr/bin/env bash
# The MiniLM table (bench/MiniLm.md): all-MiniLM-L6-v2 (ONNX) pruned by the shears CLI, dense; 50% global and
# layer-wise magnitude; 50% Wanda; 50% SparseGPT; 2:4 magnitude, Wanda and SparseGPT; each pruned row without and
# with recovery distillation. Every run evaluates with --eval (fidelity, its 5th percentile, neighbour agreement@10,
# retrieval); bench/MiniLm/minilm-bench then measures every written model.onnx again through ONNX Runtime
# (fidelity, neighbour agreement, KJV -> WEB retrieval with the pruned and with the dense corpus) and checks the
# run's own figures against it.
#
# Quantized rows (W8A8, W4A16 alone and after 50% SparseGPT) and, with LATENCY=1, ONNX Runtime's latency of the dense,
# the 50% SparseGPT and the quantized models, alternating in one process (bench/Compression.md).
# RESULTS: where the results go (default bench/MiniLm/results).
# Usage: bench/MiniLm/run.sh [WORK_DIR]          (default /tmp/shears-minilm-bench; models are ~90 MB each)
# Environment: STEPS (distillation steps of one-shot rows, default 60), ROUND_STEPS (steps after each of the 3
# cubic rounds of the magnitude rows, default 20), EVAL_PAIRS (1000 or 2000, default 1000), ONLY (a regex over
# row names: run only those; the table is still built from every row found in WORK_DIR), EXTRA=1 (also the
# longer-budget rows: 50% SparseGPT and Wanda one-shot, then LONG_STEPS distillation steps, default 400, on
# their own, longer distillation file whose first lines are the main one).
# About 40 minutes on 2 shared cores (EXTRA=1: about 15 more). Writes bench/MiniLm/results/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mkdir -p "${1:-/tmp/shears-minilm-bench}" && cd "${1:-/tmp/shears-minilm-bench}" && pwd)"
steps="${STEPS:-60}"
round_steps="${ROUND_STEPS:-20}"
eval_pairs="${EVAL_PAIRS:-1000}"
extra="${EXTRA:-0}"
long_steps="${LONG_STEPS:-400}"
only="${ONLY:-.}"
results="${RESULTS:-$here/results}"
mkdir -p "$results" "$work/data" "$work/runs"
cd "$root"

# --- build -------------------------------------------------------------------------------------------------
dotnet build client/Shears.Client -c Release -nologo -v quiet
dotnet build bench/MiniLm/Shears.MiniLmBench.csproj -c Release -nologo -v quiet
shears="$root/client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
bench="$here/bin/Release/net10.0/linux-x64/minilm-bench"

# --- the model -------------------------------------------------------------------------------------------
"$shears" minilm "$work/dense"
model="$work/dense/model.onnx"

# --- text: evaluation, calibration and distillation kept apart ------------------------------------------
sample="$root/data/bible-ot-sample-2000.tsv"
pairs="$root/data/bible-ot-pairs.tsv"
if [[ ! -f "$pairs" ]]; then
  scripts/make-bible-pairs.sh "$work/bible"      # writes into WORK_DIR, leaves data/ alone
  pairs="$work/bible/bible-ot-pairs.tsv"
fi
data="$work/data"
# Evaluation: pairs of the committed held-out sample (every second one when EVAL_PAIRS=1000), no header:
# the run embeds the last column (WEB) for fidelity and neighbours, the one before (KJV) as retrieval queries.
awk -F'\t' -v n="$eval_pairs" 'NR > 1 && (n >= 2000 || (NR - 2) % 2 == 1)' "$sample" > "$data/eval.tsv"
{ echo $'ref\tkjv\tweb'; cat "$data/eval.tsv"; } > "$data/eval-pairs.tsv"   # the same pairs for minilm-bench
# Calibration and distillation: verses of bible-ot-pairs.tsv whose refs are NOT in the 2,000-pair sample, in a fixed
# spread-out order (position i*7919 mod n), so that neighbouring lines come from different books. The first 128
# refs calibrate Wanda/SparseGPT (KJV and WEB alternately, one sentence per ref); the next refs give both of their
# verses to distillation, as many as one pass of the largest step budget takes.
awk -F'\t' 'FNR == NR { if (FNR > 1) held[$1] = 1; next }
            FNR > 1 && !($1 in held) { rows[n++] = $0 }
            END { for (i = 0; i < n; i++) print rows[(i * 7919) % n] }' "$sample" "$pairs" > "$data/pool.tsv"
distill_refs=$(( ( (steps > 3 * round_steps ? steps : 3 * round_steps) * 16 + 1) / 2 ))
awk -F'\t' 'NR <= 128 { print (NR % 2 ? $2 : $3) }' "$data/pool.tsv" > "$data/calibration.txt"
awk -F'\t' -v k="$distill_refs" 'NR > 128 && NR <= 128 + k { print $2; print $3 }' "$data/pool.tsv" > "$data/distill.txt"
long_refs=$(( (long_steps * 16 + 1) / 2 ))
awk -F'\t' -v k="$long_refs" 'NR > 128 && NR <= 128 + k { print $2; print $3 }' "$data/pool.tsv" > "$data/distill-long.txt"
# Check that no ref is shared between the three sets.
cut -f1 "$sample" | tail -n +2 | sort > "$data/refs-eval"
head -128 "$data/pool.tsv" | cut -f1 | sort > "$data/refs-calibration"
sed -n "129,$((128 + (long_refs > distill_refs ? long_refs : distill_refs)))p" "$data/pool.tsv" | cut -f1 | sort > "$data/refs-distill"
if [[ -n "$(comm -12 "$data/refs-eval" "$data/refs-calibration")$(comm -12 "$data/refs-eval" "$data/refs-distill")$(comm -12 "$data/refs-calibration" "$data/refs-distill")" ]]; then
  echo "run.sh: evaluation, calibration and distillation share a ref" >&2; exit 1
fi
echo "evaluation: $(wc -l < "$data/eval.tsv") pairs (WEB verses; KJV as queries) of $sample"
echo "calibration: $(wc -l < "$data/calibration.txt") verses; distillation: $(wc -l < "$data/distill.txt") verses ($distill_refs refs); from $pairs, none of the sample's refs"

# --- the machine ------------------------------------------------------------------------------------------
{
  echo "--- bench/MiniLm/run.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD) (working tree may hold others' uncommitted edits)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  echo "dotnet: $(dotnet --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "STEPS=$steps ROUND_STEPS=$round_steps EVAL_PAIRS=$eval_pairs EXTRA=$extra LONG_STEPS=$long_steps ONLY=$only"
} >> "$results/machine.txt"
cat "$results/machine.txt"

# --- the runs -----------------------------------------------------------------------------------------------
eval_args=(--eval "$data/eval.tsv")
cal_args=(--calibration "$data/calibration.txt" --calibration-samples 128)
ft_args=(--finetune-data "$data/distill.txt" --lr 2e-5 --batch 16)
manifest="$work/runs.tsv"
: > "$manifest"
: > "$results/commands.txt"
rm -f "$results/failed.txt"

# row NAME LABEL RECOVERY ARGS...: one `shears run`, timed; its report and log go to results/.
row() {
  local name="$1" label="$2" recovery="$3"; shift 3
  local out="$work/runs/$name"
  printf '%s\t%s\t%s\n' "$label" "$recovery" "$out" >> "$manifest"
  echo "shears run --model \$WORK/dense/model.onnx --out \$WORK/runs/$name $* --force" \
    | sed "s#$work#\$WORK#g; s#$root/##g" >> "$results/commands.txt"
  [[ "$name" =~ $only ]] || return 0
  echo "=== $name: $label, $recovery"
  local start end
  start=$(date +%s.%N)
  "$shears" run --model "$model" --out "$out" "$@" --force > "$results/$name.log" 2>&1 \
    || { echo "run.sh: $name failed (see results/$name.log)" | tee -a "$results/failed.txt" >&2; tail -5 "$results/$name.log" >&2; return 0; }
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$out/wall-seconds"
  grep -E '^round ' "$results/$name.log" || true
  echo "wall $(cat "$out/wall-seconds") s"
  cp "$out/shears-report.json" "$results/$name.report.json"
}

row dense            "dense"                  "-"                                      --sparsity 0 "${eval_args[@]}"
row magnitude-global "50% magnitude, global"  "none"                                   --sparsity 0.5 --method magnitude --scope global "${eval_args[@]}"
row magnitude-layer  "50% magnitude, layer"   "none"                                   --sparsity 0.5 --method magnitude --scope layer "${eval_args[@]}"
row wanda            "50% Wanda"              "none"                                   --sparsity 0.5 --method wanda --scope layer "${cal_args[@]}" "${eval_args[@]}"
row sparsegpt        "50% SparseGPT"          "none"                                   --sparsity 0.5 --method sparsegpt --scope layer "${cal_args[@]}" "${eval_args[@]}"
row magnitude-2of4   "2:4 magnitude"          "none"                                   --sparsity 0.5 --pattern 2:4 --method magnitude --scope layer "${eval_args[@]}"
row wanda-2of4       "2:4 Wanda"              "none"                                   --sparsity 0.5 --pattern 2:4 --method wanda --scope layer "${cal_args[@]}" "${eval_args[@]}"
row sparsegpt-2of4   "2:4 SparseGPT"          "none"                                   --sparsity 0.5 --pattern 2:4 --method sparsegpt --scope layer "${cal_args[@]}" "${eval_args[@]}"
cubic="3 cubic rounds, ${round_steps} steps after each"
oneshot="one-shot, then ${steps} steps"
row magnitude-global-ft "50% magnitude, global" "$cubic"   --sparsity 0.5 --method magnitude --scope global --schedule cubic --rounds 3 --finetune-steps "$round_steps" "${ft_args[@]}" "${eval_args[@]}"
row magnitude-layer-ft  "50% magnitude, layer"  "$cubic"   --sparsity 0.5 --method magnitude --scope layer --schedule cubic --rounds 3 --finetune-steps "$round_steps" "${ft_args[@]}" "${eval_args[@]}"
row wanda-ft            "50% Wanda"             "$oneshot" --sparsity 0.5 --method wanda --scope layer "${cal_args[@]}" --finetune-steps "$steps" "${ft_args[@]}" "${eval_args[@]}"
row sparsegpt-ft        "50% SparseGPT"         "$oneshot" --sparsity 0.5 --method sparsegpt --scope layer "${cal_args[@]}" --finetune-steps "$steps" "${ft_args[@]}" "${eval_args[@]}"
row magnitude-2of4-ft   "2:4 magnitude"         "$oneshot" --sparsity 0.5 --pattern 2:4 --method magnitude --scope layer --finetune-steps "$steps" "${ft_args[@]}" "${eval_args[@]}"
row wanda-2of4-ft       "2:4 Wanda"             "$oneshot" --sparsity 0.5 --pattern 2:4 --method wanda --scope layer "${cal_args[@]}" --finetune-steps "$steps" "${ft_args[@]}" "${eval_args[@]}"
row sparsegpt-2of4-ft   "2:4 SparseGPT"         "$oneshot" --sparsity 0.5 --pattern 2:4 --method sparsegpt --scope layer "${cal_args[@]}" --finetune-steps "$steps" "${ft_args[@]}" "${eval_args[@]}"
row w8a8             "W8A8 (dynamic int8)"    "none"                                   --sparsity 0 --quantize W8A8 "${eval_args[@]}"
row w4a16            "W4A16 (MatMulNBits g128)" "none"                                 --sparsity 0 --quantize W4A16 "${eval_args[@]}"
row sparsegpt-w8a8   "50% SparseGPT + W8A8"   "none"                                   --sparsity 0.5 --method sparsegpt --scope layer "${cal_args[@]}" --quantize W8A8 "${eval_args[@]}"
row sparsegpt-w4a16  "50% SparseGPT + W4A16"  "none"                                   --sparsity 0.5 --method sparsegpt --scope layer "${cal_args[@]}" --quantize W4A16 "${eval_args[@]}"
if [[ "$extra" == 1 ]]; then
  long="one-shot, then ${long_steps} steps"
  long_args=(--finetune-data "$data/distill-long.txt" --lr 2e-5 --batch 16)
  row sparsegpt-ft-long "50% SparseGPT"        "$long"    --sparsity 0.5 --method sparsegpt --scope layer "${cal_args[@]}" --finetune-steps "$long_steps" "${long_args[@]}" "${eval_args[@]}"
  row wanda-ft-long     "50% Wanda"            "$long"    --sparsity 0.5 --method wanda --scope layer "${cal_args[@]}" --finetune-steps "$long_steps" "${long_args[@]}" "${eval_args[@]}"
fi

# --- ONNX Runtime measures of every written model, checked against the runs' reports --------------------------
present="$work/runs-present.tsv"
while IFS=$'\t' read -r label recovery out; do
  [[ -f "$out/model.onnx" ]] && printf '%s\t%s\t%s\n' "$label" "$recovery" "$out"
done < "$manifest" > "$present"
"$bench" table --dense "$model" --pairs "$data/eval-pairs.tsv" --runs "$present" --max-length 128 \
  --json "$results/table.json" --markdown "$results/table.md" | sed "s#$work#\$WORK#g" | tee "$results/table.txt"
# The library's one-call entry point (MiniLmQuality.Measure, 256-token limit) on one model, for comparison.
check="$work/runs/magnitude-global-ft"
[[ -f "$check/model.onnx" ]] || check="$(tail -1 "$present" | cut -f3)"
"$bench" measure --dense "$model" --pruned "$check/model.onnx" --pairs "$data/eval-pairs.tsv" | sed "s#$work#\$WORK#g" | tee "$results/measure-check.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results/machine.txt"
if [[ "${LATENCY:-0}" == 1 ]]; then
  models="dense=$model"
  for name in sparsegpt w8a8 w4a16 sparsegpt-w8a8 sparsegpt-w4a16; do
    [[ -f "$work/runs/$name/model.onnx" ]] && models+=",$name=$work/runs/$name/model.onnx"
  done
  ls -l "$model" "$work"/runs/*/model.onnx | awk '{ print $5, $9 }' | sed "s#$work#\$WORK#g" > "$results/model-bytes.txt"
  "$bench" latency --models "$models" --sentences "$data/eval.tsv" --threads 2 --repeat 9 | sed "s#$work#\$WORK#g" | tee "$results/latency.txt"
fi
