#!/usr/bin/env bash
# Evaluation of the 8-layer checkpoint of LLaMA-7B's widths (written by bench/pipeline-7b.sh) through three silo
# processes on this machine (localhost clustering, no service): the client submits the run with --cluster, and each
# silo's peak resident memory (VmHWM) is read before it stops. The stages spread over the silos, so each silo holds
# about a third of the model.
# Usage: bench/pipeline-7b-silos.sh WORKDIR
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?WORKDIR}
for project in client/Shears.Client silo/Shears.Silo; do dotnet build -c Release "$project" >/dev/null; done
silo="silo/Shears.Silo/bin/Release/net10.0/linux-x64/shears-silo"
shears="client/Shears.Client/bin/Release/net10.0/linux-x64/shears"
state=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$state"' EXIT
for i in 0 1 2; do
  args=(--silo-port $((11311 + i)) --gateway-port $((30300 + i)) --http-port $((8381 + i)) --state-dir "$state")
  [ "$i" -gt 0 ] && args+=(--primary 127.0.0.1:11311)
  "$silo" "${args[@]}" > "$work/silo-$i.log" 2>&1 &
  pids+=($!)
  sleep 4
done
for _ in $(seq 60); do curl -sf http://127.0.0.1:8383/healthz >/dev/null && break; sleep 1; done
out="$work/out-eval-silos"
# Each silo's resident memory sampled every 0.2 s: the peaks of its anonymous and file-backed parts apart (VmHWM is their sum's).
( while sleep 0.2; do for i in 0 1 2; do
    awk -v s="$i" '/RssAnon|RssFile/ {v[$1]=$2} END {print s, v["RssAnon:"], v["RssFile:"]}' /proc/${pids[$i]}/status 2>/dev/null
  done; done > "$work/rss-samples.txt" ) &
sampler=$!
echo "== eval, 8 layers, 3 silo processes: shears run --model $work/l8 --sparsity 0.5 --scope global --eval $work/eval.json"
/usr/bin/time -f "client: peak RSS %M KiB, %e s wall" "$shears" run --model "$work/l8" --out "$out" --sparsity 0.5 --scope global \
  --eval "$work/eval.json" --force --cluster 127.0.0.1:30300,127.0.0.1:30301,127.0.0.1:30302 2>&1 | tail -n 4
kill "$sampler" 2>/dev/null || true
awk '{ if ($2 > a[$1]) a[$1] = $2; if ($3 > f[$1]) f[$1] = $3; if ($2 + $3 > t[$1]) t[$1] = $2 + $3 }
     END { for (s in a) printf "silo %s: peak RssAnon %d kB, peak RssFile %d kB, peak sum %d kB (sampled)\n", s, a[s], f[s], t[s] }' "$work/rss-samples.txt" | sort
for i in 0 1 2; do
  echo "silo $i: $(grep -E 'VmHWM|RssAnon|RssFile' /proc/${pids[$i]}/status | tr -s ' \t\n' ' ')"
  { curl -s http://127.0.0.1:$((8381 + i))/metrics | grep '^shears_grain_call_longest_seconds' || true; } | sort -t' ' -k2 -g | tail -n 3
done
python3 - "$out/shears-report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("coordinator's silo longestCallSeconds", json.dumps(r.get("longestCallSeconds")))
print("phaseSeconds", json.dumps(r.get("phaseSeconds")), "seconds", r["seconds"])
print("baseline", json.dumps(r.get("baseline")))
for x in r["rounds"]: print("round", x["round"], x["achievedSparsity"], x.get("eval"), x["seconds"])
print("silos of the shards:", sorted({s["silo"] for s in r["shards"]}), len(r["shards"]), "shards")
PY
