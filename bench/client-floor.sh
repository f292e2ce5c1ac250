#!/usr/bin/env bash
# The fixed cost of a run, step by step, against Orleans' own floor: alternately, (a) a bare Orleans client that connects
# to a running shears-silo's gateway, makes one grain call and disconnects, (b) `shears run` of the 7 MB checkpoint against
# that silo, (b') the same run submitted to that silo's HTTP port (--cluster http://…, no Orleans client), (c) a bare
# Orleans silo started in its own process with one grain call, (d) `shears run` on its embedded silo, with the multi-core
# JIT profile an earlier embedded run recorded (the default) and (d') without one (SHEARS_JIT_PROFILE_DIR=off).
# All four are published ReadyToRun; shears prints its steps with SHEARS_TIMES=1 (seconds since its process started).
# Usage: bench/client-floor.sh [WORKDIR] [RUNS]   (default /tmp/shears-floor, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/shears-floor}
runs=${2:-5}
mkdir -p "$work"
dotnet publish -c Release client/Shears.Client -o "$work/shears-publish" -nologo -v quiet >/dev/null
dotnet publish -c Release silo/Shears.Silo -o "$work/silo-publish" -nologo -v quiet >/dev/null
dotnet publish -c Release bench/OrleansFloor -o "$work/floor-publish" -nologo -v quiet >/dev/null
dotnet build -c Release bench/Shears.Bench -nologo -v quiet >/dev/null
[ -f "$work/tiny/config.json" ] || dotnet bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll checkpoint "$work/tiny" --hidden 256 --layers 2 --intermediate 688 --vocab 4000 >/dev/null
port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
silo_port=$(port); gateway=$(port); http=$(port)
"$work/silo-publish/shears-silo" --silo-port "$silo_port" --gateway-port "$gateway" --http-port "$http" --http-bind 127.0.0.1 --http-runs > "$work/silo.log" 2>&1 &
silo_pid=$!
trap 'kill "$silo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
floor="$work/floor-publish/Shears.OrleansFloor"
shears="$work/shears-publish/shears"
# One line per command: wall seconds, then each step's time since the process started.
steps() { awk '/-times:/ {printf " %s=%s", $4, $2}'; }
timed() {
  local s e out
  s=$(date +%s.%N); out=$("$@" 2>&1 >/dev/null); e=$(date +%s.%N)
  printf 'wall=%.3f%s\n' "$(echo "$e - $s" | bc)" "$(steps <<<"$out")"
}
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet && echo "" || echo " + working tree"); $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(date -u)"
# Warm-up (first starts after a publish read the binaries from disk; the first embedded run records its JIT profile).
export SHEARS_JIT_PROFILE_DIR="$work/jit-profiles"
"$floor" client "$gateway" 2>/dev/null; "$floor" silo 2>/dev/null
rm -rf "$work/pruned"; "$shears" run --model "$work/tiny" --out "$work/pruned" --sparsity 0.5 --scope global >/dev/null 2>&1
for i in $(seq "$runs"); do
  echo "run $i"
  echo "  orleans client:        $(timed "$floor" client "$gateway")"
  rm -rf "$work/pruned"
  echo "  shears --cluster:      $(SHEARS_TIMES=1 timed "$shears" run --model "$work/tiny" --out "$work/pruned" --sparsity 0.5 --scope global --cluster "127.0.0.1:$gateway")"
  rm -rf "$work/pruned"
  echo "  shears http:           $(SHEARS_TIMES=1 timed "$shears" run --model "$work/tiny" --out "$work/pruned" --sparsity 0.5 --scope global --cluster "http://127.0.0.1:$http")"
  echo "  orleans silo:          $(timed "$floor" silo)"
  rm -rf "$work/pruned"
  echo "  shears embedded:       $(SHEARS_TIMES=1 timed "$shears" run --model "$work/tiny" --out "$work/pruned" --sparsity 0.5 --scope global)"
  rm -rf "$work/pruned"
  echo "  embedded, no profile:  $(SHEARS_JIT_PROFILE_DIR=off SHEARS_TIMES=1 timed "$shears" run --model "$work/tiny" --out "$work/pruned" --sparsity 0.5 --scope global)"
done
rm -rf "$work/pruned"
