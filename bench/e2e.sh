#!/usr/bin/env bash
# End to end: pruning checkpoints of 1.27 GB, 3.8 GB and optionally 7.0 GB (bf16, LLaMA layout) to 50% global magnitude on the
# embedded silo, against copying them with cp, page cache warm; then both again followed by sync (to disk).
# Also the fixed cost: the same command on a 10 MB checkpoint; and the client against a silo already running on this
# machine (`--cluster 127.0.0.1:PORT`, what users of a cluster run), which leaves out the silo's start and stop, and the
# same through the silo's HTTP port (`--cluster http://127.0.0.1:PORT`, no Orleans client). Embedded runs use the
# multi-core JIT profile the previous embedded run recorded (in WORKDIR/jit-profiles).
# The client and silo are the published, ReadyToRun-compiled binaries (what deploy/ ships).
# Usage: [SETTLE=SECONDS] bench/e2e.sh [WORKDIR] [RUNS] [MODELS]   (default /tmp/shears-e2e, 3 runs, "tiny model large": ~11 GB free in
# WORKDIR and ~14 GB of memory; "xl" adds the 7.0 GB checkpoint: ~26 GB free and ~20 GB of memory)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/shears-e2e}
runs=${2:-3}
models=${3:-tiny model large}
mkdir -p "$work"
dotnet publish -c Release client/Shears.Client -o "$work/shears-publish" -nologo -v quiet >/dev/null
dotnet publish -c Release silo/Shears.Silo -o "$work/silo-publish" -nologo -v quiet >/dev/null
dotnet build -c Release bench/Shears.Bench -nologo -v quiet >/dev/null
shears="$work/shears-publish/shears"
# A free port for each of the silo's listeners.
port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
silo_port=$(port); gateway=$(port); http=$(port)
"$work/silo-publish/shears-silo" --silo-port "$silo_port" --gateway-port "$gateway" --http-port "$http" --http-bind 127.0.0.1 --http-runs > "$work/silo.log" 2>&1 &
export SHEARS_JIT_PROFILE_DIR="$work/jit-profiles"
silo_pid=$!
trap 'kill "$silo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
bench() { dotnet bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll "$@"; }
[ -f "$work/model/config.json" ] || bench checkpoint "$work/model"
[ -f "$work/large/config.json" ] || bench checkpoint "$work/large" --hidden 4096 --layers 8 --intermediate 11008
[ -f "$work/tiny/config.json" ] || bench checkpoint "$work/tiny" --hidden 256 --layers 2 --intermediate 688 --vocab 4000
case " $models " in *" xl "*) [ -f "$work/xl/config.json" ] || bench checkpoint "$work/xl" --hidden 4096 --layers 16 --intermediate 11008;; esac

time_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v a="$s" -v b="$e" "BEGIN{printf \"%.2f\", b-a}"; }
ratio() { awk -v p="$1" -v c="$2" "BEGIN{printf \"%.1f\", p/c}"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
phases() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(' '.join(f'{k} {v:.2f}s' for k,v in r['phaseSeconds'].items()), '| report', round(r['seconds'],2), 's')" "$1/shears-report.json"; }

echo "settle: ${SETTLE:-5} s after each cleanup; commit $(git rev-parse --short HEAD)$(git diff --quiet && echo "" || echo " + working tree")"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u)"
for m in $models; do
  src="$work/$m"
  echo "== $m: $(du -sb "$src" | cut -f1) bytes"
  cat "$src"/* > /dev/null   # warm the page cache for both
  copy() { cp -r "$src" "$work/copy"; }
  prune() { "$shears" run --model "$src" --out "$work/pruned" --sparsity 0.5 --scope global; }
  prune_running() { "$shears" run --model "$src" --out "$work/pruned" --sparsity 0.5 --scope global --cluster "127.0.0.1:$gateway"; }
  prune_http() { "$shears" run --model "$src" --out "$work/pruned" --sparsity 0.5 --scope global --cluster "http://127.0.0.1:$http"; }
  copy_synced() { copy; sync; }
  prune_synced() { prune; sync; }
  # Every timed command starts with no dirty pages (sync, untimed), so none pays for the writeback of another, and,
  # after SETTLE seconds (default 5), with the memory the last output held given back to the host: on a VM with
  # free page reporting (virtio-balloon), pages freed by the rm are reported within a second or two, and a command
  # that writes before that reuses them cheaply while a later one pays a host fault per page. With SETTLE=0, cp
  # (which writes at once) is favoured over shears (which writes after its start, load and rounds): a 3.76 GB cp took
  # 0.94-1.31 s right after the rm and 2.78-3.69 s three seconds later (results/2026-11-28-settle.txt).
  clean() { rm -rf "$work/copy" "$work/pruned"; sync; cat "$src"/* > /dev/null; sleep "${SETTLE:-5}"; }
  cs_all=(); ps_all=(); c_all=(); p_all=(); r_all=(); h_all=()
  for i in $(seq "$runs"); do
    clean; c=$(time_of copy)
    clean; p=$(time_of prune); ph=$(phases "$work/pruned")
    clean; cs=$(time_of copy_synced)
    clean; ps=$(time_of prune_synced)
    clean; r=$(time_of prune_running)
    clean; h=$(time_of prune_http)
    echo "run $i: page cache: cp ${c}s shears ${p}s ratio $(ratio "$p" "$c")  |  with sync: cp ${cs}s shears ${ps}s ratio $(ratio "$ps" "$cs")  |  running silo: ${r}s ratio $(ratio "$r" "$c")  |  over HTTP: ${h}s ratio $(ratio "$h" "$c")  |  shears phases: $ph"
    c_all+=("$c"); p_all+=("$p"); cs_all+=("$cs"); ps_all+=("$ps"); r_all+=("$r"); h_all+=("$h")
  done
  mc=$(median "${c_all[@]}"); mp=$(median "${p_all[@]}"); mcs=$(median "${cs_all[@]}"); mps=$(median "${ps_all[@]}"); mr=$(median "${r_all[@]}"); mh=$(median "${h_all[@]}")
  echo "median of $runs: page cache: cp ${mc}s shears ${mp}s ratio $(ratio "$mp" "$mc")  |  with sync: cp ${mcs}s shears ${mps}s ratio $(ratio "$mps" "$mcs")  |  running silo: ${mr}s ratio $(ratio "$mr" "$mc")  |  over HTTP: ${mh}s ratio $(ratio "$mh" "$mc")"
done
rm -rf "$work/copy" "$work/pruned"
