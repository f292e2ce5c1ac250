#!/usr/bin/env bash
# OWL against uniform per-layer allocation on bench/TinyLm's trained model: magnitude, Wanda and SparseGPT at 50%, 60%
# and 70%, each once with `--scope layer` (every matrix pruned to the target) and once with `--scope owl` (each decoder
# layer's sparsity from its outlier ratio on the calibration activations, OWL, Yin et al. 2024; defaults
# --owl-threshold 5 and --owl-lambda 0.08; the total masked count the same). One `shears run` per row on the embedded
# silo, held-out Moby-Dick bytes for --eval, the calibration split (128 sequences) for every row that needs
# activations (Wanda and SparseGPT always, magnitude for OWL's outlier ratios). No fine-tuning.
# Needs the trained model: bench/TinyLm/run.sh (or `tinylm prepare` then `tinylm train`) writes bench/TinyLm/data/model.
# Usage: bench/TinyLm/owl.sh WORK_DIR       Writes bench/TinyLm/results/owl/ (override with RESULTS).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mkdir -p "${1:?WORK_DIR}" && cd "$1" && pwd)"
results="${RESULTS:-$here/results/owl}"
data="$here/data"
model="$data/model"
[ -f "$model/config.json" ] || { echo "owl.sh: no trained model in $model (run bench/TinyLm/run.sh first)" >&2; exit 1; }
mkdir -p "$results"
cd "$root"
# The CLI, machine.txt and `row` (bench/TinyLm/rows.sh).
source "$root/bench/TinyLm/rows.sh"

calib=(--calibration "$calibration" --calibration-samples 128)
for s in 0.5 0.6 0.7; do
  p=${s#0.}0
  row "magnitude-$p-uniform" --sparsity "$s" --scope layer --method magnitude
  row "magnitude-$p-owl" --sparsity "$s" --scope owl --method magnitude "${calib[@]}"
  for m in wanda sparsegpt; do
    row "$m-$p-uniform" --sparsity "$s" --scope layer --method "$m" "${calib[@]}"
    row "$m-$p-owl" --sparsity "$s" --scope owl --method "$m" "${calib[@]}"
  done
done

python3 - "$results" <<'PY' | tee "$results/table.md"
import json, os, sys
results = sys.argv[1]
def report(name):
    return json.load(open(os.path.join(results, name + ".report.json")))
first = report("magnitude-50-uniform")
print(f"dense perplexity per byte: {first['baseline']['eval']['value']:.4f}")
print()
print("| method | sparsity | uniform (`--scope layer`) | OWL (`--scope owl`) | OWL − uniform | masked (uniform / OWL) | OWL's layer sparsities |")
print("|---|---|---|---|---|---|---|")
for method, label in (("magnitude", "magnitude"), ("wanda", "Wanda"), ("sparsegpt", "SparseGPT")):
    for p in ("50", "60", "70"):
        u, o = report(f"{method}-{p}-uniform"), report(f"{method}-{p}-owl")
        pu, po = u["rounds"][-1]["eval"]["value"], o["rounds"][-1]["eval"]["value"]
        mu, mo = u["rounds"][-1]["maskedWeights"], o["rounds"][-1]["maskedWeights"]
        # Each decoder layer's sparsity, from the report's per-tensor counts.
        per = {}
        for t in o["tensors"]:
            parts = t["name"].split(".")
            if len(parts) > 2 and parts[1] == "layers":
                m, n = per.get(int(parts[2]), (0, 0))
                per[int(parts[2])] = (m + t["maskedWeights"], n + t["elements"])
        spread = ", ".join(f"{m / n:.3f}" for _, (m, n) in sorted(per.items())) if per else "-"
        print(f"| {label} | {p}% | {pu:.4f} | {po:.4f} | {po - pu:+.4f} | {mu:,} / {mo:,} | {spread} |")
PY
