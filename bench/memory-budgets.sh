#!/usr/bin/env bash
# Memory budgets across three silo processes on this machine (localhost clustering, no service): a bf16 LLaMA-layout
# checkpoint whose fp32 weights are larger than any one silo's --memory-budget is evaluated, then fine-tuned, and each
# silo's resident memory is sampled every 0.2 s; the peaks are recorded against the silo's budget, the shards it was
# given and the model's size. A fine-tuning run the evaluation budgets cannot hold is refused before it starts, and runs
# again on silos with budgets that hold it. Last, a model of SPLIT_LAYERS (2) such layers is fine-tuned on silos whose
# budget holds no layer's fine-tuning stage whole (0.8 of it): each layer runs as two stages, attention and MLP; before
# it, the same run on silos with room for three whole layers each.
# Usage: bench/memory-budgets.sh WORKDIR     Environment: HIDDEN (2048), LAYERS (6), INTERMEDIATE (5504), VOCAB (8000),
#   EVAL_BUDGET (default: 0.6 × the model's fp32 bytes per silo), FT_BUDGET (default: 1.9 × the fp32 bytes per silo),
#   SPLIT_LAYERS (2), SPLIT_BUDGET (default: 0.8 × a layer's fine-tuning stage), ONLY=split (the last part alone),
#   RESULTS (default bench/results/memory-budgets-DATE).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mkdir -p "${1:?WORKDIR}" && cd "$1" && pwd)
results="${RESULTS:-$root/bench/results/memory-budgets-$(date -u +%Y-%m-%d-%H%M)}"
mkdir -p "$results"
for project in client/Shears.Client silo/Shears.Silo bench/Shears.Bench; do dotnet build -c Release "$project" -nologo -v quiet >/dev/null; done
silo="$root/silo/Shears.Silo/bin/Release/net10.0/linux-x64/shears-silo"
shears="$root/client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
[ -f "$work/model/config.json" ] || dotnet "$root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll" checkpoint "$work/model" \
  --hidden "${HIDDEN:-2048}" --layers "${LAYERS:-6}" --intermediate "${INTERMEDIATE:-5504}" --vocab "${VOCAB:-8000}" > /dev/null
[ -f "$work/model-split/config.json" ] || dotnet "$root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll" checkpoint "$work/model-split" \
  --hidden "${HIDDEN:-2048}" --layers "${SPLIT_LAYERS:-2}" --intermediate "${INTERMEDIATE:-5504}" --vocab "${VOCAB:-8000}" > /dev/null
python3 - "$work" "${VOCAB:-8000}" <<'PY'
import json, random, sys
random.seed(5)
json.dump([[random.randrange(int(sys.argv[2])) for _ in range(128)] for _ in range(8)], open(sys.argv[1] + "/tokens.json", "w"))
PY
bf16=$(du -cb "$work"/model/*.safetensors | tail -1 | cut -f1)
fp32=$((bf16 * 2))
eval_budget=${EVAL_BUDGET:-$((fp32 * 6 / 10))}
ft_budget=${FT_BUDGET:-$((fp32 * 19 / 10))}
# A layer's fine-tuning stage, as the coordinator estimates it: per weight of its seven matrices 2 bytes (bf16) + 1 bit
# (mask) + 4 (fp32) + 12 (gradient, AdamW's two moments); the norms are negligible.
h=${HIDDEN:-2048}
layer_weights=$((4 * h * h + 3 * h * ${INTERMEDIATE:-5504}))
split_budget=${SPLIT_BUDGET:-$((layer_weights * 145 / 8 * 8 / 10))}
{
  echo "--- bench/memory-budgets.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nproc $(nproc), memory $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  echo "model: hidden ${HIDDEN:-2048}, ${LAYERS:-6} layers, intermediate ${INTERMEDIATE:-5504}, vocab ${VOCAB:-8000}; bf16 files $bf16 bytes, fp32 $fp32 bytes"
  echo "budgets per silo: evaluation $eval_budget bytes ($((eval_budget * 100 / fp32))% of fp32), fine-tuning $ft_budget bytes"
  echo "split: ${SPLIT_LAYERS:-2} layers, budget $split_budget bytes per silo (a layer's fine-tuning stage: ~$((layer_weights * 145 / 8)) bytes)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$results/machine.txt"

pids=()
state=""
stop_silos() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); [ -n "$state" ] && rm -rf "$state"; }
trap stop_silos EXIT
start_silos() {
  state=$(mktemp -d)
  for i in 0 1 2; do
    args=(--silo-port $((11411 + i)) --gateway-port $((30400 + i)) --http-port $((8481 + i)) --state-dir "$state" --memory-budget "$1")
    [ "$i" -gt 0 ] && args+=(--primary 127.0.0.1:11411)
    "$silo" "${args[@]}" > "$work/silo-$i.log" 2>&1 &
    pids+=($!)
    sleep 4
  done
  for _ in $(seq 60); do curl -sf http://127.0.0.1:8483/healthz >/dev/null && break; sleep 1; done
  sleep 5 # the silos' metadata (their budgets) reaches the others
}
# Runs `shears run ARGS` against the silos, sampling each silo's RssAnon + RssFile; prints the peaks and the placement.
measure() {
  local name=$1; shift
  echo "=== $name: shears run --model MODEL $*" | sed "s#$work#\$WORK#g" | tee -a "$results/runs.txt"
  ( while sleep 0.2; do for i in 0 1 2; do
      awk -v s="$i" '/RssAnon|RssFile/ {v[$1]=$2} END {print s, v["RssAnon:"] + v["RssFile:"]}' /proc/${pids[$i]}/status 2>/dev/null
    done; done > "$work/rss-$name.txt" ) &
  local sampler=$!
  set +e
  "$shears" run --model "${model:-$work/model}" --out "$work/out-$name" "$@" --force --cluster 127.0.0.1:30400,127.0.0.1:30401,127.0.0.1:30402 > "$results/$name.log" 2>&1
  local code=$?
  set -e
  kill "$sampler" 2>/dev/null || true
  echo "exit $code; $(grep -E '^round|^shears:' "$results/$name.log" | tail -n 2 | tr '\n' ' ')" | sed "s#$work#\$WORK#g" | tee -a "$results/runs.txt"
  awk '{ if ($2 > p[$1]) p[$1] = $2 } END { for (s in p) printf "silo %s: peak resident %d kB\n", s, p[s] }' "$work/rss-$name.txt" | sort | tee -a "$results/runs.txt"
  if [ -f "$work/out-$name/shears-report.json" ]; then
    cp "$work/out-$name/shears-report.json" "$results/$name.report.json"
    python3 - "$work/out-$name/shears-report.json" <<'PY' | tee -a "$results/runs.txt"
import collections, json, sys
r = json.load(open(sys.argv[1]))
count = collections.Counter(s["silo"] for s in r["shards"])
print("shards per silo:", ", ".join(f"{k}: {v}" for k, v in sorted(count.items())), "| seconds", round(r["seconds"], 1))
PY
  fi
}

if [ "${ONLY:-}" != split ]; then
  start_silos "$eval_budget"
  for i in 0 1 2; do echo "silo $i: $(grep -o 'Silo address is [^,]*' "$work/silo-$i.log" | head -1)"; done | tee -a "$results/runs.txt"
  measure eval --sparsity 0.5 --scope layer --eval "$work/tokens.json"
  measure finetune-refused --sparsity 0.5 --scope layer --eval "$work/tokens.json" --finetune-steps 2 --finetune-data "$work/tokens.json" --batch 2
  stop_silos
  start_silos "$ft_budget"
  measure finetune --sparsity 0.5 --scope layer --eval "$work/tokens.json" --finetune-steps 2 --finetune-data "$work/tokens.json" --batch 2
  stop_silos
fi
# The same run with room for whole layers, for the peaks and figures to compare with.
start_silos "$((layer_weights * 145 / 8 * 3))"
model="$work/model-split" measure finetune-whole --sparsity 0.5 --scope layer --eval "$work/tokens.json" --finetune-steps 2 --finetune-data "$work/tokens.json" --batch 2
stop_silos
start_silos "$split_budget"
model="$work/model-split" measure finetune-split --sparsity 0.5 --scope layer --eval "$work/tokens.json" --finetune-steps 2 --finetune-data "$work/tokens.json" --batch 2
grep -h "as two stages" "$work"/silo-*.log | head -1 | sed 's/^.*Run /Run /' | tee -a "$results/runs.txt"
python3 - "$work/out-finetune-split/shears-report.json" <<'PY' | tee -a "$results/runs.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print("shards:", len(r["shards"]))
PY
stop_silos
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results/machine.txt"
