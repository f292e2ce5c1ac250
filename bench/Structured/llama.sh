#!/usr/bin/env bash
# bench/Structured.md, LLaMA part: a LLaMA-family checkpoint with 25% / 50% of its MLP neurons, 25% of its heads and
# one of its layers removed (--remove), and the same fractions as unstructured masks; for each: file bytes, the
# run's perplexity and, in one process (bench/Shears.Bench `forward`), the perplexity computed from the written files
# and the tokens/s of a TorchSharp forward pass against the dense model, alternating.
# Usage: bench/Structured/llama.sh MODEL_DIR EVAL_FILE CALIBRATION_FILE [WORK_DIR]
#   MODEL_DIR  a LLaMA-family checkpoint (bench/TinyLm's trained model, or `shears-bench checkpoint DIR …`)
#   EVAL_FILE, CALIBRATION_FILE  token-id arrays (.json) or text for the checkpoint's tokenizer
# Environment: RESULTS (default bench/Structured/results/llama-DATE), LAYERS_SPARSITY (default 0.25: one of four layers),
# HEADS_SPARSITY (default 0.25; with grouped-query attention each key/value group loses round_half_to_even(s × its
# query heads), so a model with 2 query heads per group needs 0.5 to lose any), FINETUNE (a token file: each removal is
# run again with FT_STEPS (default 200) steps of recovery fine-tuning on it, lr FT_LR (default 1e-4), batch 8),
# SEQ_LEN (default 128), REPEAT (default 9).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
model="$(cd "$1" && pwd)"; eval_file="$(realpath "$2")"; calibration="$(realpath "$3")"
work="$(mkdir -p "${4:-/tmp/shears-structured-llama}" && cd "${4:-/tmp/shears-structured-llama}" && pwd)"
results="${RESULTS:-$here/results/llama-$(date -u +%Y-%m-%d-%H%M)}"
layers_sparsity="${LAYERS_SPARSITY:-0.25}"
heads_sparsity="${HEADS_SPARSITY:-0.25}"
mkdir -p "$results" "$work/runs"
cd "$root"
dotnet build client/Shears.Client -c Release -nologo -v quiet
dotnet build bench/Shears.Bench/Shears.Bench.csproj -c Release -nologo -v quiet
shears="$root/client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
bench() { dotnet "$root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll" "$@"; }
{
  echo "--- bench/Structured/llama.sh $*"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc), memory $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  echo "model: $model ($(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print({k: c.get(k) for k in ['hidden_size','intermediate_size','num_hidden_layers','num_attention_heads','num_key_value_heads','vocab_size']})" "$model/config.json"))"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$results/machine.txt"
cat "$results/machine.txt"

: > "$results/commands.txt"
row() {
  local name="$1"; shift
  echo "shears run --model MODEL --out \$WORK/runs/$name $* --force" | sed "s#$eval_file#EVAL#g; s#$calibration#CALIBRATION#g; s#$root/##g" >> "$results/commands.txt"
  echo "=== $name"
  "$shears" run --model "$model" --out "$work/runs/$name" "$@" --eval "$eval_file" --eval-seq-len "${SEQ_LEN:-128}" --force > "$results/$name.log" 2>&1 \
    || { echo "llama.sh: $name failed (results/$name.log)" >&2; tail -5 "$results/$name.log" >&2; return 0; }
  grep -E '^round ' "$results/$name.log" || true
  cp "$work/runs/$name/shears-report.json" "$results/$name.report.json"
}
row neurons-25  --sparsity 0.25 --pattern neurons --scope layer --remove
row neurons-50  --sparsity 0.5 --pattern neurons --scope layer --remove
row heads       --sparsity "$heads_sparsity" --pattern heads --scope layer --remove
row layers      --sparsity "$layers_sparsity" --pattern layers --calibration "$calibration" --remove
if [[ -n "${FINETUNE:-}" ]]; then
  ft=(--finetune-steps "${FT_STEPS:-200}" --finetune-data "$(realpath "$FINETUNE")" --lr "${FT_LR:-1e-4}" --batch 8)
  row neurons-25-ft --sparsity 0.25 --pattern neurons --scope layer --remove "${ft[@]}"
  row neurons-50-ft --sparsity 0.5 --pattern neurons --scope layer --remove "${ft[@]}"
  row heads-ft      --sparsity "$heads_sparsity" --pattern heads --scope layer --remove "${ft[@]}"
  row layers-ft     --sparsity "$layers_sparsity" --pattern layers --calibration "$calibration" --remove "${ft[@]}"
fi
row masked-25   --sparsity 0.25 --scope layer
row masked-50   --sparsity 0.5 --scope layer

models="dense=$model"
for name in neurons-25 neurons-50 heads layers neurons-25-ft neurons-50-ft heads-ft layers-ft masked-25 masked-50; do
  [[ -f "$work/runs/$name/config.json" ]] && models+=",$name=$work/runs/$name"
done
bench forward --models "$models" --eval "$eval_file" --seq-len "${SEQ_LEN:-128}" --threads 2 --repeat "${REPEAT:-9}" \
  | sed "s#$work#\$WORK#g; s#$model#MODEL#g" | tee "$results/forward.txt"
for r in "$results"/*.report.json; do
  python3 -c "
import json, sys
r = json.load(open(sys.argv[1])); e = r['rounds'][-1].get('eval') or {}
print(sys.argv[1].rsplit('/', 1)[1].replace('.report.json', ''), 'perplexity in the run', round(e.get('value', float('nan')), 4),
      'config', (r.get('removal') or {}).get('config'), 'outputBytes', r['size']['outputBytes'])" "$r"
done | tee "$results/reports.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results/machine.txt"
