#!/usr/bin/env bash
# The LLaMA-family rows of bench/Compression.md: bench/TinyLm's trained model pruned and quantized by the shears CLI
# (embedded silo, one run per row, held-out Moby-Dick bytes for --eval, the calibration split for Wanda, SparseGPT
# and GPTQ). Per row: bytes on disk of the written checkpoint, ratio to dense, held-out perplexity per byte (the run's
# last evaluation, measured on the weights as written: dequantized for quantized rows), and for pruned rows the size
# the checkpoint would take with its prunable tensors in Shears' bitmask encoding (no loader reads one).
# The model's widths (hidden 192, intermediate 512) are not multiples of 128, so the W4A16 rows use groups of 64.
# Needs the trained model: bench/TinyLm/run.sh (or `tinylm prepare` then `tinylm train`) writes bench/TinyLm/data/model.
# Usage: bench/Compression/tinylm.sh WORK_DIR       Writes bench/Compression/results/tinylm/ (override with RESULTS).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mkdir -p "${1:?WORK_DIR}" && cd "$1" && pwd)"
results="${RESULTS:-$here/results/tinylm}"
data="$root/bench/TinyLm/data"
model="$data/model"
[ -f "$model/config.json" ] || { echo "tinylm.sh: no trained model in $model (run bench/TinyLm/run.sh first)" >&2; exit 1; }
mkdir -p "$results"
cd "$root"
# The CLI, machine.txt and `row` (bench/TinyLm/rows.sh).
source "$root/bench/TinyLm/rows.sh"

calib=(--calibration "$calibration" --calibration-samples 128)
row dense --sparsity 0
row magnitude-50 --sparsity 0.5 --scope layer --method magnitude
row wanda-50 --sparsity 0.5 --scope layer --method wanda "${calib[@]}"
row sparsegpt-50 --sparsity 0.5 --scope layer --method sparsegpt "${calib[@]}"
row w4a16-rtn --sparsity 0 --quantize W4A16 --group-size 64
row w4a16-gptq --sparsity 0 --quantize W4A16 --group-size 64 --quant-method gptq "${calib[@]}"
row w8a16-rtn --sparsity 0 --quantize W8A16
row sparsegpt-50-w4a16-gptq --sparsity 0.5 --scope layer --method sparsegpt --quantize W4A16 --group-size 64 --quant-method gptq "${calib[@]}"
row magnitude-50-w4a16-rtn --sparsity 0.5 --scope layer --method magnitude --quantize W4A16 --group-size 64
row sparsegpt-2of4-w4a16-gptq --sparsity 0.5 --pattern 2:4 --scope layer --method sparsegpt --quantize W4A16 --group-size 64 --quant-method gptq "${calib[@]}"

python3 - "$results" <<'PY' | tee "$results/table.md"
import json, os, sys
results = sys.argv[1]
rows = [
    ("dense", "dense"),
    ("magnitude-50", "50% magnitude"),
    ("wanda-50", "50% Wanda"),
    ("sparsegpt-50", "50% SparseGPT"),
    ("w4a16-rtn", "W4A16 RTN (g64)"),
    ("w4a16-gptq", "W4A16 GPTQ (g64)"),
    ("w8a16-rtn", "W8A16 RTN (per channel)"),
    ("magnitude-50-w4a16-rtn", "50% magnitude + W4A16 RTN"),
    ("sparsegpt-50-w4a16-gptq", "50% SparseGPT + W4A16 GPTQ (joint)"),
    ("sparsegpt-2of4-w4a16-gptq", "2:4 SparseGPT + W4A16 GPTQ (joint)"),
]
reports = {n: json.load(open(os.path.join(results, n + ".report.json"))) for n, _ in rows}
dense = reports["dense"]
dense_bytes = dense["size"]["outputBytes"]
print("| model | bytes on disk | ratio | bitmask-encoded size (ratio) | sparsity | perplexity / byte | ratio to dense |")
print("|---|---|---|---|---|---|---|")
for name, label in rows:
    r = reports[name]
    size = r["size"]
    ppl = r["rounds"][-1]["eval"]["value"] if r["rounds"] else r["baseline"]["eval"]["value"]
    dense_ppl = dense["baseline"]["eval"]["value"]
    bitmask = "-"
    if r["sparsity"] > 0 and not r.get("quantization"):
        encoded = size["checkpointBytes"] - size["prunableBytes"] + size["prunableSparseBytes"]
        bitmask = f"{encoded:,} ({encoded / dense_bytes:.2f})"
    print(f"| {label} | {size['outputBytes']:,} | {size['outputBytes'] / dense_bytes:.2f} | {bitmask} | "
          f"{r['sparsity'] * 100:.2f} % | {ppl:.4f} | {ppl / dense_ppl:.3f} |")
q = {n: reports[n]["quantization"] for n, _ in rows if reports[n].get("quantization")}
print()
for n, v in q.items():
    print(f"- {n}: scheme {v.get('scheme')}, method {v.get('method')}, group {v.get('groupSize')}, joint {v.get('joint')}, "
          f"mean |Δw| {v.get('meanAbsError')}, max |Δw| {v.get('maxAbsError')}, quantized weights {v.get('quantizedWeights')}")
PY
