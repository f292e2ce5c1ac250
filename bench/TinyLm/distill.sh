#!/usr/bin/env bash
# Layer-wise distillation for a decoder: bench/TinyLm's trained model pruned with Wanda (`--scope layer`) at 50%, 60% and
# 70%, then recovered with STEPS steps of fine-tuning on the fine-tuning split, once with the next-token loss alone
# (`--distill output`) and once with every layer's hidden states matched to the dense model's as well (`--distill
# hidden`), the same batches, learning rate and cosine schedule; and the unrecovered row for reference. Held-out
# perplexity per byte from each run's report (the evaluation of the round, after fine-tuning).
# Needs the trained model: bench/TinyLm/run.sh (or `tinylm prepare` then `tinylm train`) writes bench/TinyLm/data/model.
# Usage: [STEPS=N] bench/TinyLm/distill.sh WORK_DIR       Writes bench/TinyLm/results/distill/ (override with RESULTS).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mkdir -p "${1:?WORK_DIR}" && cd "$1" && pwd)"
results="${RESULTS:-$here/results/distill}"
steps="${STEPS:-200}"
model="$here/data/model"
[ -f "$model/config.json" ] || { echo "distill.sh: no trained model in $model (run bench/TinyLm/run.sh first)" >&2; exit 1; }
mkdir -p "$results"
cd "$root"
# The CLI, machine.txt and `row` (bench/TinyLm/rows.sh).
source "$root/bench/TinyLm/rows.sh"

calib=(--calibration "$calibration" --calibration-samples 128)
train=(--finetune-steps "$steps" --finetune-data "$root/bench/TinyLm/data/tokens/finetune.json" --batch 8 --lr 1e-4
  --lr-schedule cosine --warmup-steps 10)
for s in 0.5 0.6 0.7; do
  p=${s#0.}0
  row "wanda-$p" --sparsity "$s" --scope layer --method wanda "${calib[@]}"
  row "wanda-$p-output" --sparsity "$s" --scope layer --method wanda "${calib[@]}" "${train[@]}" --distill output
  row "wanda-$p-hidden" --sparsity "$s" --scope layer --method wanda "${calib[@]}" "${train[@]}" --distill hidden
done

python3 - "$results" <<'PY' | tee "$results/table.md"
import json, os, sys
results = sys.argv[1]
def report(name):
    return json.load(open(os.path.join(results, name + ".report.json")))
first = report("wanda-50")
print(f"dense perplexity per byte: {first['baseline']['eval']['value']:.4f}")
print()
print("| sparsity | Wanda, no recovery | + fine-tuning (`--distill output`) | + layer-wise (`--distill hidden`) | hidden − output | fine-tune loss (output / hidden) |")
print("|---|---|---|---|---|---|")
for p in ("50", "60", "70"):
    n, o, h = (report(f"wanda-{p}{x}")["rounds"][-1] for x in ("", "-output", "-hidden"))
    po, ph = o["eval"]["value"], h["eval"]["value"]
    print(f"| {p}% | {n['eval']['value']:.4f} | {po:.4f} | {ph:.4f} | {ph - po:+.4f} | {o['finetuneLoss']:.4f} / {h['finetuneLoss']:.4f} |")
PY
