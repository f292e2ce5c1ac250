#!/bin/bash
# --remove --quantize W4A16 on a bf16 checkpoint of more than 1 GB: two builds of the CLI alternately, the same command,
# from the same page-cache state. Prints per run the wall seconds and the bytes the process wrote (getrusage's block
# outputs × 512, as GNU time reports them: every page it dirtied, whether or not it reached the disk).
#   bench/remove-quantize.sh WORKDIR OLD_CLI_DIR NEW_CLI_DIR [RUNS]   (a CLI dir: a copy of client/Shears.Client/bin/Release/net10.0/linux-x64)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: bench/remove-quantize.sh WORKDIR OLD_CLI_DIR NEW_CLI_DIR [RUNS]}
old=$(cd "${2:?}" && pwd); new=$(cd "${3:?}" && pwd); runs=${4:-3}
mkdir -p "$work" && work=$(cd "$work" && pwd)
echo "# $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
if [ ! -f "$work/model/config.json" ]; then
  dotnet build "$root/bench/Shears.Bench" -c Release -nologo -v quiet >/dev/null
  dotnet "$root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll" checkpoint "$work/model" --hidden 2048 --layers 10 --intermediate 5504
fi
du -sb "$work/model" | awk '{printf "# input %.2f GB\n", $1 / 1e9}'
args=(--sparsity 0.25 --pattern neurons --scope layer --remove --quantize W4A16)
echo "# shears run --model WORKDIR/model --out WORKDIR/out ${args[*]}"
cat "$work/model"/*.safetensors > /dev/null   # the input in the page cache for every run
for i in $(seq "$runs"); do
  for build in old new; do
    cli=$old; [ $build = new ] && cli=$new
    rm -rf "$work/out"; sync; sleep 2
    /usr/bin/time -f "%e %O" -o "$work/time.txt" "$cli/shears" run --model "$work/model" --out "$work/out" "${args[@]}" > "$work/log-$build.txt" 2>&1
    read -r seconds blocks < "$work/time.txt"
    printf "%s run %d: %6.2f s  wrote %6.0f MB  (output %6.0f MB)  %s\n" $build "$i" "$seconds" "$(echo "$blocks * 512 / 1000000" | bc -l)" \
      "$(du -sb "$work/out" | awk '{print $1 / 1e6}')" "$(grep -o 'phases:.*\|export [0-9.]* s' "$work/log-$build.txt" | head -1)"
  done
done
