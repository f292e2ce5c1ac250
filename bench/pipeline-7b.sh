#!/usr/bin/env bash
# Runs with LLaMA-7B's layer widths (hidden 4096, intermediate 11008, 32 heads, vocabulary 32,000) on the embedded
# silo: evaluation of 8 layers, and recovery fine-tuning, SparseGPT and removal with quantization of 2 layers. Prints each run's report figures:
# the longest grain call per method (longestCallSeconds), phases, rounds, and the process's peak memory.
# Usage: bench/pipeline-7b.sh WORKDIR [eval|eval2|finetune|finetune-hidden|sparsegpt|remove-quantize]...   (the checkpoints are written once into WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?WORKDIR}; shift
steps=${*:-eval finetune sparsegpt}
for project in client/Shears.Client bench/Shears.Bench; do dotnet build -c Release "$project" >/dev/null; done
bench="dotnet bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll"
shears="client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
for layers in 8 2; do
  # Only the evaluation of 8 layers needs the 8-layer checkpoint (3.8 GB).
  [ $layers = 8 ] && [[ " $steps " != *" eval "* ]] && continue
  [ -f "$work/l$layers/config.json" ] || $bench checkpoint "$work/l$layers" --hidden 4096 --layers $layers --intermediate 11008 --vocab 32000
done
# Token ids drawn uniformly from the vocabulary with a fixed seed: two sequences of 64 for evaluation, four for training and calibration.
python3 - "$work" <<'PY'
import json, random, sys
r = random.Random(1)
for name, n in (("eval", 2), ("train", 4), ("calib", 4)):
    json.dump([[r.randrange(32000) for _ in range(64)] for _ in range(n)], open(f"{sys.argv[1]}/{name}.json", "w"))
PY
run() {
  local name=$1; shift
  echo "== $name: shears run $*"
  /usr/bin/time -f "peak RSS %M KiB, %e s wall" "$shears" run "$@" --force 2>&1 | tail -n 4
  python3 - "$out/shears-report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("longestCallSeconds", json.dumps(r.get("longestCallSeconds")))
print("phaseSeconds", json.dumps(r.get("phaseSeconds")), "seconds", r["seconds"])
print("baseline", json.dumps(r.get("baseline")))
for x in r["rounds"]: print("round", x["round"], x["achievedSparsity"], x.get("eval"), x.get("finetuneLoss"), x["seconds"])
PY
}
for step in $steps; do
  out="$work/out-$step"
  case $step in
    eval) run "eval, 8 layers" --model "$work/l8" --out "$out" --sparsity 0.5 --scope global --eval "$work/eval.json" ;;
    eval2) run "eval, 2 layers" --model "$work/l2" --out "$out" --sparsity 0.5 --scope global --eval "$work/eval.json" ;;
    finetune) run "fine-tuning, 2 layers" --model "$work/l2" --out "$out" --sparsity 0.5 --finetune-steps 2 --finetune-data "$work/train.json" --batch 2 ;;
    finetune-hidden) run "layer-wise distillation, 2 layers" --model "$work/l2" --out "$out" --sparsity 0.5 --finetune-steps 2 --finetune-data "$work/train.json" --batch 2 --distill hidden ;;
    remove-quantize) run "neurons removed and W4A16, 2 layers" --model "$work/l2" --out "$out" --sparsity 0.25 --pattern neurons --scope layer --remove --quantize W4A16 --eval "$work/eval.json" ;;
    sparsegpt) run "SparseGPT, 2 layers" --model "$work/l2" --out "$out" --sparsity 0.5 --method sparsegpt --scope layer --calibration "$work/calib.json" ;;
  esac
done
