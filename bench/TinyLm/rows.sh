# Shared by the scripts that prune bench/TinyLm's trained model row by row (bench/Compression/tinylm.sh,
# bench/TinyLm/owl.sh); sourced after they set root, work, results and model, from the repository root.
# Builds the CLI and copies it privately (a rebuild of client/ by other work cannot swap DLLs under a run), writes
# results/machine.txt, clears results/commands.txt, and defines `row NAME ARGS...`: one `shears run` on the embedded
# silo with --eval on the held-out tokens, its command appended to commands.txt, its log and report kept in results/.
dotnet build client/Shears.Client -c Release -nologo -v quiet
rm -rf "$work/shears" && cp -r client/Shears.Client/bin/Release/net10.0/linux-x64 "$work/shears"
shears="$work/shears/shears"
eval_tokens="$root/bench/TinyLm/data/tokens/eval.json"
calibration="$root/bench/TinyLm/data/tokens/calibration.json"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- grains client || echo ' (with uncommitted changes)')"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; dotnet $(dotnet --version)"
} > "$results/machine.txt"
: > "$results/commands.txt"

row() { # NAME ARGS...
  local name=$1; shift
  local out="$work/runs/$name"
  local args=(run --model "$model" --out "$out" --force --eval "$eval_tokens" "$@")
  echo "shears ${args[*]}" | sed "s#$root/##g; s#$work/##g" >> "$results/commands.txt"
  echo "== $name"
  if ! OMP_NUM_THREADS=1 "$shears" "${args[@]}" > "$results/$name.log" 2>&1; then
    echo "$(basename "$0"): row $name failed; see $results/$name.log" >&2
    tail -n 5 "$results/$name.log" >&2
    return 1
  fi
  cp "$out/shears-report.json" "$results/$name.report.json"
}
