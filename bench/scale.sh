#!/usr/bin/env bash
# Exact global magnitude selection at LLaMA-2-70B's shapes by simulation (--synthetic-weights): three worker silo processes
# and a coordinator-only silo on this machine (localhost clustering), a checkpoint of the model's shapes as sparse files,
# and 50% global one-round runs cut into exactly 64, 256 and 1,024 shards (--shards). Per run: selection seconds and bytes exchanged
# (the report's), each process's peak resident memory (VmHWM; silos are restarted per run), and an independent count
# (Shears.Bench synthetic-count). Then LLaMA-2-7B's shapes, once by simulation and once from a real checkpoint holding the
# same weights (written with --data), on the same silos: the same selection, and the time of each.
# Usage: bench/scale.sh WORKDIR     Environment: SHARDS ("64 256 1024"), SPARSITY (0.5), SEED (7), SKIP_7B (unset),
#   RESULTS (default bench/results/scale-DATE). Needs ~9 GB of memory for the 70B masks and, for the 7B file, 14 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mkdir -p "${1:?WORKDIR}" && cd "$1" && pwd)
results="${RESULTS:-$root/bench/results/scale-$(date -u +%Y-%m-%d-%H%M)}"
mkdir -p "$results"
seed=${SEED:-7}
sparsity=${SPARSITY:-0.5}
for project in client/Shears.Client silo/Shears.Silo bench/Shears.Bench; do dotnet build -c Release "$project" -nologo -v quiet >/dev/null; done
silo="$root/silo/Shears.Silo/bin/Release/net10.0/linux-x64/shears-silo"
shears="$root/client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
bench() { dotnet "$root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll" "$@"; }
[ -f "$work/llama-2-70b/config.json" ] || bench synthetic-checkpoint "$work/llama-2-70b" --shape llama-2-70b --seed "$seed"
{
  echo "--- bench/scale.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD)$(git diff --quiet && echo "" || echo " + working tree")"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nproc $(nproc), memory $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  echo "processes: 3 worker silos + 1 coordinator-only silo, localhost clustering; sparsity $sparsity global magnitude, one round; seed $seed"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$results/machine.txt"

pids=()
state=""
stop_silos() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); [ -n "$state" ] && rm -rf "$state"; }
trap stop_silos EXIT
start_silos() {
  state=$(mktemp -d -p "$work")
  for i in 0 1 2 3; do
    role=worker; [ "$i" -eq 3 ] && role=coordinator
    args=(--silo-port $((11511 + i)) --gateway-port $((30500 + i)) --http-port $((8581 + i)) --state-dir "$state" --role "$role")
    [ "$i" -gt 0 ] && args+=(--primary 127.0.0.1:11511)
    "$silo" "${args[@]}" > "$work/silo-$i.log" 2>&1 &
    pids+=($!)
    sleep 3
  done
  for _ in $(seq 60); do curl -sf http://127.0.0.1:8584/healthz >/dev/null && break; sleep 1; done
  sleep 5
}
peaks() { for i in 0 1 2 3; do awk -v s="$i" '/VmHWM/ {printf "%s%s %.2f GiB", (s ? ", " : ""), (s == 3 ? "coordinator" : "silo " s), $2 / 1048576}' "/proc/${pids[$i]}/status"; done; echo; }
# run NAME MODEL [shears options…]
run() {
  local name=$1 model=$2; shift 2
  start_silos
  echo "=== $name: shears run --model $(basename "$model") --sparsity $sparsity --scope global $*" | tee -a "$results/runs.txt"
  local s e
  s=$(date +%s.%N)
  "$shears" run --model "$model" --out "$work/out-$name" --sparsity "$sparsity" --scope global "$@" --force \
    --cluster 127.0.0.1:30503 > "$results/$name.log" 2>&1
  e=$(date +%s.%N)
  echo "wall $(echo "$e - $s" | bc) s; peak resident: $(peaks)" | tee -a "$results/runs.txt"
  cp "$work/out-$name/shears-report.json" "$results/$name.report.json"
  python3 - "$results/$name.report.json" <<'PY' | tee -a "$results/runs.txt"
import json, sys
r = json.load(open(sys.argv[1]))
for x in r["rounds"]:
    print(f"round {x['round']}: {len(r['shards'])} shards, {r['prunableWeights']:,} weights, masked {x['maskedWeights']:,}, threshold {x.get('threshold')}, "
          f"selection {x['seconds']:.1f} s, {x['selectionBytes']:,} bytes exchanged; phases " + ", ".join(f"{k} {v:.1f} s" for k, v in r["phaseSeconds"].items()))
PY
  stop_silos
}
for shards in ${SHARDS:-64 256 1024}; do
  run "70b-$shards" "$work/llama-2-70b" --shards "$shards" --synthetic-weights "$seed"
  bench synthetic-count "$results/70b-$shards.report.json" --seed "$seed" | tee -a "$results/runs.txt"
done
if [ -z "${SKIP_7B:-}" ]; then
  [ -f "$work/llama-2-7b-shapes/config.json" ] || bench synthetic-checkpoint "$work/llama-2-7b-shapes" --shape llama-2-7b --seed "$seed"
  [ -f "$work/llama-2-7b/config.json" ] || bench synthetic-checkpoint "$work/llama-2-7b" --shape llama-2-7b --seed "$seed" --data
  cat "$work"/llama-2-7b/*.safetensors > /dev/null
  run "7b-synthetic" "$work/llama-2-7b-shapes" --shards 64 --synthetic-weights "$seed"
  run "7b-file" "$work/llama-2-7b" --shards 64
  python3 - "$results/7b-synthetic.report.json" "$results/7b-file.report.json" <<'PY' | tee -a "$results/runs.txt"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
same = [(t["name"], t["maskedWeights"]) for t in a["tensors"]] == [(t["name"], t["maskedWeights"]) for t in b["tensors"]]
print(f"7B simulation against the file: per-tensor masked counts {'equal' if same else 'DIFFER'}, thresholds {a['rounds'][0].get('threshold')} / {b['rounds'][0].get('threshold')}, "
      f"selection {a['rounds'][0]['seconds']:.1f} s / {b['rounds'][0]['seconds']:.1f} s, load {a['phaseSeconds']['load']:.1f} s / {b['phaseSeconds']['load']:.1f} s")
PY
fi
